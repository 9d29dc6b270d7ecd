"""FastCGI record framing and name-value pairs: encode and decode.

Pure functions and one small incremental decoder; no connection state
(that is ``_connection.py``'s job) and no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from ._errors import RemoteProtocolError
from .constants import (
    FCGI_END_REQUEST,
    FCGI_STDERR,
    FCGI_STDOUT,
    FCGI_UNKNOWN_TYPE,
    MAX_SEND_CONTENT_LENGTH,
    NULL_REQUEST_ID,
    VERSION_1,
)

# version, type, request id, content length, padding length, reserved
HEADER: Final = struct.Struct("!BBHHBx")
# role, flags, reserved
BEGIN_REQUEST_BODY: Final = struct.Struct("!HB5x")
# Whole records we send often, packed in one call each.
END_REQUEST_RECORD: Final = struct.Struct("!BBHHBxLB3x")
STDOUT_EOF_AND_END_REQUEST: Final = struct.Struct("!BBHHBxBBHHBxLB3x")
UNKNOWN_TYPE_RECORD: Final = struct.Struct("!BBHHBxB7x")
_LENGTH4: Final = struct.Struct("!L")
_LENGTHS_11: Final = struct.Struct("!BB")
_LENGTHS_14: Final = struct.Struct("!BL")
_LENGTHS_41: Final = struct.Struct("!LB")
_LENGTHS_44: Final = struct.Struct("!LL")
_LONG_LENGTH_FLAG: Final = 0x80000000
_MAX_PAIR_LENGTH: Final = 0x7FFFFFFF


def encode_record(record_type: int, request_id: int, content: bytes = b"") -> bytes:
    """One record, zero padding; ``content`` must fit in one record."""
    return HEADER.pack(VERSION_1, record_type, request_id, len(content), 0) + content


def encode_stream(record_type: int, request_id: int, data: bytes | bytearray | memoryview) -> bytes:
    """``data`` as stream records of at most MAX_SEND_CONTENT_LENGTH bytes each.

    Empty ``data`` gives the one empty record that ends a stream.
    """
    size = len(data)
    if size <= MAX_SEND_CONTENT_LENGTH:
        return HEADER.pack(VERSION_1, record_type, request_id, size, 0) + data
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    full_header = HEADER.pack(VERSION_1, record_type, request_id, MAX_SEND_CONTENT_LENGTH, 0)
    for start in range(0, size, MAX_SEND_CONTENT_LENGTH):
        chunk = view[start : start + MAX_SEND_CONTENT_LENGTH]
        if len(chunk) == MAX_SEND_CONTENT_LENGTH:
            parts.append(full_header)
        else:
            parts.append(HEADER.pack(VERSION_1, record_type, request_id, len(chunk), 0))
        parts.append(chunk)
    return b"".join(parts)


def encode_end_request(
    request_id: int,
    app_status: int,
    protocol_status: int,
    *,
    close_stdout: bool,
    close_stderr: bool,
) -> bytes:
    """END_REQUEST, preceded by the empty STDOUT and STDERR records asked for."""
    if close_stdout and not close_stderr:  # the usual case: one pack
        return STDOUT_EOF_AND_END_REQUEST.pack(
            VERSION_1, FCGI_STDOUT, request_id, 0, 0,
            VERSION_1, FCGI_END_REQUEST, request_id, 8, 0,
            app_status, protocol_status,
        )  # fmt: skip
    end = END_REQUEST_RECORD.pack(
        VERSION_1, FCGI_END_REQUEST, request_id, 8, 0, app_status, protocol_status
    )
    if close_stderr:
        end = HEADER.pack(VERSION_1, FCGI_STDERR, request_id, 0, 0) + end
    if close_stdout:
        end = HEADER.pack(VERSION_1, FCGI_STDOUT, request_id, 0, 0) + end
    return end


def encode_unknown_type(record_type: int) -> bytes:
    return UNKNOWN_TYPE_RECORD.pack(
        VERSION_1, FCGI_UNKNOWN_TYPE, NULL_REQUEST_ID, 8, 0, record_type
    )


def encode_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Name-value pairs, with 1-byte lengths below 128 and 4-byte ones above."""
    parts: list[bytes] = []
    for name, value in pairs:
        name_length = len(name)
        value_length = len(value)
        if name_length > _MAX_PAIR_LENGTH or value_length > _MAX_PAIR_LENGTH:
            raise ValueError("a name or value longer than 2**31-1 bytes cannot be encoded")
        if name_length < 128:
            if value_length < 128:
                parts.append(_LENGTHS_11.pack(name_length, value_length))
            else:
                parts.append(_LENGTHS_14.pack(name_length, value_length | _LONG_LENGTH_FLAG))
        elif value_length < 128:
            parts.append(_LENGTHS_41.pack(name_length | _LONG_LENGTH_FLAG, value_length))
        else:
            parts.append(
                _LENGTHS_44.pack(name_length | _LONG_LENGTH_FLAG, value_length | _LONG_LENGTH_FLAG)
            )
        parts.append(name)
        parts.append(value)
    return b"".join(parts)


