"""Test-side FastCGI peer for the codec tests (no tests here).

The encoder below is written independently of fcgi_lua.fastcgi._records,
so the tests do not check the codec against itself.  ``check_*`` run one
case the three ways h11's tests do: whole, byte by byte, and followed by
trailing data (a complete extra record whose event must come out last).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Sequence

import pytest

from fcgi_lua.fastcgi import (
    NEED_DATA,
    ConnectionClosed,
    GetValues,
    Limits,
    ReceivedEvent,
    RemoteProtocolError,
)
from fcgi_lua.fastcgi import Connection as Connection

BEGIN, ABORT, END, PARAMS, STDIN, STDOUT, STDERR, DATA = range(1, 9)
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11


def record(
    record_type: int, request_id: int, content: bytes = b"", padding: int = 0, version: int = 1
) -> bytes:
    header = bytes(
        [
            version,
            record_type,
            request_id >> 8,
            request_id & 0xFF,
            len(content) >> 8,
            len(content) & 0xFF,
            padding,
            0,
        ]
    )
    return header + content + b"\xaa" * padding  # non-zero padding must be ignored


def begin(request_id: int = 1, role: int = 1, flags: int = 1) -> bytes:
    return record(BEGIN, request_id, struct.pack(">HB5s", role, flags, b"\0" * 5))


def encode_length(length: int) -> bytes:
    return bytes([length]) if length < 128 else struct.pack(">I", length | (1 << 31))


def pairs(items: Iterable[tuple[bytes, bytes]], *, long_lengths: bool = False) -> bytes:
    """Name-value pairs; ``long_lengths`` forces 4-byte lengths everywhere
    (legal for any length, and what some web servers send)."""
    out = bytearray()
    for name, value in items:
        for length in (len(name), len(value)):
            if long_lengths:
                out += struct.pack(">I", length | (1 << 31))
            else:
                out += encode_length(length)
        out += name + value
    return bytes(out)


def stream(
    record_type: int, request_id: int, data: bytes, size: int = 65535, *, aligned: bool = False
) -> bytes:
    """``data`` as records of ``size`` content bytes, then the empty record;
    ``aligned`` pads each record to a multiple of 8 bytes, as Monkey and the
    spec's recommendation do."""
    out = b"".join(
        record(record_type, request_id, chunk, -len(chunk) % 8 if aligned else 0)
        for chunk in (data[i : i + size] for i in range(0, len(data), size))
    )
    return out + record(record_type, request_id)


def parse_records(data: bytes) -> list[tuple[int, int, bytes, int]]:
    """Split our output into (type, request id, content, padding length)."""
    out = []
    position = 0
    while position < len(data):
        version, record_type, request_id, length, padding = struct.unpack_from(
            ">BBHHB", data, position
        )
        assert version == 1
        start = position + 8
        assert start + length + padding <= len(data), "record cut short"
        out.append((record_type, request_id, data[start : start + length], padding))
        position = start + length + padding
    return out


def drain(conn: Connection) -> list[ReceivedEvent]:
    events: list[ReceivedEvent] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


def feed(
    conn: Connection, chunks: Iterable[bytes], events: list[ReceivedEvent], *, eof: bool
) -> None:
    """Feed chunks, appending the events; an error propagates with ``events``
    holding everything emitted before it."""

    def pump() -> None:
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return

    for chunk in chunks:
        conn.receive_data(chunk)
        pump()
    if eof:
        conn.receive_data(b"")
        pump()


TRAILER = record(GET_VALUES, 0, pairs([(b"TRAILER", b"")]))
TRAILER_EVENT = GetValues((b"TRAILER",))

MODES = ("whole", "bytewise", "trailing")


def split(data: bytes, mode: str) -> list[bytes]:
    if mode == "whole":
        return [data]
    if mode == "bytewise":
        return [data[i : i + 1] for i in range(len(data))]
    assert mode == "trailing"
    return [data + TRAILER]


def check_events(
    data: bytes,
    expected: Sequence[ReceivedEvent],
    *,
    limits: Limits | None = None,
) -> None:
    """``data`` gives exactly ``expected`` (then ConnectionClosed at EOF), all three ways."""
    for mode in MODES:
        conn = Connection(limits=limits)
        events: list[ReceivedEvent] = []
        feed(conn, split(data, mode), events, eof=True)
        want = [*expected, TRAILER_EVENT] if mode == "trailing" else list(expected)
        assert events == [*want, ConnectionClosed()], mode


def check_error(
    data: bytes,
    match: str,
    *,
    before: Sequence[ReceivedEvent] = (),
    limits: Limits | None = None,
    eof: bool = False,
    modes: Sequence[str] = MODES,
) -> RemoteProtocolError:
    """``data`` gives ``before`` then RemoteProtocolError matching ``match``,
    all three ways; the error is sticky.  Returns the last error raised."""
    error: RemoteProtocolError | None = None
    for mode in modes:
        conn = Connection(limits=limits)
        events: list[ReceivedEvent] = []
        with pytest.raises(RemoteProtocolError, match=match) as info:
            feed(conn, split(data, mode), events, eof=eof)
        assert events == list(before), mode
        with pytest.raises(RemoteProtocolError, match=re.escape(str(info.value))):
            conn.next_event()
        error = info.value
    assert error is not None
    return error


class ExplodingLimits(Limits):
    """Limits whose params size cannot be read once armed: stands for a
    bug inside the codec, half-way through a record."""

    __slots__ = ()
    armed = False

    def __getattribute__(self, name: str) -> object:
        if name == "max_params_bytes" and type(self).armed:
            raise RuntimeError("boom")
        return super().__getattribute__(name)
