"""Cosockets end to end with unmodified lua-resty-websocket's client
(Debian's lua-nginx-websocket) against a websocket echo server this module
runs on loopback (RFC 6455, written here: text, binary, ping/pong, 16- and
64-bit lengths, fragments, close), through real nginx, on fcgi-lua and on
OpenResty (the oracle) with the same scripts and expected bodies."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .e2e_clients import http_request
from .e2e_stack import Logs, Stack, free_port

pytestmark = pytest.mark.e2e

RESTY_WEBSOCKET = Path("/usr/share/lua/5.1/nginx/websocket/client.lua")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ROUTES = ["unix", "tcp", "oracle"]

# What OpenResty logs at error level for the failures ws_refused.lua handles.
ORACLE_SOCKET_ERRORS = r"connect\(\) failed \(111: Connection refused\)"


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def read_frame(conn: socket.socket) -> tuple[bool, int, bytes]:
    first, second = _recv_exactly(conn, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _recv_exactly(conn, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _recv_exactly(conn, 8))
    mask = _recv_exactly(conn, 4) if second & 0x80 else b"\0\0\0\0"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(_recv_exactly(conn, length)))
    return bool(first & 0x80), first & 0x0F, payload


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload  # server frames are not masked


def serve_websocket(conn: socket.socket) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = conn.recv(4096)
        if not chunk:
            return
        request += chunk
    lines = request.split(b"\r\n")
    if not lines[0].startswith(b"GET /echo "):
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        return
    headers = dict(
        (k.strip().lower(), v.strip()) for k, _, v in (line.partition(b":") for line in lines[1:])
    )
    accept = base64.b64encode(hashlib.sha1(headers[b"sec-websocket-key"] + GUID).digest())
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    while True:
        _fin, opcode, payload = read_frame(conn)
        if opcode == 0x8:  # close: answer with the same code and reason, then hang up
            conn.sendall(frame(0x8, payload))
            return
        if opcode == 0x9:
            conn.sendall(frame(0xA, payload))
        elif payload == b"fragment me":
            conn.sendall(frame(0x1, b"frag", fin=False) + frame(0x0, b"ments"))
        elif opcode in (0x1, 0x2):
            conn.sendall(frame(opcode, payload))


@pytest.fixture(scope="module")
def ws_port() -> Iterator[int]:
    if not RESTY_WEBSOCKET.exists():
        if os.environ.get("CI"):
            pytest.fail("lua-nginx-websocket missing: scripts/test installs it")
        pytest.skip("lua-nginx-websocket not installed")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn, contextlib.suppress(ConnectionError, OSError, struct.error, ValueError):
            serve_websocket(conn)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield port
    finally:
        stop.set()
        listener.close()


def get(e2e: Stack, route: str, path: str) -> str:
    resp = http_request(e2e.urls[route], path)
    assert resp.status == 200, resp.text
    return resp.text


ECHO = """\
send text: 11nil
hello text nil
send binary: 10nil
binary: 4 binary true
send ping: 19nil
are you there pong nil
send big: 70014nil
70000 bytes text nil
send medium: 308nil
300 bytes text nil
ask fragments: 17nil
frag text again
ments continuation nil
nil nil failed to receive the first 2 bytes: timeout
send close: 11nil
bye close 1000
close: 1
"""


@pytest.mark.parametrize("run", [1, 2])
@pytest.mark.parametrize("route", ROUTES)
def test_websocket_echo(e2e: Stack, logs: Logs, ws_port: int, route: str, run: int) -> None:
    logs.allow("nginx", r"lua tcp socket read timed out")
    body = get(e2e, route, f"/ws_echo.lua?port={ws_port}")
    assert body == ECHO


@pytest.mark.parametrize("route", ROUTES)
def test_websocket_keepalive_reuse(e2e: Stack, logs: Logs, ws_port: int, route: str) -> None:
    # send_text returns the frame's size: 6 bytes of header (masked, short)
    for reused in range(3):
        body = get(e2e, route, f"/ws_keepalive.lua?port={ws_port}&pool=ws-{route}")
        assert body == (
            f"reused: {reused}\nsend: {6 + len('ping ws-' + route)}nil\n"
            f"echo: ping ws-{route} text\nkeepalive: 1\n"
        )


@pytest.mark.parametrize("route", ROUTES)
def test_websocket_errors(e2e: Stack, logs: Logs, ws_port: int, route: str) -> None:
    logs.allow("nginx", ORACLE_SOCKET_ERRORS)
    body = get(e2e, route, f"/ws_refused.lua?port={free_port()}&http={ws_port}")
    assert body == (
        "refused: nilfailed to connect: connection refused\n"
        "bad uri: nilbad websocket uri\n"
        "not websocket: nil bad HTTP response status line: HTTP/1.0 400 Bad Request\r\n"
        "Content-Length: 0\n"
    )
