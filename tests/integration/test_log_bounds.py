"""The error log stays bounded under abuse, in a real ``fcgi-lua serve``:
a 10 MB error message makes one line of at most log_max_line bytes, and a
flood of malformed connections writes log_repeat_limit WARNINGs per worker
and window, then counts the rest."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from tests.helpers.workers import running_stack, wait_for

SCRIPTS = {
    "pid.lua": "ngx.say(ngx.worker.pid())",
    "huge_error.lua": 'error(string.rep("x", 10 * 1024 * 1024))',
    "huge_log.lua": 'ngx.log(ngx.ERR, string.rep("y", 10 * 1024 * 1024)) ngx.say("logged")',
}

# A record header whose version byte is 2: a RemoteProtocolError at once.
MALFORMED = b"\x02\x01\x00\x01\x00\x08\x00\x00" + bytes(8)


def test_a_10_mb_error_logs_at_most_log_max_line(tmp_path: Path) -> None:
    with running_stack(tmp_path, SCRIPTS, "") as stack:  # log_max_line: 4k
        before = stack.log_path.stat().st_size
        assert stack.get("huge_error.lua").startswith(b"Status: 500")
        assert stack.get("huge_log.lua").endswith(b"logged\n")
        assert stack.get("pid.lua").startswith(b"Status: 200")
        with open(stack.log_path, "rb") as log_file:
            log_file.seek(before)
            written = log_file.read()
    lines = written.splitlines()
    # the error and the ngx.log line, cut; maybe a slow-resume WARNING
    assert max(len(line) for line in lines) <= 4096
    assert sum(b"[truncated: " in line for line in lines) == 2
    assert len(written) < 4 * 4097, written[:2000]


def test_malformed_connections_write_a_bounded_number_of_warnings(tmp_path: Path) -> None:
    connections = 300
    with running_stack(tmp_path, SCRIPTS, "", stop_signal=signal.SIGTERM) as stack:
        for _ in range(connections):
            with socket.create_connection(stack.address, timeout=5) as sock:
                sock.sendall(MALFORMED)
                sock.recv(100)  # closed by the worker
        warned = stack.log().count("FastCGI protocol error from")
        assert stack.get("pid.lua").startswith(b"Status: 200")  # and it serves on
        stack.process.send_signal(signal.SIGTERM)
        stack.process.wait(20)
        wait_for(lambda: "master" in stack.log() and "stopped" in stack.log(), 5, "the stop")
    log = stack.log().splitlines()
    written = [line for line in log if "fcgi_lua.server: FastCGI protocol error" in line]
    summaries = [line for line in log if "similar messages suppressed" in line]
    # at most 10 per worker (2 workers) within the 10 s window
    assert warned <= 20 + len(summaries), warned
    assert len(written) <= 20
    suppressed = sum(int(line.split("... ")[1].split()[0]) for line in summaries)
    assert len(written) + suppressed == connections