class PairDecoder:
    """Decodes one stream of name-value pairs fed record by record.

    Pairs may span records.  Limits are checked as soon as a pair's lengths
    are known, before its bytes arrive, so a peer cannot make us buffer
    more than ``max_bytes`` (+ 8 bytes of lengths) per stream.
    """

    __slots__ = (
        "_budget",
        "_count",
        "_max_bytes",
        "_max_count",
        "_need",
        "_tail",
        "pairs",
        "request_id",
    )

    def __init__(self, request_id: int, max_bytes: int, max_count: int) -> None:
        self.request_id = request_id
        self.pairs: list[tuple[bytes, bytes]] = []
        self._max_bytes = max_bytes
        self._budget = max_bytes  # bytes of names + values still allowed
        self._max_count = max_count
        self._count = 0
        # Bytes of an incomplete pair, kept across records, and how many
        # the tail needs before parsing it again can make progress: we
        # re-parse only then, so a big value spanning many records is
        # copied once, not once per record.
        self._tail = bytearray()
        self._need = 0

    def feed(self, data: bytes, start: int, end: int) -> None:
        """Decode ``data[start:end]``, one record's content."""
        tail = self._tail
        if tail:
            tail += memoryview(data)[start:end]
            if len(tail) < self._need:
                return
            data = bytes(tail)
            start = 0
            end = len(data)
            tail.clear()
        position = self._parse(data, start, end)
        if position < end:
            tail += memoryview(data)[position:end]

    def finish(self) -> tuple[tuple[bytes, bytes], ...]:
        """The end of the stream: all pairs, or an error if one is cut."""
        if self._tail:
            raise RemoteProtocolError(
                f"name-value pair stream ended in the middle of a pair "
                f"({len(self._tail)} bytes left over)",
                request_id=self.request_id,
            )
        return tuple(self.pairs)

    def _parse(self, data: bytes, position: int, end: int) -> int:
        """Append every complete pair of ``data[position:end]``; return
        where the first incomplete one starts (and set ``self._need``)."""
        pairs = self.pairs
        while position < end:
            available = end - position
            # Fast path: both lengths fit in one byte.
            name_length = data[position]
            if name_length < 128:
                if available < 2:
                    self._need = 2
                    return position
                value_length = data[position + 1]
                lengths_size = 2 if value_length < 128 else 5
            else:
                if available < 5:
                    self._need = 5
                    return position
                name_length = _LENGTH4.unpack_from(data, position)[0] & _MAX_PAIR_LENGTH
                value_length = data[position + 4]
                lengths_size = 5 if value_length < 128 else 8
            if value_length >= 128:
                if available < lengths_size:
                    self._need = lengths_size
                    return position
                value_length = (
                    _LENGTH4.unpack_from(data, position + lengths_size - 4)[0] & _MAX_PAIR_LENGTH
                )
            pair_size = name_length + value_length
            if pair_size > self._budget:
                raise RemoteProtocolError(
                    f"name-value pairs exceed the limit of {self._max_bytes} bytes "
                    f"(names + values)",
                    request_id=self.request_id,
                    http_status=431,
                )
            if self._count >= self._max_count:
                raise RemoteProtocolError(
                    f"more than {self._max_count} name-value pairs",
                    request_id=self.request_id,
                    http_status=431,
                )
            name_start = position + lengths_size
            value_start = name_start + name_length
            pair_end = value_start + value_length
            if pair_end > end:
                self._need = lengths_size + pair_size
                return position
            pairs.append((data[name_start:value_start], data[value_start:pair_end]))
            self._count += 1
            self._budget -= pair_size
            position = pair_end
        return position
