"""The handles Lua holds for cosockets, and what every kind of socket shares.

This module owns the one registry of the package (``OBJECTS``: handle ->
object), the ``Owner`` that ties a request's handles to its lifetime, the
``PENDING`` answer of an operation that must wait, the default timeout and
the error text of a socket error.  Every other module of the package
registers its objects here; nothing else keeps a table of handles.

What it must never do: hand Lua a Python object (Lua gets integers only),
or know a kind of socket (it closes what an Owner holds through
``shutdown`` alone).
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fcgi_lua.lua.cosocket.tcp import TcpConnection
    from fcgi_lua.lua.cosocket.udp import UdpSocket

# lua-nginx-module's default (lua_socket_connect_timeout & co, 60s).
DEFAULT_TIMEOUT_MS = 60_000

# What a synchronous call returns when the operation must wait: socket.lua
# then yields the connection, and ``perform`` awaits it.
PENDING = True


class Timer(Protocol):
    """A loop timer or a deadline of the worker's heap (fcgi_lua.deadlines)."""

    def cancel(self) -> None: ...


# Lua never holds a Python object: it gets integer handles into this table
# (no userdata, no finalizers, nothing a script could keep alive), valid
# until the request that made them ends.  Pooled connections keep theirs.
OBJECTS: dict[int, Any] = {}
_HANDLES = itertools.count(1)


def register(obj: Any) -> int:
    handle = next(_HANDLES)
    OBJECTS[handle] = obj
    return handle


def errstr(exc: BaseException) -> str:
    """OpenResty's error text for a socket error: strerror, lower-cased."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        if exc.errno is not None:
            return os.strerror(exc.errno).lower()
        if exc.strerror:
            return exc.strerror.lower()
    return str(exc).lower() or "error"


def timeout_seconds(ms: Any) -> float:
    ms = int(ms or 0)
    return (ms if ms > 0 else DEFAULT_TIMEOUT_MS) / 1000.0


class Owner:
    """What one request holds (its sockets, and the handles Lua got for
    them); all of it is closed and forgotten when the request ends."""

    __slots__ = ("conns", "handle", "others")

    def __init__(self) -> None:
        self.conns: set[TcpConnection | UdpSocket] = set()
        self.others: list[int] = []  # handles of handshakes, receiveuntil states
        self.handle = register(self)

    def close_all(self) -> None:
        OBJECTS.pop(self.handle, None)
        conns, self.conns = self.conns, set()
        for conn in conns:
            conn.owner = None
            conn.shutdown()
            OBJECTS.pop(conn.handle, None)
        for handle in self.others:
            OBJECTS.pop(handle, None)
        self.others.clear()
