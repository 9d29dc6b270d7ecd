"""fcgi_lua.fastcgi: a sans-IO FastCGI 1.0 codec (application side).

Bytes in, events out; events in, bytes out.  Standard library only: this
package must never import asyncio, sockets or anything else that does I/O.

    conn = Connection(limits=Limits())
    conn.receive_data(data)           # b"" when the peer closed
    while (event := conn.next_event()) is not NEED_DATA:
        ...
    transport.write(conn.send(Stdout(request_id, body)))
"""

from fcgi_lua.compiled import load_sources

# mypyc may have compiled the codec (setup.py); FCGI_LUA_PURE_PYTHON=1 or a
# stale build loads the source instead (fcgi_lua/compiled.py).
load_sources(__name__, __path__[0])

from ._connection import Connection
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    NEED_DATA,
    AbortRequest,
    BeginRequest,
    ConnectionClosed,
    EndRequest,
    GetValues,
    GetValuesResult,
    NeedData,
    Params,
    ReceivedEvent,
    SentEvent,
    Stderr,
    Stdin,
    StdinEnd,
    Stdout,
    UnknownRecordType,
    UnknownType,
)
from ._limits import DEFAULT_MAX_PARAMS_BYTES, DEFAULT_MAX_PARAMS_COUNT, Limits
from .constants import (
    AUTHORIZER,
    CANT_MPX_CONN,
    FILTER,
    MAX_CONNS,
    MAX_REQS,
    MPXS_CONNS,
    OVERLOADED,
    REQUEST_COMPLETE,
    RESPONDER,
    UNKNOWN_ROLE,
)

__all__ = [
    "AUTHORIZER",
    "CANT_MPX_CONN",
    "DEFAULT_MAX_PARAMS_BYTES",
    "DEFAULT_MAX_PARAMS_COUNT",
    "FILTER",
    "MAX_CONNS",
    "MAX_REQS",
    "MPXS_CONNS",
    "NEED_DATA",
    "OVERLOADED",
    "REQUEST_COMPLETE",
    "RESPONDER",
    "UNKNOWN_ROLE",
    "AbortRequest",
    "BeginRequest",
    "Connection",
    "ConnectionClosed",
    "EndRequest",
    "GetValues",
    "GetValuesResult",
    "Limits",
    "LocalProtocolError",
    "NeedData",
    "Params",
    "ProtocolError",
    "ReceivedEvent",
    "RemoteProtocolError",
    "SentEvent",
    "Stderr",
    "Stdin",
    "StdinEnd",
    "Stdout",
    "UnknownRecordType",
    "UnknownType",
]
