"""Interop with flup6, a FastCGI codec we did not write.

flup6's ``flup.client.fcgi_app`` still carries Python 2 code (its
``encode_pair`` concatenates ``chr()`` with bytes and fails on Python 3),
so we use the same ``Record`` / ``encode_pair`` / ``decode_pair`` from
``flup.server.fcgi_base``, which flup6 did port.  flup's ``Record.write``
pads every record to a multiple of 8, which exercises our padding path.
"""

from __future__ import annotations

import struct

from flup.server import fcgi_base as flup

from fcgi_lua.fastcgi import (
    RESPONDER,
    UNKNOWN_ROLE,
    BeginRequest,
    Connection,
    EndRequest,
    GetValues,
    GetValuesResult,
    Limits,
    Params,
    Stderr,
    Stdin,
    StdinEnd,
    Stdout,
    UnknownType,
)
from tests.helpers.fastcgi import check_events, drain


class FakeSocket:
    """Just enough of a socket for flup's Record.read / Record.write."""

    def __init__(self, data: bytes = b"") -> None:
        self.incoming = bytearray(data)
        self.written = bytearray()

    def send(self, data: bytes) -> int:
        self.written += data
        return len(data)

    def recv(self, size: int) -> bytes:
        chunk = bytes(self.incoming[:size])
        del self.incoming[:size]
        return chunk

    def fileno(self) -> int:
        return -1


def flup_record(record_type: int, request_id: int, content: bytes = b"") -> bytes:
    rec = flup.Record(record_type, request_id)
    rec.contentData = content
    rec.contentLength = len(content)
    sock = FakeSocket()
    rec.write(sock)
    return bytes(sock.written)


def flup_read_all(data: bytes) -> list[tuple[int, int, bytes, int]]:
    sock = FakeSocket(data)
    records = []
    while sock.incoming:
        rec = flup.Record()
        rec.read(sock)
        assert rec.version == flup.FCGI_VERSION_1
        records.append((rec.type, rec.requestId, rec.contentData, rec.paddingLength))
    return records


PARAMS = [
    (b"SCRIPT_FILENAME", b"/srv/www/index.lua"),
    (b"N" * 127, b"v" * 127),
    (b"N" * 128, b"v" * 128),
    (b"HTTP_COOKIE", b"c" * 70000),  # more than one record holds
    (b"HTTP_COOKIE", b"again"),
]


def test_request_built_by_flup() -> None:
    encoded = b"".join(flup.encode_pair(name, value) for name, value in PARAMS)
    body = b"x" * 100_000
    data = flup_record(
        flup.FCGI_BEGIN_REQUEST,
        1,
        struct.pack(flup.FCGI_BeginRequestBody, flup.FCGI_RESPONDER, flup.FCGI_KEEP_CONN),
    )
    for i in range(0, len(encoded), 65535):
        data += flup_record(flup.FCGI_PARAMS, 1, encoded[i : i + 65535])
    data += flup_record(flup.FCGI_PARAMS, 1)
    data += flup_record(flup.FCGI_STDIN, 1, body[:65535])
    data += flup_record(flup.FCGI_STDIN, 1, body[65535:])
    data += flup_record(flup.FCGI_STDIN, 1)
    data += flup_record(flup.FCGI_DATA, 1)  # flup's client ends an empty DATA stream
    expected = [
        BeginRequest(1, RESPONDER, True),
        Params(1, tuple(PARAMS)),
        Stdin(1, body[:65535]),
        Stdin(1, body[65535:]),
        StdinEnd(1),
    ]
    check_events(data, expected, limits=Limits(max_params_bytes=100_000))


def test_get_values_built_by_flup() -> None:
    content = b"".join(
        flup.encode_pair(name, b"") for name in (b"FCGI_MAX_CONNS", b"FCGI_MPXS_CONNS")
    )
    data = flup_record(flup.FCGI_GET_VALUES, 0, content)
    check_events(data, [GetValues((b"FCGI_MAX_CONNS", b"FCGI_MPXS_CONNS"))])


def test_our_output_read_by_flup() -> None:
    conn = Connection()
    conn.receive_data(flup_record(flup.FCGI_BEGIN_REQUEST, 9, struct.pack("!HB5x", 1, 0)))
    drain(conn)
    body = bytes(range(256)) * 800  # 204800 bytes: four records
    out = (
        conn.send(Stdout(9, b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"))
        + conn.send(Stdout(9, body))
        + conn.send(Stderr(9, b"a warning"))
        + conn.send(EndRequest(9, 7))
    )
    records = flup_read_all(out)
    assert all(padding == 0 for *_, padding in records)
    assert all(request_id == 9 for _, request_id, _, _ in records)
    stdout = [content for t, _, content, _ in records if t == flup.FCGI_STDOUT]
    assert stdout[-1] == b""
    assert b"".join(stdout) == b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body
    stderr = [content for t, _, content, _ in records if t == flup.FCGI_STDERR]
    assert stderr == [b"a warning", b""]
    assert records[-1][0] == flup.FCGI_END_REQUEST
    assert struct.unpack(flup.FCGI_EndRequestBody, records[-1][2]) == (
        7,
        flup.FCGI_REQUEST_COMPLETE,
    )
    assert [t for t, *_ in records[-3:]] == [
        flup.FCGI_STDOUT, flup.FCGI_STDERR, flup.FCGI_END_REQUEST
    ]  # fmt: skip
    assert conn.should_close


def test_management_answers_read_by_flup() -> None:
    conn = Connection()
    values = ((b"FCGI_MAX_CONNS", b"1024"), (b"FCGI_MPXS_CONNS", b"1"), (b"N" * 200, b"v" * 300))
    [(record_type, request_id, content, _)] = flup_read_all(conn.send(GetValuesResult(values)))
    assert (record_type, request_id) == (flup.FCGI_GET_VALUES_RESULT, 0)
    decoded = []
    position = 0
    while position < len(content):
        position, pair = flup.decode_pair(content, position)
        decoded.append(pair)
    assert tuple(decoded) == values
    [(record_type, _, content, _)] = flup_read_all(conn.send(UnknownType(42)))
    assert record_type == flup.FCGI_UNKNOWN_TYPE
    assert struct.unpack(flup.FCGI_UnknownTypeBody, content) == (42,)


def test_rejected_role_read_by_flup() -> None:
    conn = Connection()
    conn.receive_data(flup_record(flup.FCGI_BEGIN_REQUEST, 2, struct.pack("!HB5x", 3, 1)))
    drain(conn)
    records = flup_read_all(conn.send(EndRequest(2, 0, UNKNOWN_ROLE)))
    assert [(t, c) for t, _, c, _ in records] == [
        (flup.FCGI_END_REQUEST, struct.pack(flup.FCGI_EndRequestBody, 0, flup.FCGI_UNKNOWN_ROLE)),
    ]
