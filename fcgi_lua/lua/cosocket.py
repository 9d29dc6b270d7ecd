"""Cosockets: the TCP and UDP sockets behind ``ngx.socket.*``, on the worker's loop.

This module owns every connection a script opens, the worker's keepalive
pools and every socket timeout.  ``socket.lua`` holds the Lua side (the
socket objects, argument checks, OpenResty's return conventions); it calls
the synchronous methods of ``Cosockets`` directly (one crossing each) and
only yields to the driver when an operation must wait: it yields the
connection, ``perform`` awaits it, and the coroutine is resumed with the
result.  So a pooled connect, a send that fits the transport's buffer and a
receive whose bytes already arrived never yield at all.

What it must never do: block the loop (names resolve through the loop's
``getaddrinfo``), poll (waiting operations are completed from
``data_received``), or buffer without bound (reading pauses past a
high-water mark unless a script's own read asked for more).

Semantics and error strings follow lua-nginx-module 0.10.23
(``ngx_http_lua_socket_tcp.c``, ``ngx_http_lua_socket_udp.c``).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import itertools
import os
import random
import socket
import ssl
from collections.abc import Callable
from typing import Any, Protocol, cast

from fcgi_lua.deadlines import Deadlines

# lua-nginx-module's defaults (lua_socket_connect_timeout & co, 60s;
# lua_socket_pool_size 30).
DEFAULT_TIMEOUT_MS = 60_000
DEFAULT_KEEPALIVE_MS = 60_000
DEFAULT_POOL_SIZE = 30

# Past this many unread bytes, stop reading from the peer until the script
# consumes them (unless its pending read needs more).  64 KiB is four of
# nginx's default lua_socket_buffer_size-sized reads over a loopback burst.
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024

# lua-nginx-module reads UDP datagrams into an 8 KiB buffer at most.
UDP_MAX_DATAGRAM = 8192
# A streamed request body is taken in pieces of this size (a STDIN record).
READ_CHUNK = 64 * 1024
# Datagrams kept while nobody reads; later ones are dropped, as a full
# kernel socket buffer would.
UDP_QUEUE = 64

# Read modes, as socket.lua passes them.
LINE = 1  # "*l"
SIZE = 2  # a byte count
ALL = 3  # "*a"
UNTIL = 4  # a receiveuntil iterator

# What a synchronous call returns when the operation must wait: socket.lua
# then yields the connection, and ``perform`` awaits it.
PENDING = True


class _Timer(Protocol):
    """A loop timer or a deadline of the worker's heap (fcgi_lua.deadlines)."""

    def cancel(self) -> None: ...


# Lua never holds a Python object: it gets integer handles into this table
# (no userdata, no finalizers, nothing a script could keep alive), valid
# until the request that made them ends.  Pooled connections keep theirs.
_OBJECTS: dict[int, Any] = {}
_HANDLES = itertools.count(1)


def _register(obj: Any) -> int:
    handle = next(_HANDLES)
    _OBJECTS[handle] = obj
    return handle


def _errstr(exc: BaseException) -> str:
    """OpenResty's error text for a socket error: strerror, lower-cased."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        if exc.errno is not None:
            return os.strerror(exc.errno).lower()
        if exc.strerror:
            return exc.strerror.lower()
    return str(exc).lower() or "error"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve_error(host: str, exc: socket.gaierror) -> str:
    # The shape of nginx's resolver errors ("%s could not be resolved
    # (%d: %s)"), with its codes: 3 Host not found, 2 Server failure.
    if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
        return f"{host} could not be resolved (3: Host not found)"
    if exc.errno == socket.EAI_AGAIN:
        return f"{host} could not be resolved (110: Operation timed out)"
    return f"{host} could not be resolved (2: Server failure)"


def _seconds(ms: Any) -> float:
    ms = int(ms or 0)
    return (ms if ms > 0 else DEFAULT_TIMEOUT_MS) / 1000.0


async def _resolve(
    host: str, port: int, kind: socket.SocketKind
) -> tuple[socket.AddressFamily, Any] | str:
    """One address of ``host`` (picked at random, like nginx), or an error."""
    if _is_ip(host):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return family, (host, port)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=kind)
    except socket.gaierror as exc:
        return _resolve_error(host, exc)
    if not infos:
        return f"{host} could not be resolved (3: Host not found)"
    family, _, _, _, address = random.choice(infos)
    return family, address


class Owner:
    """What one request holds (its sockets, and the handles Lua got for
    them); all of it is closed and forgotten when the request ends."""

    __slots__ = ("conns", "handle", "others")

    def __init__(self) -> None:
        self.conns: set[TcpConnection | UdpSocket] = set()
        self.others: list[int] = []  # handles of handshakes, receiveuntil states
        self.handle = _register(self)

    def close_all(self) -> None:
        _OBJECTS.pop(self.handle, None)
        conns, self.conns = self.conns, set()
        for conn in conns:
            conn.owner = None
            conn.shutdown()
            _OBJECTS.pop(conn.handle, None)
        for handle in self.others:
            _OBJECTS.pop(handle, None)
        self.others.clear()


class Pool:
    """Idle connections to one peer (key "host:port", a unix path, or a
    custom ``pool`` name), most recently used first."""

    __slots__ = ("backlog", "connections", "idle", "key", "size", "waiters")

    def __init__(self, key: bytes, size: int, backlog: int) -> None:
        self.key = key
        self.size = size
        self.backlog = backlog  # -1: no limit on open connections
        self.connections = 0  # open connections counted against size + backlog
        self.idle: collections.deque[TcpConnection] = collections.deque()
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class UntilState:
    """A receiveuntil iterator's pattern and where it stands."""

    __slots__ = ("done", "handle", "inclusive", "pattern")

    def __init__(self, pattern: bytes, inclusive: bool) -> None:
        self.handle = _register(self)
        self.pattern = pattern
        self.inclusive = inclusive
        # sized mode saw the pattern: the next call returns nil, nil, nil
        self.done = False


