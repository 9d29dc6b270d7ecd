"""Reads from a byte stream, as socket.lua's receive and receiveuntil want them.

This module owns the read modes (a line, a size, everything, up to a
pattern), how each takes its bytes off a buffer (``take``, the
receiveuntil matcher of ngx_http_lua_socket_read_until), the one pending
read a stream may have with its timeout (``PendingRead``), and
``ngx.req.socket()``'s reader of the request body (``BodyReader``).

What it must never do: poll (a pending read completes when bytes or the
end arrive) or read more of a body than the pending read needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fcgi_lua.lua.cosocket.handles import OBJECTS, PENDING, Owner, Timer, register, timeout_seconds

# Read modes, as socket.lua passes them.
LINE = 1  # "*l"
SIZE = 2  # a byte count
ALL = 3  # "*a"
UNTIL = 4  # a receiveuntil iterator
ANY = 5  # receiveany: what has arrived, at most ``size`` bytes
# A streamed request body is taken in pieces of this size (a STDIN record).
READ_CHUNK = 64 * 1024


class UntilState:
    """A receiveuntil iterator's pattern and where it stands."""

    __slots__ = ("done", "handle", "inclusive", "pattern")

    def __init__(self, pattern: bytes, inclusive: bool) -> None:
        self.handle = register(self)
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
    elif mode == ANY and buf:
        data = bytes(buf[:size])
        del buf[:size]
        return data
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


def take_partial(buf: bytearray, mode: int) -> bytes:
    """What a failed read hands over (its third value); empties ``buf``."""
    partial = bytes(buf)
    buf.clear()
    if mode == LINE and b"\r" in partial:
        partial = partial.replace(b"\r", b"")
    return partial


class PendingRead:
    """One read at a time on a byte stream, as socket.lua's receive and
    receiveuntil want it: the read completes from ``buffer`` at once, or
    waits (with its timeout) until ``_progress`` or ``_read_timed_out``
    settles it.  ``TcpConnection`` and ``BodyReader`` (ngx.req.socket) are
    the two streams; each says how to ``attempt`` a read and which loop it
    runs on, and may act after a read or before a wait."""

    buffer: bytearray
    op: tuple[int, int, UntilState | None] | None
    waiter: asyncio.Future[Any] | None
    timer: Timer | None
    failure: tuple[str, bytes | None]

    def attempt(self) -> Any:
        """Complete the current read op: the data, None (a failure, in
        self.failure) or PENDING."""
        raise NotImplementedError

    def _loop(self) -> asyncio.AbstractEventLoop:
        raise NotImplementedError

    def _call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
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
        self.timer = self._call_later(timeout_seconds(timeout_ms), self._read_timed_out)
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
        self.failure = ("timeout", take_partial(self.buffer, mode))
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


class BodyReader(PendingRead):
    """``ngx.req.socket()``: the request body, read as it streams in, with
    the reads of a cosocket (socket.lua's receive and receiveuntil).

    Bytes are taken from the body (``fcgi_lua.body``) only as far as the
    pending read needs them; the body pauses the front server's connection
    while the script does not read.
    """

    __slots__ = ("body", "buffer", "failure", "handle", "op", "read_closed", "timer", "waiter")

    def __init__(self, body: Any) -> None:
        self.handle = register(self)
        self.body = body
        self.buffer = bytearray()
        self.read_closed = False
        self.op: tuple[int, int, UntilState | None] | None = None
        self.waiter: asyncio.Future[Any] | None = None
        self.timer: Timer | None = None
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
        self.failure = (err, take_partial(buf, mode))
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
    owner = OBJECTS.get(owner_handle)
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
