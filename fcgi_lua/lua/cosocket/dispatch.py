"""The cosockets of a worker: the functions socket.lua calls, and ``perform``.

This module owns ``Cosockets`` (one per VM: the pools, the TLS contexts,
the loop and deadline heap looked up once, and every synchronous call
socket.lua makes: connect, send, receive, keepalive, close, the UDP
calls...), ``perform`` (the driver's "cosocket" command, which awaits what
a handle waits for) and ``install`` (socket.lua loaded into the VM).

What it must never do: wait in a synchronous call (it answers PENDING and
socket.lua yields to ``perform``) or trust a handle (every call looks its
handle up and checks the kind; a stale one answers "closed").
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from typing import Any

from fcgi_lua.deadlines import Deadlines
from fcgi_lua.lua.cosocket.handles import (
    OBJECTS,
    PENDING,
    Owner,
    errstr,
    timeout_seconds,
)
from fcgi_lua.lua.cosocket.pool import DEFAULT_KEEPALIVE_MS, DEFAULT_POOL_SIZE, Pool
from fcgi_lua.lua.cosocket.reading import UNTIL, BodyReader, UntilState
from fcgi_lua.lua.cosocket.resolver import resolve
from fcgi_lua.lua.cosocket.tcp import CORK_LIMIT, Drain, TcpConnection
from fcgi_lua.lua.cosocket.tls import Handshake, client_context
from fcgi_lua.lua.cosocket.udp import UDP_MAX_DATAGRAM, UdpSocket
from fcgi_lua.lua.loader import load_chunk


async def perform(request: Any, sink: Any, handle: Any) -> Any:
    """The driver's "cosocket" command: await what ``handle``'s object waits for."""
    obj = OBJECTS.get(handle)
    if not isinstance(obj, TcpConnection | UdpSocket | Handshake | Drain | BodyReader):
        return None  # gone (its request ended): failure() says "closed"
    return await obj.wait()


class Cosockets:
    """The worker's cosockets: the functions socket.lua calls, and the pools."""

    def __init__(self) -> None:
        self.pools: dict[bytes, Pool] = {}
        self._tls: dict[bool, ssl.SSLContext] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: Deadlines | None = None
        # connections whose sends wait for the end of the loop iteration
        self._unsent: list[TcpConnection] = []

    def deadlines(self) -> Deadlines:
        """The worker's heap of deadlines, on its loop: read and keepalive
        timeouts, and ngx.sleep (the engine's "sleep" command)."""
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
            context = self._tls[verify] = client_context(verify)
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
        owner = OBJECTS.get(handle)
        if type(owner) is Owner:
            owner.close_all()

    def close_all(self) -> None:
        """Worker shutdown: close every idle pooled connection."""
        for pool in list(self.pools.values()):
            while pool.idle:
                conn = pool.idle.pop()
                self._unpool(conn)
                conn.shutdown()
                OBJECTS.pop(conn.handle, None)
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
        local: Any = None,
    ) -> tuple[Any, Any]:
        """(conn, reused) when ready now, (nil, err) on failure, (conn, false)
        when socket.lua must yield conn (resumed with reused, or nil)."""
        owner = OBJECTS.get(owner_handle)
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
        bind = local.decode() if isinstance(local, bytes) else None
        conn.connect_args = (
            owner,
            pool,
            text,
            None if port is None else int(port),
            timeout_ms,
            bind,
        )
        return conn.handle, False

    def _take_idle(self, pool: Pool, owner: Owner) -> TcpConnection | None:
        while pool.idle:
            conn = pool.idle.popleft()
            self._unpool(conn)
            if not conn.usable() or conn.eof or conn.buffer:
                conn.shutdown()
                OBJECTS.pop(conn.handle, None)
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
        bind: str | None = None,
    ) -> Any:
        """Connect ``conn`` (after a backlog wait, if its pool is full), from
        the local address ``bind`` if given (tcpsock:bind)."""
        timeout = timeout_seconds(timeout_ms)
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
                    resolve(host, port, socket.SOCK_STREAM), deadline - loop.time()
                )
                if isinstance(resolved, str):
                    conn.failure = (resolved, None)
                    conn.shutdown()
                    return None
                _, address = resolved
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda: conn,
                        address[0],
                        address[1],
                        local_addr=None if bind is None else (bind, 0),
                    ),
                    max(deadline - loop.time(), 0),
                )
        except (OSError, TimeoutError) as exc:
            conn.failure = (errstr(exc), None)
            conn.shutdown()
            return None
        if conn.closed:  # the request ended while connecting
            conn.shutdown()
            return None
        return 0

    def connect_result(self, handle: int) -> int | None:
        """After a backlog wait handed back a pooled connection: that one."""
        conn = OBJECTS.get(handle)
        if not isinstance(conn, TcpConnection) or conn.handed is None:
            return None
        handed, conn.handed = conn.handed, None
        return handed.handle

    def send(self, handle: int, data: bytes, timeout_ms: Any) -> Any:
        """Bytes sent; (nil, err); or (PENDING, handle) while the transport
        drains: socket.lua waits on that handle (a Drain)."""
        conn = OBJECTS.get(handle)
        if not isinstance(conn, TcpConnection):
            return None, b"closed"
        transport = conn.transport
        if conn.write_closed or transport is None or transport.is_closing():
            conn.write_closed = True
            return None, (conn.error or "closed").encode()
        size = len(data)
        if not conn.writing_paused and conn.unsent_size + size < CORK_LIMIT:
            # Held until the loop iteration ends, with every other request's
            # sends: a peer woken once for the lot, not once per send
            # (redis INCR: 8-10 % less worker CPU, fewer wake-ups in the
            # kernel; bench/README.md).
            if not conn.unsent:
                if not self._unsent:
                    self.loop().call_soon(self.flush_sends)
                self._unsent.append(conn)
            conn.unsent.append(data)
            conn.unsent_size += size
            return size
        conn.flush()
        transport.write(data)
        if not conn.writing_paused:
            return size
        # Wait for the drain on an object of its own, so a read another light
        # thread waits for meanwhile keeps its own waiter (full duplex).
        drain = conn.drain = Drain(conn, size, timeout_seconds(timeout_ms))
        if conn.owner is not None:
            conn.owner.others.append(drain.handle)
        return PENDING, drain.handle

    def flush_sends(self) -> None:
        """The end of a loop iteration: write what send() held back."""
        unsent, self._unsent = self._unsent, []
        for conn in unsent:
            conn.flush()

    def receive(self, handle: int, mode: Any, size: Any, timeout_ms: Any) -> Any:
        """The data; (nil, err, partial); or PENDING."""
        conn = OBJECTS.get(handle)
        if not isinstance(conn, TcpConnection | BodyReader) or conn.read_closed:
            return None, b"closed"
        result = conn.start_read(int(mode), int(size or 0), None, timeout_ms)
        if result is None:
            return None, conn.failure[0].encode(), conn.failure[1]
        return result

    def until(self, owner_handle: int, pattern: bytes, inclusive: Any) -> int | None:
        owner = OBJECTS.get(owner_handle)
        if not isinstance(owner, Owner):
            return None
        until = UntilState(pattern, bool(inclusive))
        owner.others.append(until.handle)
        return until.handle

    def receive_until(self, handle: int, until_handle: int, size: Any, timeout_ms: Any) -> Any:
        """One call of a receiveuntil iterator: data; (nil, nil, nil) after the
        last sized chunk; (nil, err, partial); or PENDING."""
        conn = OBJECTS.get(handle)
        until = OBJECTS.get(until_handle)
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
        obj = OBJECTS.get(handle)
        if not isinstance(obj, TcpConnection | UdpSocket | Handshake | Drain | BodyReader):
            return b"closed", None
        err, partial = obj.failure
        return err.encode(), partial

    def keepalive(self, handle: int, key: bytes, idle_ms: Any, pool_size: Any) -> Any:
        """Put the connection in its pool: 1, or (nil, err)."""
        conn = OBJECTS.get(handle)
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
            OBJECTS.pop(oldest.handle, None)
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
        OBJECTS.pop(conn.handle, None)

    def close(self, handle: int) -> Any:
        conn = OBJECTS.get(handle)
        if not isinstance(conn, TcpConnection):
            return None, b"closed"
        dead = conn.read_closed and conn.write_closed
        conn.shutdown()  # its handle goes when the request ends
        return (None, b"closed") if dead else 1

    def handshake(self, handle: int, server_name: Any, verify: Any, timeout_ms: Any) -> Any:
        conn = OBJECTS.get(handle)
        if not isinstance(conn, TcpConnection) or not conn.usable() or conn.owner is None:
            return None, b"closed"
        name = server_name.decode("utf-8", "replace") if isinstance(server_name, bytes) else None
        conn.flush()  # what was sent in the clear goes before the handshake
        hs = Handshake(conn, name, bool(verify), timeout_seconds(timeout_ms))
        conn.owner.others.append(hs.handle)
        return hs.handle

    # -- UDP ------------------------------------------------------------------------------

    def udp_setpeername(self, owner_handle: int, old: Any, host: bytes, port: Any) -> Any:
        owner = OBJECTS.get(owner_handle)
        if not isinstance(owner, Owner):
            return None
        previous = OBJECTS.get(old) if old is not None else None
        if isinstance(previous, UdpSocket):
            previous.shutdown()
        udp = UdpSocket()
        udp.owner = owner
        owner.conns.add(udp)
        udp.peer = (host.decode("utf-8", "replace"), None if port is None else int(port))
        return udp.handle

    def udp_send(self, handle: int, data: bytes) -> Any:
        udp = OBJECTS.get(handle)
        if not isinstance(udp, UdpSocket) or udp.transport is None or udp.closed:
            return None, b"closed"
        if udp.error is not None:
            err, udp.error = udp.error, None
            return None, err.encode()
        try:
            udp.transport.sendto(data)
        except OSError as exc:
            return None, errstr(exc).encode()
        return 1

    def udp_receive(self, handle: int, size: Any, timeout_ms: Any) -> Any:
        udp = OBJECTS.get(handle)
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
        udp.timer = loop.call_later(timeout_seconds(timeout_ms), udp._timed_out)
        return PENDING

    def sockopt(self, handle: int, index: int, value: Any) -> Any:
        """tcpsock:getoption (value nil) / setoption: the option's value,
        or True once set; (nil, err) on a closed socket or a failure."""
        conn = OBJECTS.get(handle)
        transport = conn.transport if isinstance(conn, TcpConnection) else None
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return None, b"closed"
        level, name = SOCKET_OPTIONS[int(index)]
        try:
            if value is None:
                return sock.getsockopt(level, name)
            sock.setsockopt(level, name, int(value))
        except (OSError, ValueError, TypeError) as exc:
            return None, str(exc).encode()
        return True

    def udp_close(self, handle: int) -> Any:
        udp = OBJECTS.get(handle)
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
            b"sockopt": self.sockopt,
            b"valid_ip": valid_ip,
        }


# lua-resty-core's option numbers (socket.lua's OPTIONS): the socket option
SOCKET_OPTIONS = {
    1: (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    2: (socket.SOL_SOCKET, socket.SO_REUSEADDR),
    3: (socket.IPPROTO_TCP, socket.TCP_NODELAY),
    4: (socket.SOL_SOCKET, socket.SO_SNDBUF),
    5: (socket.SOL_SOCKET, socket.SO_RCVBUF),
}


def valid_ip(text: bytes) -> bool:
    """tcpsock:bind's address: an IPv4 or IPv6 literal (ngx_parse_addr)."""
    try:
        ipaddress.ip_address(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def install(lua: Any, extensions: Any) -> Cosockets:
    """Load socket.lua into ``lua`` (after ngx.lua): ngx.socket, and the
    Debian names of OpenResty's modules for ``require``."""
    cosockets = Cosockets()
    chunk = load_chunk(lua, "socket.lua")
    chunk(lua.table_from(cosockets.functions()), extensions)
    return cosockets
