"""Keepalive pools: idle connections to one peer, kept between requests.

This module owns the ``Pool`` record (its idle connections, the count
against ``pool_size`` + ``backlog``, the connects waiting for a slot) and
lua-nginx-module's pool defaults.  Which connection goes into a pool and
comes out of it is decided by ``dispatch.Cosockets`` (keepalive, connect).

What it must never do: open or close a connection itself.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fcgi_lua.lua.cosocket.tcp import TcpConnection

# lua-nginx-module's defaults (lua_socket_keepalive_timeout 60s;
# lua_socket_pool_size 30).
DEFAULT_KEEPALIVE_MS = 60_000
DEFAULT_POOL_SIZE = 30


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
