"""One worker's server: its listeners, connections and request tasks.

Owns what is shared by every connection of one worker: listening on the
sockets (its own, or those a prefork master bound), the set of open
connections and of request tasks, the graceful stop (drain, then cancel),
max_requests, the status and ping pages, the metrics and access log of
finished requests, and giving memory back after a burst.  One connection
is ``fcgi_lua.protocol``, one request ``fcgi_lua.responder``, binding
``fcgi_lua.listeners``.  It must never parse FastCGI nor run Lua itself:
the engine is reached through ``Engine.run`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import resource
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from fcgi_lua import fastcgi, metrics, status
from fcgi_lua.accesslog import AccessLog
from fcgi_lua.config import Config
from fcgi_lua.limits import ClientFilter
from fcgi_lua.listeners import bind_all, describe_socket
from fcgi_lua.protocol import DRAIN_IDLE_SECONDS, FastCGIProtocol
from fcgi_lua.request import Request
from fcgi_lua.responder import Sink
from fcgi_lua.scripts import ScriptResolver

log = logging.getLogger("fcgi_lua.server")

# The end of a drain (the last this many seconds of shutdown_timeout, at
# most half of it): connections still busy then close right after their
# next END_REQUEST, so the requests in flight finish before the timeout
# cancels anything (nginx retries a GET that meets such a close; a POST it
# does not, which is why nginx/fcgi-lua-upstream.conf sets keepalive_time:
# nginx itself retires a busy connection well before this).
DRAIN_FORCE_SECONDS = 2.0

# A burst of at least this many requests in flight is followed, once the
# worker has been idle for TRIM_IDLE_SECONDS, by a collection and a
# malloc_trim: small loads never pay for it.
TRIM_AFTER_PEAK = 256
TRIM_IDLE_SECONDS = 1.0

# How often the connections' timeouts (idle_timeout, read_timeout,
# write_timeout) are checked: one timer per worker, none per request or
# connection, so a timeout fires up to this much late.
SWEEP_SECONDS = 1.0
# At RLIMIT_NOFILE libuv accepts and closes new connections itself,
# silently: max_conns is lowered to leave this share of the descriptors
# (at least FD_RESERVE_MIN) to cosockets, files and the rest.
FD_RESERVE_SHARE = 4
FD_RESERVE_MIN = 32


def connection_limit(configured: int) -> int:
    """max_conns, lowered to fit RLIMIT_NOFILE with room to spare."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    room = soft - max(soft // FD_RESERVE_SHARE, FD_RESERVE_MIN)
    return max(1, min(configured, room))


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_malloc_trim = _load_malloc_trim()


class Engine(Protocol):
    """What the server calls of its engine (fcgi_lua.lua.LuaEngine)."""

    def start(self, request: Request, sink: Sink) -> Awaitable[None] | None:
        """Run ``request`` up to its first wait, writing to ``sink``: None
        if it ended there, else what finishes it (awaited in a task)."""
        ...

    def traceback(self, request: Request) -> str | None:
        """Where a running request's code is now (the slow-request log)."""
        ...

    def collect_garbage(self) -> int:
        """A full collection of the script heap (after a burst)."""
        ...