def take(buf: bytearray, mode: int, size: int, until: UntilState | None) -> Any:
    """What a read in ``mode`` takes off the front of ``buf``, or PENDING
    until more bytes come (always for ALL, which only the end completes)."""
    if mode == LINE:
        i = buf.find(b"\n")
        if i >= 0:
            line = bytes(buf[:i])
            del buf[: i + 1]
            return line.replace(b"\r", b"") if b"\r" in line else line
    elif mode == SIZE:
        if len(buf) >= size:
            data = bytes(buf[:size])
            del buf[:size]
            return data
    elif mode == UNTIL:
        assert until is not None
        return _take_until(buf, until, size)
    return PENDING


def _take_until(buf: bytearray, until: UntilState, size: int) -> Any:
    pattern = until.pattern
    if size <= 0:
        i = buf.find(pattern)
        if i < 0:
            return PENDING
        data = bytes(buf[: i + len(pattern)] if until.inclusive else buf[:i])
        del buf[: i + len(pattern)]
        return data
    return _take_sized(buf, until, size)


def _next_state(pattern: bytes, state: int, c: int) -> int:
    """The matcher's state after byte ``c`` mismatched at ``state``: the
    longest prefix of ``pattern`` that ends the bytes seen (KMP)."""
    for k in range(state, 0, -1):
        if pattern[k - 1] == c and pattern[: k - 1] == pattern[state - k + 1 : state]:
            return k
    return 0


def _take_sized(buf: bytearray, until: UntilState, size: int) -> Any:
    """A receiveuntil iterator called with a size: the bytes known to precede
    the pattern, cut where lua-nginx-module's matcher cuts them (its
    ngx_http_lua_socket_read_until): a chunk ends once ``size`` bytes are
    known not to start the pattern, and bytes of a partial match that fails
    are known all at once, so a chunk may end a few bytes past ``size``."""
    pattern = until.pattern
    first = pattern[0]
    m = len(pattern)
    n = len(buf)
    pos = 0  # bytes scanned; the last `state` of them match the pattern's start
    state = 0
    rest = size  # bytes the chunk still wants
    cut = -1
    while cut < 0:
        if state == 0:
            j = buf.find(first, pos)
            if j < 0:
                j = n
            if j - pos >= rest:
                cut = pos + rest
                break
            rest -= j - pos
            pos = j
            if pos >= n:
                return PENDING
            state = 1
            pos += 1
        elif pos >= n:
            return PENDING
        elif buf[pos] == pattern[state]:
            state += 1
            pos += 1
        else:
            k = _next_state(pattern, state, buf[pos])
            if k == 0:  # the partial match is known, then this byte alone
                if rest <= state:
                    cut = pos
                rest -= state
                state = 0
                continue
            known = state + 1 - k
            if rest <= known:
                cut = pos + 1 - k
            rest -= known
            state = k
            pos += 1
        if state == m:  # the pattern: the end of the stream
            data = bytes(buf[:pos] if until.inclusive else buf[: pos - m])
            del buf[:pos]
            until.done = True
            return data
    data = bytes(buf[:cut])
    del buf[:cut]
    return data


def _partial(buf: bytearray, mode: int) -> bytes:
    """What a failed read hands over (its third value); empties ``buf``."""
    partial = bytes(buf)
    buf.clear()
    if mode == LINE and b"\r" in partial:
        partial = partial.replace(b"\r", b"")
    return partial


