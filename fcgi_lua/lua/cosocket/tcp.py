"""Stream cosockets (TCP and unix): one connection, its buffer and its sends.

This module owns ``TcpConnection`` (the asyncio protocol behind a
``ngx.socket.tcp()`` object: its receive buffer, flow control both ways,
its state once pooled) and ``Drain`` (a send waiting for the transport).
Connecting and pooling are ``dispatch.Cosockets``' (``open``, ``keepalive``).

What it must never do: buffer without bound (reading pauses past
HIGH_WATER unless the script's own read asked for more) or keep bytes that
arrive on an idle pooled connection (it is dropped instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from fcgi_lua.lua.cosocket.handles import PENDING, Owner, Timer, errstr, register
from fcgi_lua.lua.cosocket.pool import Pool
from fcgi_lua.lua.cosocket.reading import ALL, PendingRead, UntilState, take, take_partial

if TYPE_CHECKING:
    from fcgi_lua.lua.cosocket.dispatch import Cosockets

# Past this many unread bytes, stop reading from the peer until the script
# consumes them (unless its pending read needs more).  64 KiB is four of
# nginx's default lua_socket_buffer_size-sized reads over a loopback burst.
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
# A connection's sends are held until the loop iteration ends (Cosockets'
# cork) up to this many bytes; more goes to the transport at once, so that
# its high-water mark and the script's send timeout apply.
CORK_LIMIT = 64 * 1024


class TcpConnection(PendingRead, asyncio.Protocol):
    """One stream connection (TCP or unix) and its receive buffer."""

    def __init__(self, manager: Cosockets, key: bytes) -> None:
        self.handle = register(self)
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
        self.idle_timer: Timer | None = None  # set while pooled
        self.reading_paused = False
        self.writing_paused = False
        # the operation a script waits on
        self.connect_args: tuple[Any, ...] | None = None
        self.op: tuple[int, int, UntilState | None] | None = None
        self.waiter: asyncio.Future[Any] | None = None
        self.timer: Timer | None = None
        self.failure: tuple[str, bytes | None] = ("closed", None)
        self.drain: Drain | None = None  # a send waiting for the transport to drain
        self.handed: TcpConnection | None = None  # a backlog wait got this one
        # send()s not yet written: they leave together at the end of the
        # loop iteration (Cosockets.flush_sends), or before a close
        self.unsent: list[bytes] = []
        self.unsent_size = 0

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
            self.error = errstr(exc)
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

    def flush(self) -> None:
        """Write what send() held back (at the end of the loop iteration,
        before a close or a TLS handshake, or past CORK_LIMIT)."""
        unsent = self.unsent
        if not unsent:
            return
        self.unsent = []
        self.unsent_size = 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(b"".join(unsent) if len(unsent) > 1 else unsent[0])

    def shutdown(self) -> None:
        """Close now, whatever the state (request end, close(), errors);
        what was sent still leaves first, as nginx's close after a send."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport = self.transport
        if transport is not None:
            self.flush()
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
            self.failure = (self.error or "closed", take_partial(buf, mode))
            self.read_closed = True
            return None
        return PENDING

    def _maybe_resume_reading(self) -> None:
        if self.reading_paused and len(self.buffer) < LOW_WATER and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def _loop(self) -> asyncio.AbstractEventLoop:
        return self.manager.loop()

    def _call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
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


class Drain:
    """A send waiting for the peer to read (the transport paused writing)."""

    __slots__ = ("conn", "failure", "future", "handle", "sent", "timer")

    def __init__(self, conn: TcpConnection, sent: int, timeout: float) -> None:
        self.handle = register(self)
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
