"""Cosockets end to end: unmodified lua-resty-redis (Debian's lua-nginx-redis)
against a real redis-server on loopback, through real nginx, on fcgi-lua
and on OpenResty (the oracle) with the same scripts and the same expected
bodies; and the failures a peer can cause (refused, silent, closing
midway), after each of which the worker carries on."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .e2e_clients import http_request
from .e2e_peers import ORACLE_SOCKET_ERRORS, redis_command
from .e2e_stack import Logs, Stack, free_port

pytestmark = pytest.mark.e2e

ROUTES = ["unix", "tcp", "oracle"]
RUNS = [1, 2]


def _read(path: Path) -> str:
    return path.read_text("utf-8", "replace") if path.exists() else ""


def get(e2e: Stack, route: str, path: str) -> str:
    resp = http_request(e2e.urls[route], path)
    assert resp.status == 200, resp.text
    return resp.text


def assert_worker_serves(e2e: Stack) -> None:
    assert http_request(e2e.urls["unix"], "/hello.lua").status == 200


# -- lua-resty-redis against redis-server ---------------------------------------------


BASIC = """\
set: OK
get: an animal
missing is null: true
incr: 1
incr: 2
incr a string: false, ERR value is not an integer or out of range
hmset: OK hget: 1
pipeline 1: OK
pipeline 2: Marry
pipeline 3: 2
pipeline 4: b,a
pipeline 5: error: ERR value is not an integer or out of range
close: 1
close again: nilclosed
"""


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("route", ROUTES)
def test_redis_commands(e2e: Stack, logs: Logs, redis_port: int, route: str, run: int) -> None:
    body = get(e2e, route, f"/redis_basic.lua?port={redis_port}&key=basic-{route}-{run}")
    assert body == BASIC


PUBSUB = """\
subscribe: subscribe {ch} 1
publish: 1
publish: 1
reply: message {ch} hello
reply: message {ch} world
nothing more: nil timeout
keepalive while subscribed: subscribed state
unsubscribe: unsubscribe {ch} 0
keepalive: 1
keepalive: 1
"""


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("route", ROUTES)
def test_redis_pubsub(e2e: Stack, logs: Logs, redis_port: int, route: str, run: int) -> None:
    logs.allow("nginx", ORACLE_SOCKET_ERRORS)
    channel = f"news-{route}-{run}"
    body = get(e2e, route, f"/redis_pubsub.lua?port={redis_port}&channel={channel}")
    assert body == PUBSUB.format(ch=channel)


@pytest.mark.parametrize("route", ROUTES)
def test_redis_keepalive_reuse(e2e: Stack, logs: Logs, redis_port: int, route: str) -> None:
    path = f"/redis_keepalive.lua?port={redis_port}&pool=ka-{route}"
    rest = "ping: PONG\nkeepalive: 1\nafter keepalive: closed\n"
    assert get(e2e, route, path) == "reused: 0\n" + rest
    assert get(e2e, route, path) == "reused: 1\n" + rest
    assert get(e2e, route, path) == "reused: 2\n" + rest


def test_redis_incr_keepalive(e2e: Stack, logs: Logs, redis_port: int) -> None:
    # the benchmark's script: one pooled connection serves many requests
    first = int(get(e2e, "unix", f"/redis_incr.lua?port={redis_port}"))
    for i in range(1, 20):
        assert int(get(e2e, "tcp", f"/redis_incr.lua?port={redis_port}")) == first + i


# -- failures ----------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_connection_refused(e2e: Stack, logs: Logs, route: str) -> None:
    logs.allow("nginx", ORACLE_SOCKET_ERRORS)
    body = get(e2e, route, f"/redis_failures.lua?case=refused&port={free_port()}")
    assert body == "connect: connection refused\n"
    assert_worker_serves(e2e)


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A server that accepts connections (the kernel does) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("route", ROUTES)
def test_server_never_answers(e2e: Stack, logs: Logs, silent_port: int, route: str) -> None:
    logs.allow("nginx", ORACLE_SOCKET_ERRORS)
    started = time.monotonic()
    body = get(e2e, route, f"/redis_failures.lua?case=timeout&port={silent_port}")
    assert body == (
        "get: nil timeout\nsend: 22\nline: nil timeout []\nclose: 1\nclose again: closed\n"
    )
    assert time.monotonic() - started < 2  # two 100 ms timeouts, not 60 s
    assert_worker_serves(e2e)


@pytest.fixture(scope="module")
def midway_port() -> Iterator[int]:
    """A server that reads a command, answers half a bulk reply, and closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while not data.endswith(b"key\r\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                conn.sendall(b"$10\r\nabc")
                conn.shutdown(socket.SHUT_WR)
                conn.recv(4096)  # until the client closes too: no RST
            except OSError:
                return

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.parametrize("route", ROUTES)
def test_server_closes_midway(e2e: Stack, logs: Logs, midway_port: int, route: str) -> None:
    logs.allow("nginx", ORACLE_SOCKET_ERRORS)
    body = get(e2e, route, f"/redis_failures.lua?case=midway&port={midway_port}")
    assert body == (
        "get: nil closed\nsend: 22\nline: $10 nil [nil]\ndata: nil closed [abc]\n"
        "receive again: closed\nclose: 1\nclose again: closed\n"
    )
    assert_worker_serves(e2e)


# -- a socket's lifetime is its request's ----------------------------------------------------


@pytest.mark.parametrize("route", ["unix", "oracle"])
def test_socket_of_another_request(e2e: Stack, logs: Logs, redis_port: int, route: str) -> None:
    holder = threading.Thread(
        target=get, args=(e2e, route, f"/socket_other_request.lua?action=hold&port={redis_port}")
    )
    holder.start()
    time.sleep(0.2)
    body = get(e2e, route, "/socket_other_request.lua?action=use")
    holder.join()
    assert body.startswith("use: false ")
    assert body.rstrip().endswith("bad request")


def _client_names(port: int) -> str:
    return redis_command(port, b"CLIENT LIST").decode("utf-8", "replace")


@pytest.mark.parametrize("route", ["unix", "oracle"])
def test_socket_left_open_is_closed(e2e: Stack, logs: Logs, redis_port: int, route: str) -> None:
    name = f"left-{route}"
    body = get(e2e, route, f"/socket_left_open.lua?port={redis_port}&name={name}")
    assert body == "setname: +OK\n"
    deadline = time.monotonic() + 3
    while f"name={name} " in _client_names(redis_port):
        assert time.monotonic() < deadline, "the connection outlived its request"
        time.sleep(0.05)


def test_aborted_request_closes_its_sockets(e2e: Stack, logs: Logs, redis_port: int) -> None:
    logs.allow("fcgi-lua", r"abort")
    name = "aborted"
    with socket.create_connection(("127.0.0.1", int(e2e.urls["unix"].rsplit(":", 1)[1]))) as c:
        c.sendall(
            f"GET /socket_left_open.lua?port={redis_port}&name={name}&sleep=30 HTTP/1.1\r\n"
            "Host: x\r\n\r\n".encode()
        )
        c.settimeout(5)
        assert b"setname: +OK" in c.recv(65536)
        assert f"name={name} " in _client_names(redis_port)
    deadline = time.monotonic() + 5
    while f"name={name} " in _client_names(redis_port):
        assert time.monotonic() < deadline, "the aborted request's connection stayed open"
        time.sleep(0.05)
    assert_worker_serves(e2e)
