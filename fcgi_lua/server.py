"""The thin asyncio layer: sockets in, codec events, one task per request.

It feeds bytes to the sans-IO codec, turns its events into ``Request``
objects and tasks that run the Lua engine, writes what they produce back as
STDOUT records, pauses reading a connection whose responses are not being
drained, and stops gracefully.  It knows nothing of Lua beyond
``engine.run(request, sink)`` and nothing of the record format.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import gc
import grp
import logging
import os
import pwd
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, cast

from fcgi_lua import errorlog, fastcgi, metrics, status
from fcgi_lua.accesslog import AccessLog
from fcgi_lua.config import Config, parse_listen
from fcgi_lua.http import error_response, without_content_length
from fcgi_lua.limits import ClientFilter
from fcgi_lua.request import Request, from_monkey, monkey_params
from fcgi_lua.scripts import ScriptRejected, ScriptResolver

log = logging.getLogger("fcgi_lua.server")

# Writes are held back until the end of the loop iteration (one send() per
# iteration) unless this many bytes are waiting: a small response leaves in
# one piece, a large one is handed to the transport's flow control at once.
CORK_LIMIT = 64 * 1024

# After our last END_REQUEST on a connection we half-close it and wait this
# long for the peer to close its side (see close_gracefully).
LINGER_SECONDS = 2.0
# While draining (reload, stop), a kept-alive connection is closed once it
# has carried no request for this long.  Closing one the moment its last
# answer left races the front server, which may be sending the next request
# on it: nginx retries a GET that meets the close, but never a POST.  nginx
# reuses its most recently freed connection first, so the one idle longest
# is the least likely to be picked; under load the front server retires
# connections itself (keepalive_requests).  shutdown_timeout still bounds
# the drain.
DRAIN_IDLE_SECONDS = 0.25
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


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_malloc_trim = _load_malloc_trim()


class Engine(Protocol):
    def run(self, request: Request, sink: Any) -> Awaitable[None]: ...


def _send_with_fin(transport: asyncio.WriteTransport, data: bytes) -> bool:
    """Send ``data`` and our FIN together, if the socket takes it all now.

    uvloop's write_eof() only queues the shutdown for the loop's next I/O
    pass.  Monkey 1.6 ends the HTTP request when it reads our EOF, not at
    END_REQUEST: a keep-alive client that sends its next request in that gap
    has its connection closed by Monkey without an answer (docs/monkey.md).
    So the last bytes and the FIN leave back to back, corked on TCP so they
    travel in one segment.  False (nothing sent) when that cannot be done
    here: the caller falls back to write() + write_eof().
    """
    if transport.get_write_buffer_size():
        return False  # earlier bytes still queued: they must go first
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        raw = socket.socket(fileno=sock.fileno())
    except OSError:
        return False
    try:
        tcp = raw.family in (socket.AF_INET, socket.AF_INET6)
        try:
            if tcp:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            sent = raw.send(data) if data else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            return False  # nothing sent: the transport meets the error itself
        if sent < len(data):
            if tcp:
                with contextlib.suppress(OSError):
                    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            if not sent:
                return False
            transport.write(data[sent:])
            transport.write_eof()
            return True
        with contextlib.suppress(OSError):  # the peer is gone: nothing to finish
            raw.shutdown(socket.SHUT_WR)  # also pushes the corked bytes out
        return True
    finally:
        raw.detach()


class ConnectionGone(Exception):
    """The front server closed the connection while a request was writing."""


class _Sink:
    """Where one request's output goes: STDOUT/STDERR records on its connection."""

    __slots__ = ("_conn", "_request_id", "first", "monkey", "sent")

    def __init__(self, conn: FastCGIProtocol, request_id: int) -> None:
        self._conn = conn
        self._request_id = request_id
        # For metrics and the access log: bytes sent, and the start of the
        # header block (its "Status: NNN" line comes first).
        self.first = b""
        self.sent = 0
        # Monkey chunks every response itself: no Content-Length from us.
        self.monkey = False

    @property
    def status(self) -> int:
        first = self.first
        if first.startswith(b"Status: ") and first[8:11].isdigit():
            return int(first[8:11])
        return 200 if first else 0

    async def write(self, data: bytes) -> None:
        conn = self._conn
        if conn.closed:
            raise ConnectionGone("front server closed the connection")
        if not self.first:
            if self.monkey:
                data = without_content_length(data)
            self.first = data[:16]
        self.sent += len(data)
        conn.write(conn.codec.send(fastcgi.Stdout(self._request_id, data)))
        if conn.write_paused:
            await conn.drained()

    def stderr(self, data: bytes) -> None:
        conn = self._conn
        if not conn.closed:
            data = errorlog.clip_bytes(data, conn.server.config.log_max_line)
            conn.write(conn.codec.send(fastcgi.Stderr(self._request_id, data)))


