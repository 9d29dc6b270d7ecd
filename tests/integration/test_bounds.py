"""Bounded connections and output (issue 12, B4 and B6), through the real
server: max_conns at the descriptor limit, the idle, read and write
timeouts, and a client that never reads a large response."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fcgi_lua.config import load
from fcgi_lua.server import Server
from tests.helpers.net import free_port
from tests.helpers.server import serve_in_thread, stop_in_thread
from tests.integration.fcgi_client import begin, get, params, read_until_ended

SCRIPTS = {
    "hello.lua": "ngx.say('hello')",
    # 20 MB in 1 MB prints, never flushed by the script
    "big.lua": "local s = string.rep('x', 1048576) for i = 1, 20 do ngx.print(s) end",
    "chunks.lua": "for i = 1, 32 do ngx.print(string.rep('y', 65536)) end",
}


def write_scripts(root: Path) -> None:
    root.mkdir(exist_ok=True)
    for name, text in SCRIPTS.items():
        (root / name).write_text(text)


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- in-process --------------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Starts a server with the given options; returns its port."""
    running: list[tuple[Server, asyncio.AbstractEventLoop]] = []

    def start(**options: object) -> int:
        root = tmp_path / "www"
        write_scripts(root)
        port = free_port()
        config = load(None, {"root": str(root), "listen": [f"127.0.0.1:{port}"], **options})
        server, loop, _ = serve_in_thread(config)
        running.append((server, loop))
        return port

    yield start
    for server, loop in running:
        stop_in_thread(server, loop)


def closed_by_server(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (reading and
    dropping what it sends)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_idle_and_stalled_connections_are_closed(
    serve: Callable[..., int], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    port = serve(idle_timeout=1.0, read_timeout=1.0)
    address = ("127.0.0.1", port)
    with (
        socket.create_connection(address) as idle,
        socket.create_connection(address) as stalled,
        socket.create_connection(address) as busy,
    ):
        begin(stalled, 1)
        stalled.sendall(b"\x01\x04\x00\x01\x00\x40\x00\x00" + b"\x00" * 10)  # half a PARAMS record
        # a kept-alive connection that carries a request every 0.4 s stays
        started = time.monotonic()
        request_id = 1
        while time.monotonic() - started < 2.5:
            begin(busy, request_id)
            script = str(tmp_path / "www" / "hello.lua")
            params(busy, request_id, {"REQUEST_METHOD": "GET", "SCRIPT_FILENAME": script})
            busy.settimeout(5)
            out, _ = read_until_ended(busy, {request_id})
            assert out[request_id].endswith(b"hello\n")
            request_id += 1
            time.sleep(0.4)
        assert closed_by_server(idle, 3.0), "idle connection not closed (idle_timeout)"
        assert closed_by_server(stalled, 3.0), "stalled request not closed (read_timeout)"
        assert not closed_by_server(busy, 0.2), "a busy connection was closed"
    assert any("read_timeout" in r.getMessage() for r in caplog.records)


def test_output_limit_where_print_cannot_wait(
    serve: Callable[..., int], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    port = serve(output_buffer_limit="1m", write_buffer_high="64k")
    root = tmp_path / "www"
    (root / "sorted.lua").write_text(
        # print inside table.sort's comparator: a C call, no yield possible
        "local t = {}\nfor i = 1, 64 do t[i] = i end\n"
        "table.sort(t, function(a, b) ngx.print(string.rep('z', 65536)) return a < b end)\n"
    )
    caplog.set_level(logging.ERROR, logger="fcgi_lua")
    response = get(("127.0.0.1", port), str(root / "sorted.lua"))
    assert response.startswith(b"Status: 500"), response[:200]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("sorted.lua" in m and "output_buffer_limit (1048576 bytes)" in m for m in errors)
    # where print can wait the same output goes out in pieces: no limit hit
    response = get(("127.0.0.1", port), str(root / "chunks.lua"))
    assert response.endswith(b"y" * 65536)
    assert response.split(b"\r\n\r\n", 1)[1] == b"y" * 32 * 65536


# -- a real process, with its own descriptor limit ---------------------------


class Process:
    def __init__(self, tmp_path: Path, nofile: int | None, options: str = "") -> None:
        root = tmp_path / "www"
        write_scripts(root)
        self.root = root
        self.port = free_port()
        self.log_path = tmp_path / "fcgi-lua.log"
        config = tmp_path / "fcgi-lua.toml"
        config.write_text(
            f'root = "{root}"\nlisten = ["127.0.0.1:{self.port}"]\nworkers = 1\n{options}\n'
        )

        def limit() -> None:
            if nofile is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fcgi_lua", "serve", "--config", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=limit,  # only setrlimit: no lock a thread could hold
            )
        wait_for(lambda: "serving" in self.log(), 30, "fcgi-lua to serve")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def descriptors(self) -> int:
        return len(list(Path(f"/proc/{self.process.pid}/fd").iterdir()))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_descriptor_exhaustion_idle_connections_make_room(tmp_path: Path) -> None:
    """The attack: ulimit -n 1024 and 1,100 idle connections; before, 50 of
    50 valid requests failed (libuv accepts and closes them silently)."""
    server = Process(tmp_path, nofile=1024)
    idle: list[socket.socket] = []
    try:
        address = ("127.0.0.1", server.port)
        for _ in range(1100):
            idle.append(socket.create_connection(address))
        wait_for(lambda: server.descriptors() > 700, 10, "the idle connections")
        time.sleep(0.5)
        failures = 0
        for _ in range(50):
            try:
                response = get(address, str(server.root / "hello.lua"), timeout=5)
            except (OSError, EOFError):
                failures += 1
                continue
            if not response.endswith(b"hello\n"):
                failures += 1
        log = server.log()
        assert failures == 0, f"{failures} of 50 requests failed; log:\n{log[-3000:]}"
        assert "max_conns lowered to 768 to fit RLIMIT_NOFILE (1024)" in log
        assert "(max_conns=768): closing the one idle longest" in log
        assert server.descriptors() < 1024 - 32
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_client_that_never_reads_keeps_rss_bounded(tmp_path: Path) -> None:
    """The attack: 10 clients that never read a large response pinned
    about 120 MB of worker RSS each; write_timeout closes them."""
    server = Process(tmp_path, nofile=None, options="write_timeout = 3.0")
    stuck: list[socket.socket] = []
    try:
        address = ("127.0.0.1", server.port)
        assert get(address, str(server.root / "hello.lua")).endswith(b"hello\n")
        big = get(address, str(server.root / "big.lua"))
        assert big.split(b"\r\n\r\n", 1)[1] == b"x" * 20 * 1048576
        baseline = server.rss_kb()
        for _ in range(10):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(address)
            begin(sock, 1, keep_conn=False)
            params(
                sock, 1, {"REQUEST_METHOD": "GET", "SCRIPT_FILENAME": str(server.root / "big.lua")}
            )
            stuck.append(sock)
        time.sleep(1.5)
        # other requests are served meanwhile
        assert get(address, str(server.root / "hello.lua")).endswith(b"hello\n")
        grown_mb = (server.rss_kb() - baseline) / 1024
        assert grown_mb < 60, f"worker RSS grew by {grown_mb:.0f} MB for 10 stuck clients"
        wait_for(lambda: server.log().count("(write_timeout)") >= 10, 10, "write_timeout")
        for sock in stuck:
            assert closed_by_server(sock, 5.0)
        assert get(address, str(server.root / "hello.lua")).endswith(b"hello\n")
    finally:
        for sock in stuck:
            sock.close()
        server.stop()
