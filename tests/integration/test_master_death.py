"""A master killed with SIGKILL: its workers notice, stop accepting,
finish the requests they hold within shutdown_timeout and exit; the
socket file it leaves is replaced by the next fcgi-lua, but a socket
somebody still listens on never is."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fcgi_lua.listeners as listeners_module
from fcgi_lua.listeners import bind_unix
from tests.helpers.workers import SCRIPTS, running_stack, wait_for
from tests.integration.fcgi_client import begin, params, read_until_ended


def unix_get(path: str, script: str, timeout: float = 10) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        begin(sock, 1, keep_conn=False)
        params(sock, 1, {"SCRIPT_FILENAME": script, "REQUEST_METHOD": "GET"})
        out, _ = read_until_ended(sock, {1})
    return out[1]


def children(pid: int) -> set[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return {int(child) for child in out.split()}


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def serving(root: Path, sock_path: str, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``fcgi-lua serve`` with 2 workers on a Unix socket; killed at the end."""
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "fcgi_lua", "serve", "--workers", "2", "--root", str(root),
             "--listen", f"unix:{sock_path}", "-o", "shutdown_timeout=5"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield process
    finally:
        for pid in [*children(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()


def test_workers_finish_their_requests_when_the_master_is_killed(tmp_path: Path) -> None:
    config = "shutdown_timeout = 5.0\n"
    with running_stack(tmp_path, SCRIPTS, config) as stack:
        workers = stack.workers()
        answers: list[bytes | BaseException] = []

        def in_flight() -> None:
            try:
                answers.append(stack.get("slower.lua", timeout=20))  # a 2 s request
            except (OSError, EOFError) as exc:
                answers.append(exc)

        threads = [threading.Thread(target=in_flight) for _ in range(10)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # all ten are running
        killed = time.monotonic()
        stack.process.kill()
        stack.process.wait()
        # within a heartbeat the workers stop accepting
        wait_for(lambda: refused(stack.address), 3, "new connections refused")
        for thread in threads:
            thread.join(20)
        wait_for(lambda: not any(running(pid) for pid in workers), 10, "the workers to exit")
        lived = time.monotonic() - killed
    assert [a for a in answers if not (isinstance(a, bytes) and a.startswith(b"Status: 200"))] == []
    assert len(answers) == 10
    assert lived < 5.0  # shutdown_timeout bounds the wait
    assert stack.log().count("is gone: worker") == 2


def refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_socket_somebody_listens_on_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listeners_module, "STALE_SOCKET_WAIT", 0.3)
    path = str(tmp_path / "live.sock")
    live = bind_unix(path, 0o600)
    live.listen(8)
    try:
        with pytest.raises(OSError) as raised:
            bind_unix(path, 0o600)
        assert raised.value.errno == errno.EADDRINUSE
        assert "another process is listening" in str(raised.value)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)  # still its address
        accepted, _ = live.accept()
        accepted.close()
    finally:
        live.close()
    # once nobody listens, it is stale and replaced
    bind_unix(path, 0o600).close()


def test_a_restart_after_sigkill_replaces_the_stale_socket_only(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "pid.lua").write_text("ngx.say(ngx.worker.pid())")
    script = str(root / "pid.lua")
    sock_path = str(tmp_path / "fcgi.sock")
    log_path = tmp_path / "fcgi-lua.log"

    def serves() -> bool:
        with contextlib.suppress(OSError, EOFError):
            return unix_get(sock_path, script, timeout=2).startswith(b"Status: 200")
        return False

    with serving(root, sock_path, log_path) as first:
        wait_for(serves, 20, "the first fcgi-lua")
        workers = children(first.pid)
        # a second one on the same path: refused, the first keeps its socket
        second = subprocess.run(
            [sys.executable, "-m", "fcgi_lua", "serve", "--workers", "2", "--root", str(root),
             "--listen", f"unix:{sock_path}"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert second.returncode == 1
        assert "another process is listening on it" in second.stderr
        assert serves()
        first.kill()  # the master only
        first.wait()
        wait_for(lambda: not any(running(pid) for pid in workers), 10, "the workers to exit")
    assert os.path.exists(sock_path)  # stale: nobody listens
    with pytest.raises(ConnectionRefusedError):
        unix_get(sock_path, script)
    with serving(root, sock_path, log_path):
        wait_for(serves, 20, "the restarted fcgi-lua")


def test_a_stop_signal_while_the_workers_start_is_not_lost(tmp_path: Path) -> None:
    # A worker runs the master's signal handlers until its loop installs
    # its own: a SIGTERM in between (here: during a slow init_script) was
    # queued into the child's copy of the master and lost, and the master
    # waited for that worker forever.
    root = tmp_path / "www"
    root.mkdir()
    init = tmp_path / "init.lua"
    init.write_text("local t = os.clock() while os.clock() - t < 2 do end")
    log_path = tmp_path / "fcgi-lua.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "fcgi_lua", "serve", "--workers", "2", "--root", str(root),
             "--listen", f"unix:{tmp_path / 's.sock'}", "-o", f"init_script={init}"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: log_path.read_text().count("started worker") == 2, 20, "two workers")
        workers = children(process.pid)
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        wait_for(lambda: not any(running(pid) for pid in workers), 5, "the workers to exit")
    finally:
        for pid in [*children(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0