class _Tracked:
    __slots__ = ("aborted", "request", "task")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.task: asyncio.Task[None] | None = None
        # Cancelled once for the front server's abort: a script with an
        # ngx.on_abort handler goes on after it, and must not see the same
        # abort again (EOF, then connection_lost).
        self.aborted = False

    def abort(self) -> bool:
        """Cancel the request's task for an abort; False if already done."""
        if self.task is None or self.task.done() or self.aborted:
            return False
        self.aborted = True
        self.task.cancel()
        return True


class _BodyFlow:
    """Back-pressure for a body a script streams (ngx.req.socket): the
    connection is not read while the script has not read what came.
    FastCGI has no flow control per request, so a multiplexing front server
    waits for all of its requests on that connection meanwhile."""

    __slots__ = ("_conn",)

    def __init__(self, conn: FastCGIProtocol) -> None:
        self._conn = conn

    def pause(self) -> None:
        conn = self._conn
        conn.body_pauses += 1
        if conn.transport is not None and not conn.closed:
            conn.transport.pause_reading()

    def resume(self) -> None:
        conn = self._conn
        conn.body_pauses -= 1
        ready = conn.body_pauses == 0 and not conn.write_paused and not conn.closed
        if ready and conn.transport is not None:
            conn.transport.resume_reading()