class _PendingRead:
    """One read at a time on a byte stream, as socket.lua's receive and
    receiveuntil want it: the read completes from ``buffer`` at once, or
    waits (with its timeout) until ``_progress`` or ``_read_timed_out``
    settles it.  ``TcpConnection`` and ``BodyReader`` (ngx.req.socket) are
    the two streams; each says how to ``attempt`` a read and which loop it
    runs on, and may act after a read or before a wait."""

    buffer: bytearray
    op: tuple[int, int, UntilState | None] | None
    waiter: asyncio.Future[Any] | None
    timer: _Timer | None
    failure: tuple[str, bytes | None]

    def attempt(self) -> Any:
        """Complete the current read op: the data, None (a failure, in
        self.failure) or PENDING."""
        raise NotImplementedError

    def _loop(self) -> asyncio.AbstractEventLoop:
        raise NotImplementedError

    def _call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        return self._loop().call_later(delay, callback)

    def _after_read(self) -> None:
        """A read completed or timed out (the buffer may have room again)."""

    def _before_wait(self) -> None:
        """A read found too little buffered and is about to wait."""

    def start_read(self, mode: int, size: int, until: UntilState | None, timeout_ms: Any) -> Any:
        self.op = (mode, size, until)
        result = self.attempt()
        if result is not PENDING:
            self.op = None
            self._after_read()
            return result
        self._before_wait()
        loop = self._loop()
        self.waiter = loop.create_future()
        self.timer = self._call_later(_seconds(timeout_ms), self._read_timed_out)
        return PENDING

    def _progress(self) -> None:
        result = self.attempt()
        if result is PENDING:
            return
        waiter = self.waiter
        self.op = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._after_read()
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    def _read_timed_out(self) -> None:
        self.timer = None
        if self.op is None:
            return
        mode = self.op[0]
        self.op = None
        # A read timeout is not fatal (lua-nginx-module >= 0.8.8): the
        # stream stays open; what arrived so far is handed over as partial.
        self.failure = ("timeout", _partial(self.buffer, mode))
        self._after_read()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_read(self) -> Any:
        waiter = self.waiter
        assert waiter is not None
        try:
            return await waiter
        finally:
            self.waiter = None
            self.op = None  # still set only if cancelled (request aborted)
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None


