"""A blocking FastCGI client for tests, built on flup6's record class (an
independent codec: our own never encodes what these tests send)."""

from __future__ import annotations

import socket
import struct

from flup.server.fcgi_base import (
    FCGI_BEGIN_REQUEST,
    FCGI_END_REQUEST,
    FCGI_KEEP_CONN,
    FCGI_PARAMS,
    FCGI_RESPONDER,
    FCGI_STDIN,
    FCGI_STDOUT,
    Record,
    encode_pair,
)


def send(sock: socket.socket, rtype: int, request_id: int, data: bytes = b"") -> None:
    record = Record(rtype, request_id)
    record.contentData = data
    record.contentLength = len(data)
    record.write(sock)


def begin(
    sock: socket.socket, request_id: int, role: int = FCGI_RESPONDER, keep_conn: bool = True
) -> None:
    flags = FCGI_KEEP_CONN if keep_conn else 0
    send(sock, FCGI_BEGIN_REQUEST, request_id, struct.pack("!HB5x", role, flags))


def params(sock: socket.socket, request_id: int, pairs: dict[str, str]) -> None:
    data = b"".join(encode_pair(k.encode(), v.encode()) for k, v in pairs.items())
    send(sock, FCGI_PARAMS, request_id, data)
    send(sock, FCGI_PARAMS, request_id)
    send(sock, FCGI_STDIN, request_id)


def read_until_ended(sock: socket.socket, ids: set[int]) -> tuple[dict[int, bytes], list[int]]:
    """Collect STDOUT per request until every id got END_REQUEST."""
    out: dict[int, bytes] = {i: b"" for i in ids}
    order: list[int] = []
    while ids:
        record = Record()
        record.read(sock)
        if record.type == FCGI_STDOUT:
            out[record.requestId] += record.contentData
        elif record.type == FCGI_END_REQUEST:
            ids.discard(record.requestId)
            order.append(record.requestId)
    return out, order


def get(address: tuple[str, int], script: str, query: str = "", timeout: float = 10) -> bytes:
    """One GET on a fresh connection (no keep-conn); the whole CGI response."""
    with socket.create_connection(address, timeout=timeout) as sock:
        begin(sock, 1, keep_conn=False)
        params(sock, 1, {"REQUEST_METHOD": "GET", "SCRIPT_FILENAME": script, "QUERY_STRING": query})
        out, _ = read_until_ended(sock, {1})
    return out[1]