class FastCGIProtocol(asyncio.Protocol):
    """One front-server connection; may carry several multiplexed requests."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.codec = fastcgi.Connection(
            limits=fastcgi.Limits(
                max_params_bytes=server.config.max_params_bytes,
                max_params_count=server.config.max_params_count,
            )
        )
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.lingering = False
        self.write_paused = False
        self.body_pauses = 0  # streamed bodies whose reader is behind (_BodyFlow)
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._requests: dict[int, _Tracked] = {}
        self._begun = 0  # requests begun on this connection (drain_when_idle)
        self._corked: list[bytes] = []
        self._corked_size = 0
        self.peer = "?"

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=self.server.config.write_buffer_high)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix"
        clients = self.server.client_filter
        if clients and isinstance(peer, tuple) and not clients.allows(peer[0]):
            log.warning("connection from %s refused: not in allowed_clients", self.peer)
            self.closed = True
            transport.abort()
            return
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # after our last END_REQUEST: read and drop
        self.codec.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        if self.lingering:
            return None  # the peer closed too: done
        # nginx never sends ABORT_REQUEST: EOF on the connection is the abort.
        self.codec.receive_data(b"")
        self._process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for request_id, tracked in list(self._requests.items()):
            if tracked.abort():
                log.info(
                    "front server closed the connection; aborting request %d (%s)",
                    request_id,
                    tracked.request.script_path or "before dispatch",
                )
            tracked.request.end_body()
        self._requests.clear()
        self._wake_drain_waiters()

    def pause_writing(self) -> None:
        # Responses are produced faster than the peer reads them: stop
        # reading new requests from it until the buffer drains.
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.closed and not self.body_pauses:
            self.transport.resume_reading()
        self._wake_drain_waiters()

    # -- helpers -----------------------------------------------------------

    def write(self, data: bytes) -> None:
        # Corked: everything written during one loop iteration (a response
        # and its END_REQUEST, or several multiplexed responses) leaves in
        # one send() call at the end of the iteration.
        if self.closed:
            return
        if not self._corked:
            self._corked = [data]
            self._corked_size = len(data)
            self.server.loop().call_soon(self._uncork)
        else:
            self._corked.append(data)
            self._corked_size += len(data)
        if self._corked_size >= CORK_LIMIT:
            # Large output goes to the transport now, so that its
            # high-water mark (pause_writing) sees it and flow control
            # applies before the next write.
            self._uncork()

    def _uncork(self) -> None:
        corked, self._corked = self._corked, []
        self._corked_size = 0
        if self.transport is not None and not self.closed and corked:
            self.transport.write(b"".join(corked) if len(corked) > 1 else corked[0])

    async def drained(self) -> None:
        if not self.write_paused or self.closed:
            return
        waiter = self.server.loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter
        if self.closed:
            raise ConnectionGone("front server closed the connection")

    def _wake_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self._uncork()
            self.transport.close()

    def close_gracefully(self) -> None:
        """Close after our last request, without losing what we sent.

        Closing a socket whose receive buffer still holds bytes makes the
        kernel send RST, and the peer may then drop response bytes it has
        not read yet.  A client that sends its empty STDIN record after our
        END_REQUEST (libfcgi's cgi-fcgi does) would hit that.  So: flush and
        half-close (FIN), discard whatever still arrives, and close when
        the peer closes or after LINGER_SECONDS, like nginx's lingering_close.
        """
        transport = self.transport
        if transport is None or self.closed or self.lingering:
            return
        if not transport.can_write_eof():
            self._uncork()
            transport.close()
            return
        self.lingering = True
        corked, self._corked = self._corked, []
        self._corked_size = 0
        if not _send_with_fin(transport, b"".join(corked)):
            if corked:
                transport.write(b"".join(corked))
            transport.write_eof()
        if not transport.is_reading():
            transport.resume_reading()
        self.server.loop().call_later(LINGER_SECONDS, self.close)

    # -- events --------------------------------------------------------------

    def _process(self) -> None:
        codec = self.codec
        while not self.closed:
            try:
                event = codec.next_event()
            except fastcgi.RemoteProtocolError as exc:
                log.warning(
                    "FastCGI protocol error from %s: %s; closing connection", self.peer, exc
                )
                self._abort_all()
                request_id, http_status = exc.request_id, exc.http_status
                if not (http_status and request_id in codec.active_request_ids):
                    # Garbage in the params of the one request not yet
                    # running (Monkey 1.6 miscounts any 127-byte param:
                    # docs/monkey.md): a 400 beats leaving its client waiting.
                    waiting = codec.active_request_ids - self._requests.keys()
                    request_id, http_status = (min(waiting), 400) if len(waiting) == 1 else (0, 0)
                if http_status:
                    # The peer can still be told why (e.g. 431 for oversized params).
                    # Without a Content-Length: which front server this is
                    # may not be known, and Monkey chunks (docs/monkey.md).
                    answer = without_content_length(error_response(http_status))
                    self.write(codec.send(fastcgi.Stdout(request_id, answer)))
                    self.write(codec.send(fastcgi.EndRequest(request_id)))
                    self.close_gracefully()  # so the answer is not lost to a reset
                else:
                    self.close()
                return
            except Exception:
                # A bug of ours, latched by the codec: this connection's
                # requests cannot be decoded any more; the others go on.
                log.exception("internal error decoding FastCGI from %s; closing it", self.peer)
                self._abort_all()
                self.close()
                return
            if event is fastcgi.NEED_DATA:
                return
            self._handlers[type(event)](self, event)
            if type(event) is fastcgi.ConnectionClosed:
                return

    def _on_begin(self, event: fastcgi.BeginRequest) -> None:
        if event.role != fastcgi.RESPONDER:
            log.warning("FastCGI role %d not supported; answered UNKNOWN_ROLE", event.role)
            self.write(
                self.codec.send(fastcgi.EndRequest(event.request_id, 0, fastcgi.UNKNOWN_ROLE))
            )
            self._maybe_close()

    def _on_params(self, event: fastcgi.Params) -> None:
        server = self.server
        config = server.config
        request = Request(
            event.params,
            max_body_size=config.client_max_body_size,
            body_buffer_size=config.client_body_buffer_size,
            body_temp_dir=config.client_body_temp_path or None,
        )
        request.body.flow = _BodyFlow(self)
        tracked = _Tracked(request)
        self._requests[event.request_id] = tracked
        self._begun += 1
        tracked.task = server.spawn(self._serve(event.request_id, tracked))
        # Temp files go when the task ends, however it ends (even cancelled
        # before it ever ran, when its own finally clauses never run).
        tracked.task.add_done_callback(lambda _: request.close())

    def _on_stdin(self, event: fastcgi.Stdin) -> None:
        tracked = self._requests.get(event.request_id)
        if tracked is not None:
            tracked.request.feed_body(event.data)

    def _on_stdin_end(self, event: fastcgi.StdinEnd) -> None:
        tracked = self._requests.get(event.request_id)
        if tracked is not None:
            tracked.request.end_body()

    def _on_abort(self, event: fastcgi.AbortRequest) -> None:
        tracked = self._requests.get(event.request_id)
        if tracked is None or tracked.task is None:
            # Aborted before its params ended: nothing runs yet.
            if event.request_id in self.codec.active_request_ids:
                self._end(event.request_id)
            return
        log.info("ABORT_REQUEST for request %d (%s)", event.request_id, tracked.request.script_path)
        tracked.abort()

    def _on_get_values(self, event: fastcgi.GetValues) -> None:
        config = self.server.config
        known = {
            b"FCGI_MAX_CONNS": str(config.max_conns).encode(),
            b"FCGI_MAX_REQS": str(config.max_reqs).encode(),
            b"FCGI_MPXS_CONNS": b"1",
        }
        values = tuple((name, known[name]) for name in event.names if name in known)
        self.write(self.codec.send(fastcgi.GetValuesResult(values)))

    def _on_unknown_type(self, event: fastcgi.UnknownRecordType) -> None:
        log.warning("unknown FastCGI record type %d from %s", event.record_type, self.peer)
        self.write(self.codec.send(fastcgi.UnknownType(event.record_type)))

    def _on_closed(self, event: fastcgi.ConnectionClosed) -> None:
        if self._requests:
            self._abort_all()
        self.close()

    _handlers: dict[type, Callable[[FastCGIProtocol, Any], None]] = {
        fastcgi.BeginRequest: _on_begin,
        fastcgi.Params: _on_params,
        fastcgi.Stdin: _on_stdin,
        fastcgi.StdinEnd: _on_stdin_end,
        fastcgi.AbortRequest: _on_abort,
        fastcgi.GetValues: _on_get_values,
        fastcgi.UnknownRecordType: _on_unknown_type,
        fastcgi.ConnectionClosed: _on_closed,
    }

    def _abort_all(self) -> None:
        for tracked in self._requests.values():
            if tracked.abort():
                log.info(
                    "front server went away; aborting %s",
                    tracked.request.script_path or "a request before dispatch",
                )

    # -- one request -----------------------------------------------------------

    async def _serve(self, request_id: int, tracked: _Tracked) -> None:
        request = tracked.request
        server = self.server
        sink = _Sink(self, request_id)
        head = False
        params: dict[bytes, bytes] = {}
        # metrics, access log, slow-request log: off, none of it is paid for
        observe = server.observing
        began = time.perf_counter() if observe else 0.0
        slow: asyncio.TimerHandle | None = None
        aborted = False
        try:
            params = dict(request.params)
            if from_monkey(params):
                request.params = monkey_params(request.params)
                params = dict(request.params)
                sink.monkey = True
            head = params.get(b"REQUEST_METHOD") == b"HEAD"
            answer = server.answer_builtin(params, head) if server.builtin_paths else None
            if answer is not None:
                observe = False  # the status page does not count itself
                await sink.write(answer)
            elif server.in_flight > server.config.max_reqs:
                log.warning("over max_reqs=%d requests in flight; 503", server.config.max_reqs)
                await sink.write(error_response(503, head=head))
            elif request.body_error is not None:
                # Known before the script runs: CONTENT_LENGTH over the
                # limit (413) or invalid (400), or all of a bad body came.
                status = request.body_error.status
                log.warning("%s; %d", request.body_error, status)
                await sink.write(error_response(status, head=head))
            else:
                try:
                    request.script_path = server.resolver.resolve(params)
                except ScriptRejected as exc:
                    log.info("%d: %s", exc.status, exc.reason)
                    await sink.write(error_response(exc.status, head=head))
                else:
                    if server.slow_request_threshold:
                        slow = server.loop().call_later(
                            server.slow_request_threshold, server.report_slow, request, began
                        )
                    if not observe:
                        params = {}  # unused from here: not kept while the script runs
                    await server.engine.run(request, sink)
        except asyncio.CancelledError:
            aborted = True
            if not self.closed and request_id in self.codec.active_request_ids:
                self._end(request_id)
            raise
        except ConnectionGone:
            aborted = True
            log.info("front server closed the connection during %s", request.script_path)
            return
        except Exception:
            log.exception("internal error serving %s", request.script_path or "a request")
            with contextlib.suppress(ConnectionGone):
                await sink.write(error_response(500, head=head))
        finally:
            self._requests.pop(request_id, None)
            # A cancelled task keeps its CancelledError, whose traceback
            # holds this frame, which holds `tracked`: without this the cycle
            # (and the request's Lua coroutine) waits for a full collection,
            # which the worker's GC settings make rare (bench/README.md).
            tracked.task = None
            if slow is not None:
                slow.cancel()
            if observe:
                server.request_done(params, request.script_path, sink, began, aborted)
        if not self.closed:
            self._end(request_id)

    def _end(self, request_id: int) -> None:
        self.write(self.codec.send(fastcgi.EndRequest(request_id)))
        self._requests.pop(request_id, None)
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.codec.should_close or (self.server.closing and self.idle):
            self.close_gracefully()
        elif self.server.draining:
            self.drain_when_idle()

    def drain_when_idle(self) -> None:
        """Draining: close once no request has come for DRAIN_IDLE_SECONDS."""
        if self.closed or self.lingering or not self.idle:
            return
        self.server.loop().call_later(DRAIN_IDLE_SECONDS, self._close_if_still_idle, self._begun)

    def _close_if_still_idle(self, begun: int) -> None:
        if self._begun == begun and self.idle:
            self.close_gracefully()

    @property
    def idle(self) -> bool:
        return not self._requests and not self.codec.active_request_ids


class Server:
    """Listeners, connections and request tasks of one worker."""

    def __init__(self, config: Config, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.resolver = ScriptResolver(config.root, config.extensions)
        self.client_filter = ClientFilter(config.allowed_clients)
        self.connections: set[FastCGIProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
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
            in_flight=self.in_flight - 1,  # not the status request itself
            served=self.requests_served,
            head=head,
        )

    def request_done(
        self, params: dict[bytes, bytes], script: str, sink: _Sink, began: float, aborted: bool
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
        traceback = getattr(self.engine, "traceback", None)
        where = traceback(request) if traceback is not None else None
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

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = self.loop().create_task(coro)
        self.tasks.add(task)
        if len(self.tasks) > self._peak_in_flight:
            self._peak_in_flight = len(self.tasks)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
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
        collect_lua = getattr(self.engine, "collect_garbage", None)
        if collect_lua is not None:
            collect_lua()  # first: the Lua heap's garbage goes back to malloc
        gc.collect()
        if _malloc_trim is not None:
            _malloc_trim(0)
        log.debug("idle after a burst: collected and trimmed the heap")

    def _protocol(self) -> FastCGIProtocol:
        return FastCGIProtocol(self)

    async def start(self, sockets: Sequence[socket.socket] | None = None) -> None:
        """Listen on ``config.listen``, or on sockets a prefork master bound."""
        loop = self._loop = asyncio.get_running_loop()
        owned = sockets is None
        if sockets is None:
            sockets = bind_all(self.config)
        for sock in sockets:
            if sock.family == socket.AF_UNIX:
                server = await loop.create_unix_server(
                    self._protocol, sock=sock, backlog=self.config.backlog
                )
                if owned:
                    self._unix_paths.append(sock.getsockname())
            else:
                server = await loop.create_server(
                    self._protocol, sock=sock, backlog=self.config.backlog
                )
            self._servers.append(server)
            log.info("listening on %s", describe_socket(sock))

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
        for server in self._servers:
            await server.wait_closed()


def bind_all(config: Config) -> list[socket.socket]:
    """Bind every ``listen`` address once (a prefork master shares them)."""
    sockets = []
    try:
        for address in config.listen:
            kind, where = parse_listen(address)
            if kind == "unix":
                owner, group = config.socket_owner, config.socket_group
                sockets.append(bind_unix(str(where), config.socket_mode, owner, group))
            else:
                sockets.append(bind_tcp(kind, int(where)))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    for sock in sockets:
        sock.listen(config.backlog)
        sock.setblocking(False)
    return sockets


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind {host}:{port}: {exc.strerror}") from exc
    return sock


def describe_socket(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_unix(path: str, mode: int, owner: str = "", group: str = "") -> socket.socket:
    """Bind a Unix socket, replacing a stale socket file but nothing else;
    ``owner``/``group`` (names or ids, "" to keep) are given to the file."""
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        if owner or group:
            os.chown(path, _user_id(owner), _group_id(group))
    except (OSError, KeyError) as exc:
        sock.close()
        if isinstance(exc, KeyError):
            raise OSError(errno.EINVAL, f"cannot chown {path}: unknown user or group") from exc
        raise
    return sock


# How long a socket file that still answers may take to go stale: the
# workers of a master killed with SIGKILL notice within a heartbeat
# (workers.MasterWatch) and then close their listening sockets, so a
# supervisor that restarts fcgi-lua at once waits for them, not fails.
STALE_SOCKET_WAIT = 3.0


def remove_stale_socket(path: str, wait: float | None = None) -> None:
    """Unlink the socket file at ``path`` if nobody listens on it (left by
    a process that died without removing it, e.g. a master killed with
    SIGKILL); anything else stays.

    Whether anybody listens is asked by connecting: refused means stale.
    A socket that accepts for ``wait`` seconds is another server's:
    OSError(EADDRINUSE), never an unlink (that would steal its address
    and leave it serving nobody).  So is one that cannot be probed (no
    permission, a full backlog).  A file that is not a socket is left for
    bind() to refuse."""
    deadline = time.monotonic() + (STALE_SOCKET_WAIT if wait is None else wait)
    while True:
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                return
        except FileNotFoundError:
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OSError(
                errno.EADDRINUSE,
                f"cannot bind {path}: a socket is there and cannot be probed ({exc}); "
                "is another server listening on it?",
            ) from exc
        finally:
            probe.close()
        if time.monotonic() >= deadline:
            raise OSError(
                errno.EADDRINUSE, f"cannot bind {path}: another process is listening on it"
            )
        time.sleep(0.1)


def _user_id(owner: str) -> int:
    if not owner:
        return -1
    return int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid


def _group_id(group: str) -> int:
    if not group:
        return -1
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
