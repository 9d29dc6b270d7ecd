"""Limits through the real server: runaway and memory-hungry scripts next
to normal traffic (normal requests keep succeeding), the request timeout,
overload (503s, no hang) and allowed_clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fcgi_lua.config import load
from fcgi_lua.server import Server
from tests.helpers.net import free_port
from tests.helpers.server import serve_in_thread, stop_in_thread
from tests.integration.fcgi_client import get

SCRIPTS = {
    "ok.lua": "ngx.sleep(0.01) ngx.say('ok')",
    "spin.lua": "while true do end",
    "hog.lua": "local t = {} while true do t[#t + 1] = ('x'):rep(1000) .. #t end",
    "slow.lua": "ngx.sleep(30) ngx.say('late')",
    "wait.lua": "ngx.sleep(0.5) ngx.say('waited')",
}


def start(tmp_path: Path, **options: object) -> tuple[Server, asyncio.AbstractEventLoop, int]:
    root = tmp_path / "www"
    root.mkdir(exist_ok=True)
    for name, text in SCRIPTS.items():
        (root / name).write_text(text)
    port = free_port()
    config = load(None, {"root": str(root), "listen": [f"127.0.0.1:{port}"], **options})
    server, loop, _ = serve_in_thread(config)
    return server, loop, port


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    server, loop, port = start(
        tmp_path,  # on the default runtime, which meets every limit
        max_instructions=20_000_000,
        request_timeout=1.0,
        lua_memory_limit="32m",
        max_reqs=8,
    )
    try:
        yield tmp_path / "www", port
    finally:
        stop_in_thread(server, loop)


def status(response: bytes) -> int:
    head = response.split(b"\r\n", 1)[0]
    return int(head.split()[1]) if head.startswith(b"Status:") else 200


def test_runaway_and_hog_next_to_normal_traffic(limited: tuple[Path, int]) -> None:
    root, port = limited
    address = ("127.0.0.1", port)
    names = ["ok.lua", "spin.lua", "ok.lua", "hog.lua", "ok.lua"] * 4
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda n: (n, get(address, str(root / n))), names))
    for name, response in results:
        if name == "ok.lua":
            assert response.endswith(b"ok\n"), response
        else:
            assert status(response) == 500, (name, response[:80])
    assert get(address, str(root / "ok.lua")).endswith(b"ok\n")


def test_timeout_504_while_others_are_served(limited: tuple[Path, int]) -> None:
    root, port = limited
    address = ("127.0.0.1", port)
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(get, address, str(root / "slow.lua"))
        time.sleep(0.1)
        assert get(address, str(root / "ok.lua")).endswith(b"ok\n")
        started = time.monotonic()
        assert status(slow.result()) == 504
        assert time.monotonic() - started < 2


def test_overload_gets_503_without_hanging(limited: tuple[Path, int]) -> None:
    root, port = limited
    address = ("127.0.0.1", port)
    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: get(address, str(root / "wait.lua")), range(20)))
    statuses = sorted(status(r) for r in responses)
    assert 503 in statuses and 200 in statuses
    assert statuses.count(200) <= 9  # max_reqs = 8 in flight (the check is ">")
    assert time.monotonic() - started < 3


def test_allowed_clients_closes_others(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server, loop, port = start(tmp_path, allowed_clients=["10.0.0.0/8"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"\x01\x01\x00\x01\x00\x08\x00\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x00")
            # closed at accept: EOF, or a reset if our bytes were unread
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""
    finally:
        stop_in_thread(server, loop)
    server, loop, port = start(tmp_path, allowed_clients=["127.0.0.0/8"])
    try:
        response = get(("127.0.0.1", port), str(tmp_path / "www" / "ok.lua"))
        assert response.endswith(b"ok\n")
    finally:
        stop_in_thread(server, loop)
