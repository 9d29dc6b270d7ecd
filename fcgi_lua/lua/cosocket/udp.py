"""Datagram cosockets (UDP and unix): ``ngx.socket.udp()``.

This module owns ``UdpSocket`` (one connected datagram socket, the
datagrams that came while nobody read, the one pending receive) and how it
opens once ``setpeername`` named its peer.

What it must never do: queue without bound (datagrams past UDP_QUEUE are
dropped, as a full kernel buffer would) or hand a script more than
UDP_MAX_DATAGRAM bytes of one datagram.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from typing import Any, cast

from fcgi_lua.lua.cosocket.handles import Owner, errstr, register
from fcgi_lua.lua.cosocket.resolver import resolve

# lua-nginx-module reads UDP datagrams into an 8 KiB buffer at most.
UDP_MAX_DATAGRAM = 8192
# Datagrams kept while nobody reads; later ones are dropped, as a full
# kernel socket buffer would.
UDP_QUEUE = 64


class UdpSocket(asyncio.DatagramProtocol):
    """One connected datagram socket (UDP or unix)."""

    def __init__(self) -> None:
        self.handle = register(self)
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
            self.failure = (errstr(exc), None)
            waiter.set_result(None)
        else:
            self.error = errstr(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            self._cancel_timer()
            self.failure = (errstr(exc) if exc else "closed", None)
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
        resolved = await resolve(host, port, socket.SOCK_DGRAM)
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
        udp.failure = (errstr(exc), None)
        return None
    if udp.closed:  # the request ended meanwhile
        udp.shutdown()
        return None
    return 1