class TcpConnection(_PendingRead, asyncio.Protocol):
    """One stream connection (TCP or unix) and its receive buffer."""

    def __init__(self, manager: Cosockets, key: bytes) -> None:
        self.handle = _register(self)
        self.manager = manager
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: str | None = None  # what killed the connection
        self.read_closed = False  # a read failed: further reads say "closed"
        self.write_closed = False
        self.closed = False
        self.reused = 0
        self.owner: Owner | None = None
        self.pool: Pool | None = None  # counted in pool.connections
        self.idle_timer: _Timer | None = None  # set while pooled
        self.reading_paused = False
        self.writing_paused = False
        # the operation a script waits on
        self.connect_args: tuple[Any, ...] | None = None
        self.op: tuple[int, int, UntilState | None] | None = None
        self.waiter: asyncio.Future[Any] | None = None
        self.timer: _Timer | None = None
        self.failure: tuple[str, bytes | None] = ("closed", None)
        self.drain: _Drain | None = None  # a send waiting for the transport to drain
        self.handed: TcpConnection | None = None  # a backlog wait got this one

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.idle_timer is not None:
            # bytes on an idle pooled connection: the next user could not
            # tell them from its own reply
            self.manager.drop_idle(self)
            return
        self.buffer += data
        if self.op is not None:
            self._progress()
        if len(self.buffer) > HIGH_WATER and not self.reading_paused and self.op is None:
            self.reading_paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        if self.idle_timer is not None:
            self.manager.drop_idle(self)
            return False
        if self.op is not None:
            self._progress()
        return True  # keep the write half open, like nginx

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = _errstr(exc)
        self.eof = True
        self.closed = True
        self.transport = None
        if self.idle_timer is not None:
            self.manager.drop_idle(self)
        if self.op is not None:
            self._progress()
        if self.drain is not None:
            self.drain.finish(None, self.error or "closed")
        self._leave_pool_count()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drain is not None:
            self.drain.finish(self.drain.sent, None)

    # -- state -------------------------------------------------------------------

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def shutdown(self) -> None:
        """Close now, whatever the state (request end, close(), errors)."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport = self.transport
        if transport is not None:
            self.transport = None
            transport.close()
        self._leave_pool_count()

    def _leave_pool_count(self) -> None:
        pool = self.pool
        if pool is not None:
            self.pool = None
            pool.connections -= 1
            pool.wake_one()

    # -- reads -------------------------------------------------------------------

    def attempt(self) -> Any:
        """Complete the current read op from the buffer: the data, None (a
        failure, in self.failure) or PENDING."""
        assert self.op is not None
        mode, size, until = self.op
        buf = self.buffer
        result = take(buf, mode, size, until)
        if result is not PENDING:
            return result
        if mode == ALL and self.eof and self.error is None:
            data = bytes(buf)
            buf.clear()
            return data
        if self.eof or self.error is not None:
            self.failure = (self.error or "closed", _partial(buf, mode))
            self.read_closed = True
            return None
        return PENDING

    def _maybe_resume_reading(self) -> None:
        if self.reading_paused and len(self.buffer) < LOW_WATER and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def _loop(self) -> asyncio.AbstractEventLoop:
        return self.manager.loop()

    def _call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        # a read timeout on the worker's deadline heap: a heap push, not a
        # libuv timer armed and cancelled per read
        return self.manager.deadlines().call_later(delay, callback)

    def _after_read(self) -> None:
        self._maybe_resume_reading()

    def _before_wait(self) -> None:
        if self.reading_paused and self.transport is not None:
            # the script asked for more than is buffered: let it in
            self.reading_paused = False
            self.transport.resume_reading()

    # -- waiting (perform) -------------------------------------------------------------

    async def wait(self) -> Any:
        if self.connect_args is not None:
            args, self.connect_args = self.connect_args, None
            return await self.manager.open(self, *args)
        return await self._wait_read()


class BodyReader(_PendingRead):
    """``ngx.req.socket()``: the request body, read as it streams in, with
    the reads of a cosocket (socket.lua's receive and receiveuntil).

    Bytes are taken from the body (``fcgi_lua.body``) only as far as the
    pending read needs them; the body pauses the front server's connection
    while the script does not read.
    """

    __slots__ = ("body", "buffer", "failure", "handle", "op", "read_closed", "timer", "waiter")

    def __init__(self, body: Any) -> None:
        self.handle = _register(self)
        self.body = body
        self.buffer = bytearray()
        self.read_closed = False
        self.op: tuple[int, int, UntilState | None] | None = None
        self.waiter: asyncio.Future[Any] | None = None
        self.timer: _Timer | None = None
        self.failure: tuple[str, bytes | None] = ("closed", None)
        body.listener = self._on_body

    def attempt(self) -> Any:
        assert self.op is not None
        mode, size, until = self.op
        buf = self.buffer
        body = self.body
        while (result := take(buf, mode, size, until)) is PENDING:
            more = body.read(READ_CHUNK)
            if not more:
                break
            buf += more
        if result is not PENDING:
            return result
        if not body.ended:
            return PENDING
        if mode == ALL and body.error is None:
            data = bytes(buf)
            buf.clear()
            return data
        err = "closed" if body.error is None else body_error_text(body.error)
        self.failure = (err, _partial(buf, mode))
        self.read_closed = True
        return None

    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _on_body(self) -> None:
        # more of the body came (or its end): complete the pending read
        if self.op is not None:
            self._progress()

    async def wait(self) -> Any:
        return await self._wait_read()


def open_body_reader(owner_handle: int, body: Any) -> int | None:
    """ngx.req.socket(): a reader of ``body`` (already streaming), owned by
    the request (``owner_handle``); its handle, or None."""
    owner = _OBJECTS.get(owner_handle)
    if not isinstance(owner, Owner):
        return None
    reader = BodyReader(body)
    owner.others.append(reader.handle)
    return reader.handle


def body_error_text(error: BaseException) -> str:
    """The read error for a body that failed while streamed: "closed" when
    the front server cut it short, as for a client that went away."""
    if getattr(error, "status", 0) == 413:
        return "request body too large"
    return "closed"


class UdpSocket(asyncio.DatagramProtocol):
    """One connected datagram socket (UDP or unix)."""

    def __init__(self) -> None:
        self.handle = _register(self)
        self.transport: asyncio.DatagramTransport | None = None
        self.queue: collections.deque[bytes] = collections.deque()
        self.error: str | None = None
        self.closed = False
        self.owner: Owner | None = None
        self.size = UDP_MAX_DATAGRAM
        self.waiter: asyncio.Future[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.failure: tuple[str, bytes | None] = ("closed", None)
        self.peer: tuple[Any, ...] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            self._cancel_timer()
            waiter.set_result(data[: self.size])
        elif len(self.queue) < UDP_QUEUE:
            self.queue.append(data)

    def error_received(self, exc: Exception) -> None:
        # e.g. ECONNREFUSED from an ICMP port unreachable
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            self._cancel_timer()
            self.failure = (_errstr(exc), None)
            waiter.set_result(None)
        else:
            self.error = _errstr(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            self._cancel_timer()
            self.failure = (_errstr(exc) if exc else "closed", None)
            waiter.set_result(None)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def shutdown(self) -> None:
        self.closed = True
        self._cancel_timer()
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()

    def _timed_out(self) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            self.failure = ("timeout", None)
            waiter.set_result(None)

    async def wait(self) -> Any:
        if self.peer is not None:
            peer, self.peer = self.peer, None
            return await _udp_open(self, *peer)
        waiter = self.waiter
        assert waiter is not None
        try:
            return await waiter
        finally:
            self.waiter = None
            self._cancel_timer()


async def _udp_open(udp: UdpSocket, host: str, port: int | None) -> Any:
    loop = asyncio.get_running_loop()
    if port is None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address: Any = host
    else:
        resolved = await _resolve(host, port, socket.SOCK_DGRAM)
        if isinstance(resolved, str):
            udp.failure = (resolved, None)
            return None
        family, address = resolved
        sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if port is None:
            sock.bind("")  # Linux autobind, so the peer can answer
        sock.connect(address)
        await loop.create_datagram_endpoint(lambda: udp, sock=sock)
    except OSError as exc:
        sock.close()
        udp.failure = (_errstr(exc), None)
        return None
    if udp.closed:  # the request ended meanwhile
        udp.shutdown()
        return None
    return 1


class _Drain:
    """A send waiting for the peer to read (the transport paused writing)."""

    __slots__ = ("conn", "failure", "future", "handle", "sent", "timer")

    def __init__(self, conn: TcpConnection, sent: int, timeout: float) -> None:
        self.handle = _register(self)
        self.conn = conn
        self.sent = sent
        self.failure: tuple[str, bytes | None] = ("closed", None)
        loop = conn.manager.loop()
        self.future: asyncio.Future[Any] = loop.create_future()
        self.timer = loop.call_later(timeout, self._timed_out)

    def finish(self, result: Any, error: str | None) -> None:
        if self.conn.drain is self:
            self.conn.drain = None
        self.timer.cancel()
        if error is not None:
            self.failure = (error, None)
        if not self.future.done():
            self.future.set_result(result)

    def _timed_out(self) -> None:
        # a send timeout is fatal (the stream is cut mid-request)
        self.conn.write_closed = True
        self.finish(None, "timeout")

    async def wait(self) -> Any:
        try:
            return await self.future
        finally:
            self.finish(None, None)  # cancelled: forget it (no-op once done)


async def perform(request: Any, sink: Any, handle: Any) -> Any:
    """The driver's "cosocket" command: await what ``handle``'s object waits for."""
    obj = _OBJECTS.get(handle)
    if not isinstance(obj, TcpConnection | UdpSocket | _Handshake | _Drain | BodyReader):
        return None  # gone (its request ended): failure() says "closed"
    return await obj.wait()


def _tls_context(verify: bool) -> ssl.SSLContext:
    if verify:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Handshake:
    """A pending sslhandshake on a connection (awaited by ``perform``)."""

    __slots__ = ("conn", "failure", "handle", "server_name", "timeout", "verify")

    def __init__(self, conn: TcpConnection, server_name: str | None, verify: bool, timeout: float):
        self.handle = _register(self)
        self.conn = conn
        self.server_name = server_name
        self.verify = verify
        self.timeout = timeout
        self.failure: tuple[str, bytes | None] = ("handshake failed", None)

    async def wait(self) -> Any:
        conn = self.conn
        transport = conn.transport
        if transport is None or not conn.usable():
            self.failure = ("closed", None)
            return None
        loop = self.conn.manager.loop()
        context = self.conn.manager.tls_context(self.verify)
        try:
            new = await asyncio.wait_for(
                loop.start_tls(transport, conn, context, server_hostname=self.server_name or None),
                self.timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            # OpenResty: "<X509 verify code>: <message>", and its own
            # wording for a name mismatch
            if exc.verify_code == 62:
                self.failure = ("certificate host mismatch", None)
            else:
                self.failure = (f"{exc.verify_code}: {exc.verify_message}", None)
        except TimeoutError:
            self.failure = ("timeout", None)
        except (ssl.SSLError, OSError, ConnectionError):
            self.failure = ("handshake failed", None)
        else:
            if new is None:
                self.failure = ("handshake failed", None)
            else:
                conn.transport = new
                return True
        conn.shutdown()
        return None


class Cosockets:
    """The worker's cosockets: the functions socket.lua calls, and the pools."""

    def __init__(self) -> None:
        self.pools: dict[bytes, Pool] = {}
        self._tls: dict[bool, ssl.SSLContext] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: Deadlines | None = None

    def deadlines(self) -> Deadlines:
        """The heap of read and keepalive timeouts, on the worker's loop."""
        heap = self._deadlines
        if heap is None or heap.loop() is not self.loop():
            heap = self._deadlines = Deadlines(self.loop())
        return heap

    def loop(self) -> asyncio.AbstractEventLoop:
        """The worker's loop, looked up once: asyncio.get_running_loop() is
        a getpid() syscall on Python 3.11 (two per redis INCR, measured)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def tls_context(self, verify: bool) -> ssl.SSLContext:
        context = self._tls.get(verify)
        if context is None:
            context = self._tls[verify] = _tls_context(verify)
        return context

    # -- request lifetime ---------------------------------------------------------

    def new_owner(self) -> int:
        return Owner().handle

    def release(self, request: Any) -> None:
        """The request ``request`` (its Lua table) ended: close its sockets."""
        try:
            handle = request[b"cosocket_owner"]
        except Exception:  # not a Lua table: nothing was opened
            return
        if handle is not None:
            self.release_owner(handle)

    def release_owner(self, handle: int) -> None:
        """What owner ``handle`` holds is closed (ngx.lua, at a request's end)."""
        owner = _OBJECTS.get(handle)
        if type(owner) is Owner:
            owner.close_all()

    def close_all(self) -> None:
        """Worker shutdown: close every idle pooled connection."""
        for pool in list(self.pools.values()):
            while pool.idle:
                conn = pool.idle.pop()
                self._unpool(conn)
                conn.shutdown()
                _OBJECTS.pop(conn.handle, None)
        self.pools.clear()

    # -- TCP ------------------------------------------------------------------------------

    def connect(
        self,
        owner_handle: int,
        key: bytes,
        host: bytes,
        port: Any,
        pool_size: Any,
        backlog: Any,
        timeout_ms: Any,
    ) -> tuple[Any, Any]:
        """(conn, reused) when ready now, (nil, err) on failure, (conn, false)
        when socket.lua must yield conn (resumed with reused, or nil)."""
        owner = _OBJECTS.get(owner_handle)
        if not isinstance(owner, Owner):
            return None, b"closed"
        pool = self.pools.get(key)
        if pool is None and (pool_size or backlog is not None):
            size = int(pool_size or DEFAULT_POOL_SIZE)
            pool = self.pools[key] = Pool(key, size, -1 if backlog is None else int(backlog))
        if pool is not None:
            conn = self._take_idle(pool, owner)
            if conn is not None:
                return conn.handle, conn.reused
            if pool.backlog >= 0 and pool.connections >= pool.size + pool.backlog:
                return None, b"too many waiting connect operations"
        conn = TcpConnection(self, key)
        conn.owner = owner
        owner.conns.add(conn)
        text = host.decode("utf-8", "replace")
        conn.connect_args = (owner, pool, text, None if port is None else int(port), timeout_ms)
        return conn.handle, False

    def _take_idle(self, pool: Pool, owner: Owner) -> TcpConnection | None:
        while pool.idle:
            conn = pool.idle.popleft()
            self._unpool(conn)
            if not conn.usable() or conn.eof or conn.buffer:
                conn.shutdown()
                _OBJECTS.pop(conn.handle, None)
                continue
            conn.reused += 1
            conn.owner = owner
            owner.conns.add(conn)
            return conn
        return None

    def _unpool(self, conn: TcpConnection) -> None:
        if conn.idle_timer is not None:
            conn.idle_timer.cancel()
            conn.idle_timer = None

    async def open(
        self,
        conn: TcpConnection,
        owner: Owner,
        pool: Pool | None,
        host: str,
        port: int | None,
        timeout_ms: Any,
    ) -> Any:
        """Connect ``conn`` (after a backlog wait, if its pool is full)."""
        timeout = _seconds(timeout_ms)
        loop = self.loop()
        deadline = loop.time() + timeout
        if pool is not None:
            if pool.backlog >= 0:
                while pool.connections >= pool.size:
                    if len(pool.waiters) >= pool.backlog:
                        conn.failure = ("too many waiting connect operations", None)
                        return None
                    waiter: asyncio.Future[None] = loop.create_future()
                    pool.waiters.append(waiter)
                    try:
                        await asyncio.wait_for(waiter, max(deadline - loop.time(), 0))
                    except TimeoutError:
                        conn.failure = ("timeout", None)
                        return None
                    finally:
                        if waiter in pool.waiters:
                            pool.waiters.remove(waiter)
                    idle = self._take_idle(pool, owner)
                    if idle is not None:
                        # the connection handed back is the one to use:
                        # socket.lua swaps it in (see connect_result)
                        conn.handed = idle
                        return idle.reused
            pool.connections += 1
            conn.pool = pool
        try:
            if port is None:
                await asyncio.wait_for(
                    loop.create_unix_connection(lambda: conn, host), deadline - loop.time()
                )
            else:
                resolved = await asyncio.wait_for(
                    _resolve(host, port, socket.SOCK_STREAM), deadline - loop.time()
                )
                if isinstance(resolved, str):
                    conn.failure = (resolved, None)
                    conn.shutdown()
                    return None
                _, address = resolved
                await asyncio.wait_for(
                    loop.create_connection(lambda: conn, address[0], address[1]),
                    max(deadline - loop.time(), 0),
                )
        except (OSError, TimeoutError) as exc:
            conn.failure = (_errstr(exc), None)
            conn.shutdown()
            return None
        if conn.closed:  # the request ended while connecting
            conn.shutdown()
            return None
        return 0

    def connect_result(self, handle: int) -> int | None:
        """After a backlog wait handed back a pooled connection: that one."""
        conn = _OBJECTS.get(handle)
        if not isinstance(conn, TcpConnection) or conn.handed is None:
            return None
        handed, conn.handed = conn.handed, None
        return handed.handle

    def send(self, handle: int, data: bytes, timeout_ms: Any) -> Any:
        """Bytes sent; (nil, err); or (PENDING, handle) while the transport
        drains: socket.lua waits on that handle (a _Drain)."""
        conn = _OBJECTS.get(handle)
        if not isinstance(conn, TcpConnection):
            return None, b"closed"
        transport = conn.transport
        if conn.write_closed or transport is None or transport.is_closing():
            conn.write_closed = True
            return None, (conn.error or "closed").encode()
        transport.write(data)
        if not conn.writing_paused:
            return len(data)
        # Wait for the drain on an object of its own, so a read another light
        # thread waits for meanwhile keeps its own waiter (full duplex).
        drain = conn.drain = _Drain(conn, len(data), _seconds(timeout_ms))
        if conn.owner is not None:
            conn.owner.others.append(drain.handle)
        return PENDING, drain.handle

    def receive(self, handle: int, mode: Any, size: Any, timeout_ms: Any) -> Any:
        """The data; (nil, err, partial); or PENDING."""
        conn = _OBJECTS.get(handle)
        if not isinstance(conn, TcpConnection | BodyReader) or conn.read_closed:
            return None, b"closed"
        result = conn.start_read(int(mode), int(size or 0), None, timeout_ms)
        if result is None:
            return None, conn.failure[0].encode(), conn.failure[1]
        return result

    def until(self, owner_handle: int, pattern: bytes, inclusive: Any) -> int | None:
        owner = _OBJECTS.get(owner_handle)
        if not isinstance(owner, Owner):
            return None
        until = UntilState(pattern, bool(inclusive))
        owner.others.append(until.handle)
        return until.handle

    def receive_until(self, handle: int, until_handle: int, size: Any, timeout_ms: Any) -> Any:
        """One call of a receiveuntil iterator: data; (nil, nil, nil) after the
        last sized chunk; (nil, err, partial); or PENDING."""
        conn = _OBJECTS.get(handle)
        until = _OBJECTS.get(until_handle)
        if not isinstance(conn, TcpConnection | BodyReader) or not isinstance(until, UntilState):
            return None, b"closed"
        if until.done:
            until.done = False
            return None, None, None
        if conn.read_closed:
            return None, b"closed"
        result = conn.start_read(UNTIL, int(size or 0), until, timeout_ms)
        if result is None:
            return None, conn.failure[0].encode(), conn.failure[1]
        return result

    def failure(self, handle: int) -> tuple[bytes, bytes | None]:
        """err, partial of the operation ``handle`` just failed."""
        obj = _OBJECTS.get(handle)
        if not isinstance(obj, TcpConnection | UdpSocket | _Handshake | _Drain | BodyReader):
            return b"closed", None
        err, partial = obj.failure
        return err.encode(), partial

    def keepalive(self, handle: int, key: bytes, idle_ms: Any, pool_size: Any) -> Any:
        """Put the connection in its pool: 1, or (nil, err)."""
        conn = _OBJECTS.get(handle)
        if not isinstance(conn, TcpConnection):
            return None, b"closed"
        if not conn.usable() or conn.eof or conn.read_closed or conn.write_closed:
            return None, b"closed"
        if conn.buffer:
            return None, b"unread data in buffer"
        pool = self.pools.get(key)
        if pool is None:
            size = DEFAULT_POOL_SIZE if pool_size is None else int(pool_size)
            if size <= 0:
                return False, f'bad "pool_size" option value: {size}'.encode()
            pool = self.pools[key] = Pool(key, size, -1)
        if conn.owner is not None:
            conn.owner.conns.discard(conn)
            conn.owner = None
        if conn.pool is None:
            pool.connections += 1
            conn.pool = pool
        if len(pool.idle) >= pool.size:
            oldest = pool.idle.pop()
            self._unpool(oldest)
            oldest.shutdown()
            _OBJECTS.pop(oldest.handle, None)
        ms = DEFAULT_KEEPALIVE_MS if idle_ms is None else int(idle_ms)
        # 0 means no idle timeout; a far timer keeps "pooled" = "has a timer"
        delay = ms / 1000.0 if ms > 0 else 365 * 86400.0
        conn.idle_timer = self.deadlines().call_later(delay, self.drop_idle, conn)
        pool.idle.appendleft(conn)
        pool.wake_one()
        return 1

    def drop_idle(self, conn: TcpConnection) -> None:
        """An idle pooled connection timed out, got bytes, or was closed."""
        self._unpool(conn)
        pool = conn.pool
        if pool is not None and conn in pool.idle:
            pool.idle.remove(conn)
        conn.shutdown()
        _OBJECTS.pop(conn.handle, None)

    def close(self, handle: int) -> Any:
        conn = _OBJECTS.get(handle)
        if not isinstance(conn, TcpConnection):
            return None, b"closed"
        dead = conn.read_closed and conn.write_closed
        conn.shutdown()  # its handle goes when the request ends
        return (None, b"closed") if dead else 1

    def handshake(self, handle: int, server_name: Any, verify: Any, timeout_ms: Any) -> Any:
        conn = _OBJECTS.get(handle)
        if not isinstance(conn, TcpConnection) or not conn.usable() or conn.owner is None:
            return None, b"closed"
        name = server_name.decode("utf-8", "replace") if isinstance(server_name, bytes) else None
        hs = _Handshake(conn, name, bool(verify), _seconds(timeout_ms))
        conn.owner.others.append(hs.handle)
        return hs.handle

    # -- UDP ------------------------------------------------------------------------------

    def udp_setpeername(self, owner_handle: int, old: Any, host: bytes, port: Any) -> Any:
        owner = _OBJECTS.get(owner_handle)
        if not isinstance(owner, Owner):
            return None
        previous = _OBJECTS.get(old) if old is not None else None
        if isinstance(previous, UdpSocket):
            previous.shutdown()
        udp = UdpSocket()
        udp.owner = owner
        owner.conns.add(udp)
        udp.peer = (host.decode("utf-8", "replace"), None if port is None else int(port))
        return udp.handle

    def udp_send(self, handle: int, data: bytes) -> Any:
        udp = _OBJECTS.get(handle)
        if not isinstance(udp, UdpSocket) or udp.transport is None or udp.closed:
            return None, b"closed"
        if udp.error is not None:
            err, udp.error = udp.error, None
            return None, err.encode()
        try:
            udp.transport.sendto(data)
        except OSError as exc:
            return None, _errstr(exc).encode()
        return 1

    def udp_receive(self, handle: int, size: Any, timeout_ms: Any) -> Any:
        udp = _OBJECTS.get(handle)
        if not isinstance(udp, UdpSocket) or udp.transport is None or udp.closed:
            return None, b"closed"
        n = int(size or UDP_MAX_DATAGRAM)
        udp.size = min(n, UDP_MAX_DATAGRAM) if n > 0 else UDP_MAX_DATAGRAM
        if udp.queue:
            return udp.queue.popleft()[: udp.size]
        if udp.error is not None:
            err, udp.error = udp.error, None
            return None, err.encode()
        loop = self.loop()
        udp.waiter = loop.create_future()
        udp.timer = loop.call_later(_seconds(timeout_ms), udp._timed_out)
        return PENDING

    def udp_close(self, handle: int) -> Any:
        udp = _OBJECTS.get(handle)
        if not isinstance(udp, UdpSocket) or udp.closed or udp.transport is None:
            if isinstance(udp, UdpSocket):
                udp.shutdown()
            return None, b"closed"
        udp.shutdown()
        return 1

    def functions(self) -> dict[bytes, Any]:
        """What socket.lua gets to call."""
        return {
            b"new_owner": self.new_owner,
            b"release_owner": self.release_owner,
            b"connect": self.connect,
            b"connect_result": self.connect_result,
            b"send": self.send,
            b"receive": self.receive,
            b"until": self.until,
            b"receive_until": self.receive_until,
            b"failure": self.failure,
            b"keepalive": self.keepalive,
            b"close": self.close,
            b"handshake": self.handshake,
            b"udp_setpeername": self.udp_setpeername,
            b"udp_send": self.udp_send,
            b"udp_receive": self.udp_receive,
            b"udp_close": self.udp_close,
        }


def install(lua: Any, extensions: Any) -> Cosockets:
    """Load socket.lua into ``lua`` (after ngx.lua): ngx.socket, and the
    Debian names of OpenResty's modules for ``require``."""
    from importlib import resources

    cosockets = Cosockets()
    source = resources.files("fcgi_lua.lua").joinpath("socket.lua").read_bytes()
    loader = lua.eval(b"loadstring or load")
    chunk = loader(source, b"@socket.lua")
    if isinstance(chunk, tuple):
        chunk, err = chunk
        if chunk is None:
            raise RuntimeError(f"cannot load socket.lua: {err!r}")
    chunk(lua.table_from(cosockets.functions()), extensions)
    return cosockets
