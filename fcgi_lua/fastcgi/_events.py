"""Events: what the codec reads from the web server, and what we send back.

Small frozen dataclasses with ``__slots__``; they carry data, never behaviour.
Request ids are the peer's 16-bit ids (1..65535).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from .constants import REQUEST_COMPLETE


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


# Returned by Connection.next_event() when no complete record is buffered.
# Test it with ``event is NEED_DATA``.
NEED_DATA: Final = _NeedData.NEED_DATA
NeedData: TypeAlias = Literal[_NeedData.NEED_DATA]


# ---- received (web server -> us) ------------------------------------------


@dataclass(frozen=True, slots=True)
class BeginRequest:
    """A BEGIN_REQUEST, whatever the role; answer roles we do not serve with
    ``EndRequest(request_id, 0, UNKNOWN_ROLE)``."""

    request_id: int
    role: int
    keep_conn: bool


@dataclass(frozen=True, slots=True)
class Params:
    """The whole PARAMS stream of a request, emitted once when it ends.

    Pairs are in arrival order, duplicates kept (Monkey repeats a duplicate
    HTTP header as separate HTTP_* params).
    """

    request_id: int
    params: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Stdin:
    """One non-empty STDIN record's content."""

    request_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StdinEnd:
    """The empty STDIN record: the request body is complete."""

    request_id: int


@dataclass(frozen=True, slots=True)
class AbortRequest:
    """The web server gave up on the request (its client went away).

    The request stays active until we send its EndRequest.
    """

    request_id: int


@dataclass(frozen=True, slots=True)
class GetValues:
    """A GET_VALUES management record: the names the web server asks about."""

    names: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class UnknownRecordType:
    """A record of a type we do not know; answer with ``UnknownType``."""

    record_type: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection at a record boundary."""


# ---- sent (us -> web server) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Stdout:
    """Response bytes; split into as many records as needed.

    ``Stdout(request_id, b"")`` closes the stream (EndRequest does it for
    you if you did not).  Any bytes-like ``data`` (a memoryview of a
    buffer: no copy before the record is built).
    """

    request_id: int
    data: bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Stderr:
    """Bytes for the web server's error log; same rules as ``Stdout``."""

    request_id: int
    data: bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class EndRequest:
    """Ends a request: closes its open output streams, then END_REQUEST."""

    request_id: int
    app_status: int = 0
    protocol_status: int = REQUEST_COMPLETE


@dataclass(frozen=True, slots=True)
class GetValuesResult:
    """The answer to ``GetValues``."""

    values: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class UnknownType:
    """The answer to ``UnknownRecordType``."""

    record_type: int


ReceivedEvent: TypeAlias = (
    BeginRequest
    | Params
    | Stdin
    | StdinEnd
    | AbortRequest
    | GetValues
    | UnknownRecordType
    | ConnectionClosed
)
SentEvent: TypeAlias = Stdout | Stderr | EndRequest | GetValuesResult | UnknownType
