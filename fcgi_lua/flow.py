"""Back-pressure on one front-server connection.

Owns whether the connection is read, given its two reasons to stop:
responses the peer does not drain (the transport's pause_writing), and a
streamed body whose script has not read what came (``fcgi_lua.body``'s
``Flow``); and the requests waiting for the peer to drain.  It must never
read, write or close the connection, nor know the FastCGI records: it only
pauses and resumes reading, and wakes the writers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ConnectionGone(Exception):
    """The front server closed the connection while a request was writing."""


class FlowControl:
    """One connection's reading switch and its waiting writers.

    FastCGI has no flow control per request, so a multiplexing front server
    waits for all of its requests on the connection while it is paused.
    One object per connection, shared by its requests' streamed bodies
    (``pause``/``resume`` are ``fcgi_lua.body.Flow``).
    """

    __slots__ = ("_closed", "_loop", "_transport", "_waiters", "body_pauses", "write_paused")

    def __init__(
        self, transport: asyncio.Transport, loop: Callable[[], asyncio.AbstractEventLoop]
    ) -> None:
        self._transport = transport
        self._loop = loop  # looked up when first needed (Server.loop)
        self._closed = False
        self.write_paused = False
        self.body_pauses = 0  # streamed bodies whose reader is behind
        self._waiters: list[asyncio.Future[None]] = []

    # -- the transport's write side (asyncio.Protocol's pause/resume_writing) --

    def pause_writing(self) -> None:
        # Responses are produced faster than the peer reads them: stop
        # reading new requests from it until the buffer drains.
        self.write_paused = True
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self._closed and not self.body_pauses:
            self._transport.resume_reading()
        self._wake()

    async def drain(self) -> bool:
        """Wait until the peer drained our output; False if the connection
        closed meanwhile."""
        if not self.write_paused or self._closed:
            return True
        waiter = self._loop().create_future()
        self._waiters.append(waiter)
        await waiter
        return not self._closed

    # -- a streamed body (fcgi_lua.body.Flow): the connection is not read
    # while the script has not read what came ---------------------------------

    def pause(self) -> None:
        self.body_pauses += 1
        if not self._closed:
            self._transport.pause_reading()

    def resume(self) -> None:
        self.body_pauses -= 1
        if self.body_pauses == 0 and not self.write_paused and not self._closed:
            self._transport.resume_reading()

    # -- the end ---------------------------------------------------------------

    def connection_lost(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