class Server:
    """Listeners, connections and request tasks of one worker."""

    def __init__(self, config: Config, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.resolver = ScriptResolver(config.root, config.extensions)
        self.client_filter = ClientFilter(config.allowed_clients)
        # One for every connection's codec: it is frozen.
        self.codec_limits = fastcgi.Limits(
            max_params_bytes=config.max_params_bytes,
            max_params_count=config.max_params_count,
        )
        self.connections: set[FastCGIProtocol] = set()
        self.max_conns = connection_limit(config.max_conns)
        self._sweeper: asyncio.TimerHandle | None = None
        self.sweep_time = 0.0  # loop.time() of the last sweep
        self.tasks: set[asyncio.Task[None]] = set()
        self._ready: list[FastCGIProtocol] = []  # connections with requests to start
        self._servers: list[asyncio.AbstractServer] = []
        self._unix_paths: list[str] = []
        # Set by a graceful stop: connections close as soon as they are idle.
        self.draining = False
        self.closing = False  # the last part of a drain (stop)
        self.requests_served = 0
        self._peak_in_flight = 0
        # Called once when max_requests is reached (the worker recycles).
        self.on_max_requests: Callable[[], None] | None = None
        # status_path / ping_path: answered before any script is looked up.
        self.builtin_paths: dict[bytes, str] = {}
        if config.status_path:
            self.builtin_paths[config.status_path.encode()] = "status"
        if config.ping_path:
            self.builtin_paths[config.ping_path.encode()] = "ping"
        self.recorder = metrics.recorder()
        self.access_log: AccessLog | None = None
        self.slow_request_threshold = config.slow_request_threshold
        self._update_observing()
        self._loop: asyncio.AbstractEventLoop | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop this worker serves on, looked up once: on Python 3.11
        every asyncio.get_running_loop() is a getpid() syscall (its fork
        check), and the request path made four per request."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _update_observing(self) -> None:
        self.observing = bool(
            self.recorder is not None
            or self.access_log is not None
            or self.slow_request_threshold > 0
        )

    def set_access_log(self, access_log: AccessLog | None) -> None:
        self.access_log = access_log
        self._update_observing()

    # -- status, metrics, logs ---------------------------------------------------

    def answer_builtin(self, params: dict[bytes, bytes], head: bool) -> bytes | None:
        """The status or ping response if the request names one, else None."""
        paths = self.builtin_paths
        kind = paths.get(params.get(b"SCRIPT_NAME", b"")) or paths.get(
            params.get(b"DOCUMENT_URI", b"")
        )
        if kind is None:
            return None
        if kind == "ping":
            return status.ping_response(self.config.ping_response, head=head)
        return status.status_response(
            params.get(b"QUERY_STRING", b"").decode("latin-1"),
            params.get(b"HTTP_ACCEPT", b"").decode("latin-1"),
            pool="fcgi-lua",
            in_flight=self.in_flight,  # the status request itself is not a task
            served=self.requests_served,
            head=head,
        )

    def request_done(
        self, params: dict[bytes, bytes], script: str, sink: Sink, began: float, aborted: bool
    ) -> None:
        seconds = time.perf_counter() - began
        # nginx's code for a request whose client went away
        code = 499 if aborted else sink.status
        if self.recorder is not None:
            self.recorder.request_finished(script, code, seconds)
        if self.access_log is not None:
            self.access_log.write(params, code, sink.sent, seconds, script)

    def report_slow(self, request: Request, began: float) -> None:
        """slow_request_threshold passed: say where the request's Lua is."""
        where = self.engine.traceback(request)
        log.warning(
            "%s: slow request, running for %.3f s (slow_request_threshold %g s)%s",
            request.script_path,
            time.perf_counter() - began,
            self.slow_request_threshold,
            ":\n" + where if where else "; not in Lua now",
        )
        metrics.slow_request(request.script_path)

    @property
    def in_flight(self) -> int:
        return len(self.tasks)

    def start_soon(self, conn: FastCGIProtocol) -> None:
        """Start ``conn``'s ready requests once this loop iteration's reads
        are done, with every other connection's: as tasks used to start,
        so that requests that wait (a cosocket) send what they send after
        the iteration's input is read, not in the middle of it (measured:
        starting each inside its read cost redis INCR 15-25 % more CPU
        and req/s); one callback per iteration for all of them."""
        self._ready.append(conn)
        if len(self._ready) == 1:
            self.loop().call_soon(self._start_ready)

    def _start_ready(self) -> None:
        ready, self._ready = self._ready, []
        for conn in ready:
            conn.start_ready()

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = self.loop().create_task(coro)
        self.tasks.add(task)
        if len(self.tasks) > self._peak_in_flight:
            self._peak_in_flight = len(self.tasks)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.served()

    def served(self) -> None:
        """A request is over: one that ended without waiting (no task),
        or a request task, however it ended."""
        self.requests_served += 1
        if not self.tasks and self._peak_in_flight >= TRIM_AFTER_PEAK:
            self._peak_in_flight = 0
            self.loop().call_later(TRIM_IDLE_SECONDS, self._trim_when_idle)
        limit = self.config.max_requests
        if limit and self.requests_served == limit and self.on_max_requests is not None:
            log.info("served max_requests=%d; recycling this worker", limit)
            self.on_max_requests()

    def _trim_when_idle(self) -> None:
        """After a burst, give the memory it needed back to the system.

        Python's allocator and glibc keep freed memory for reuse, so a
        worker that once held 10,000 requests would stay that large.  Run
        only when the worker is idle again, so no request pays for it.
        """
        if self.tasks:
            return
        self.engine.collect_garbage()  # first: the Lua heap's garbage goes back to malloc
        gc.collect()
        if _malloc_trim is not None:
            _malloc_trim(0)
        log.debug("idle after a burst: collected and trimmed the heap")

    async def start(self, sockets: Sequence[socket.socket] | None = None) -> None:
        """Listen on ``config.listen``, or on sockets a prefork master bound."""
        loop = self._loop = asyncio.get_running_loop()
        owned = sockets is None
        if sockets is None:
            sockets = bind_all(self.config)
        for sock in sockets:
            protocol = functools.partial(FastCGIProtocol, self, sock.family)
            if sock.family == socket.AF_UNIX:
                server = await loop.create_unix_server(
                    protocol, sock=sock, backlog=self.config.backlog
                )
                if owned:
                    self._unix_paths.append(sock.getsockname())
            else:
                server = await loop.create_server(protocol, sock=sock, backlog=self.config.backlog)
            self._servers.append(server)
            log.info("listening on %s", describe_socket(sock))
        if self.max_conns < self.config.max_conns:
            log.info(
                "max_conns lowered to %d to fit RLIMIT_NOFILE (%d)",
                self.max_conns,
                resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )
        if self._sweeper is None:
            self.sweep_time = loop.time()
            self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep)

    # -- bounded connections ------------------------------------------------------

    def make_room(self) -> bool:
        """max_conns connections are open: close the one idle longest (a
        front server's keepalive pool holds connections it may not need);
        False if none is idle."""
        oldest: FastCGIProtocol | None = None
        for conn in self.connections:
            if (
                conn.idle
                and not conn.lingering
                and not conn.closed
                and (oldest is None or conn.quiet_since < oldest.quiet_since)
            ):
                oldest = conn
        if oldest is None:
            return False
        log.warning(
            "%d connections open (max_conns=%d): closing the one idle longest (%s)",
            len(self.connections),
            self.max_conns,
            oldest.peer,
        )
        self.connections.discard(oldest)  # its descriptor goes at once
        oldest.close()
        return True

    def _sweep(self) -> None:
        """Once a second: the connections' timeouts, and the descriptors."""
        loop = self.loop()
        now = self.sweep_time = loop.time()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        if len(self.connections) * 2 > self.max_conns:
            self._check_descriptors()
        self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep)

    def _check_descriptors(self) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = open_descriptors()
        if soft != resource.RLIM_INFINITY and used >= soft - FD_RESERVE_MIN // 2:
            log.warning(
                "%d of %d descriptors open (RLIMIT_NOFILE), %d of them connections: "
                "new connections are closed unanswered at the limit",
                used,
                soft,
                len(self.connections),
            )

    def _open_connections(self) -> bool:
        return any(not conn.lingering for conn in self.connections)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish, then cancel the rest.

        Kept-alive connections keep serving what the front server still
        sends on them, and close once idle for DRAIN_IDLE_SECONDS (or at the
        timeout): no request, not even a POST nginx would not retry, meets a
        connection closing under it.
        """
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        self.draining = True
        for server in self._servers:
            server.close()
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        for conn in list(self.connections):
            conn.drain_when_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.tasks:
            log.info("waiting up to %.1fs for %d request(s)", timeout, len(self.tasks))
        soft = deadline - min(DRAIN_FORCE_SECONDS, timeout / 2)
        while (self.tasks or self._open_connections()) and loop.time() < soft:
            # in-flight requests end; idle connections close on their own
            await asyncio.sleep(min(DRAIN_IDLE_SECONDS / 5, max(soft - loop.time(), 0)))
        self.closing = True  # busy connections: closed after their next answer
        for conn in list(self.connections):
            if conn.idle:
                conn.close_gracefully()
        while self.tasks and loop.time() < deadline:
            await asyncio.wait(set(self.tasks), timeout=deadline - loop.time())
        pending = set(self.tasks)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("cancelled %d request(s) still running at shutdown", len(pending))
            await asyncio.wait(pending, timeout=1.0)
        for conn in list(self.connections):
            conn.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self._servers:
            await server.wait_closed()
