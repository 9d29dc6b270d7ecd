"""One request's cycle: from its params to its END_REQUEST.

Owns what happens to one request once its PARAMS stream ended: the
built-in pages (status, ping), the refusals known before any script runs
(503 over max_reqs, 413/400 for the body, 404/403 from the script
resolver), running the script through ``engine.run(request, sink)``, the
500 for an internal error, the abort (the front server's ABORT_REQUEST or
close), and the metrics and access log of the request.  ``Sink`` is where
its output goes: STDOUT and STDERR records on its connection.

It must never read from the connection, close it, or decide about other
requests: the connection (``fcgi_lua.protocol``) feeds it and ends it.
It knows nothing of Lua beyond ``engine.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from fcgi_lua import errorlog, fastcgi
from fcgi_lua.flow import ConnectionGone, FlowControl
from fcgi_lua.http import error_response
from fcgi_lua.quirks import from_monkey, monkey_params, without_content_length
from fcgi_lua.request import Request
from fcgi_lua.scripts import ScriptRejected

if TYPE_CHECKING:
    from fcgi_lua.protocol import FastCGIProtocol

log = logging.getLogger("fcgi_lua.server")

# Output larger than this is handed to the connection in slices of it, each
# once the front server has read the one before (write_buffer_high's
# default): a client that stops reading pins one slice, not the response.
OUTPUT_SLICE = 256 * 1024


class Sink:
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

    def write_nowait(self, data: bytes) -> Awaitable[None] | None:
        """Write ``data`` now; None, or (past the connection's high-water
        mark) what to await until the front server has read enough.
        Raises ConnectionGone once the front server has closed."""
        conn = self._conn
        if conn.closed:
            raise ConnectionGone("front server closed the connection")
        if not self.first:
            if self.monkey:
                data = without_content_length(data)
            self.first = data[:16]
        self.sent += len(data)
        flow = conn.flow
        if len(data) > OUTPUT_SLICE and flow is not None:
            piece = data[:OUTPUT_SLICE]
            conn.write(conn.codec.send(fastcgi.Stdout(self._request_id, piece)))
            return self._write_rest(data, flow)
        conn.write(conn.codec.send(fastcgi.Stdout(self._request_id, data)))
        if flow is not None and flow.write_paused:
            return _drained(flow)
        return None

    async def write(self, data: bytes) -> None:
        waiting = self.write_nowait(data)
        if waiting is not None:
            await waiting

    async def _write_rest(self, data: bytes, flow: FlowControl) -> None:
        """A large write goes out a slice at a time, each once the front
        server drained the last: the transport never holds all of it."""
        conn = self._conn
        view = memoryview(data)
        for start in range(OUTPUT_SLICE, len(data), OUTPUT_SLICE):
            if flow.write_paused:
                await _drained(flow)
            if conn.closed:
                raise ConnectionGone("front server closed the connection")
            piece = bytes(view[start : start + OUTPUT_SLICE])
            conn.write(conn.codec.send(fastcgi.Stdout(self._request_id, piece)))
        if flow.write_paused:
            await _drained(flow)

    def stderr(self, data: bytes) -> None:
        conn = self._conn
        if not conn.closed:
            data = errorlog.clip_bytes(data, conn.server.config.log_max_line)
            conn.write(conn.codec.send(fastcgi.Stderr(self._request_id, data)))


async def _drained(flow: FlowControl) -> None:
    if not await flow.drain():
        raise ConnectionGone("front server closed the connection")


class Responder:
    """One request on its connection: its cycle (``start``), the task that
    finishes it if it waits, its abort."""

    __slots__ = (
        "_conn",
        "aborted",
        "began",
        "observe",
        "params",
        "request",
        "request_id",
        "sink",
        "slow",
        "task",
        "waiting",
    )

    def __init__(self, conn: FastCGIProtocol, request_id: int, request: Request) -> None:
        self._conn = conn
        self.request_id = request_id
        self.request = request
        self.sink = Sink(conn, request_id)
        self.task: asyncio.Task[None] | None = None
        self.waiting = False  # its task has begun
        # Cancelled once for the front server's abort: a script with an
        # ngx.on_abort handler goes on after it, and must not see the same
        # abort again (EOF, then connection_lost).
        self.aborted = False
        # metrics, access log, slow-request log: off, none of it is paid for
        self.observe = False
        self.began = 0.0
        self.params: dict[bytes, bytes] = {}
        self.slow: asyncio.TimerHandle | None = None

    def abort(self) -> bool:
        """Cancel the request's task for an abort; False if already done
        (or if it never waited: then it is over already)."""
        if self.task is None or self.task.done() or self.aborted:
            return False
        self.aborted = True
        if self.waiting:
            self.task.cancel()
        # else its first step has not run: it cancels itself there, so that
        # the script's wait is what the cancellation interrupts
        return True

    def start(self) -> None:
        """Run the request as far as it goes without waiting: most requests
        end here, with no task and no loop iteration of their own.  One
        that waits (a socket, a sleep, its body, a full connection) goes on
        in a task (``_finish_waiting``)."""
        conn = self._conn
        server = conn.server
        self.observe = observe = server.observing
        if observe:
            self.began = time.perf_counter()
        try:
            rest = self._dispatch()
        except ConnectionGone:
            log.info("front server closed the connection during %s", self.request.script_path)
            self.request.close()
            self._done(aborted=True)
            server.served()
            return
        except Exception:
            log.exception("internal error serving %s", self.request.script_path or "a request")
            rest = self._internal_error()
        if rest is None:
            self.request.close()
            self._done(aborted=False)
            server.served()
            if not conn.closed:
                conn.end_request(self.request_id)
            return
        self.task = task = server.spawn(self._finish_waiting(rest))
        # Temp files go when the task ends, however it ends (even cancelled
        # before it ever ran, when its own finally clauses never run).
        request = self.request
        task.add_done_callback(lambda _: request.close())

    def _dispatch(self) -> Awaitable[None] | None:
        """The answer: a built-in page, a refusal, or the script (run up to
        its first wait).  None when it is written; else what finishes it."""
        request = self.request
        server = self._conn.server
        sink = self.sink
        params = self.params = request.by_name
        if from_monkey(params):
            request.params = monkey_params(request.params)
            params = self.params = request.by_name = dict(reversed(request.params))
            sink.monkey = True
        head = request.method == b"HEAD"
        answer = server.answer_builtin(params, head) if server.builtin_paths else None
        if answer is not None:
            self.observe = False  # the status page does not count itself
            return sink.write_nowait(answer)
        if server.in_flight >= server.config.max_reqs:  # the tasks: requests that wait
            log.warning("over max_reqs=%d requests in flight; 503", server.config.max_reqs)
            return sink.write_nowait(error_response(503, head=head))
        if request.body_error is not None:
            # Known before the script runs: CONTENT_LENGTH over the limit
            # (413) or invalid (400), or all of a bad body came.
            status = request.body_error.status
            log.warning("%s; %d", request.body_error, status)
            return sink.write_nowait(error_response(status, head=head))
        try:
            request.script_path = server.resolver.resolve(params)
        except ScriptRejected as exc:
            log.info("%d: %s", exc.status, exc.reason)
            return sink.write_nowait(error_response(exc.status, head=head))
        if server.slow_request_threshold:
            self.slow = server.loop().call_later(
                server.slow_request_threshold, server.report_slow, request, self.began
            )
        return server.engine.start(request, sink)

    def _internal_error(self) -> Awaitable[None] | None:
        """A 500 for a bug of ours (a request whose output began just ends)."""
        try:
            head = self.request.method == b"HEAD"
            return self.sink.write_nowait(error_response(500, head=head))
        except ConnectionGone:
            return None

    async def _finish_waiting(self, rest: Awaitable[None]) -> None:
        conn = self._conn
        request_id = self.request_id
        aborted = False
        self.waiting = True
        if self.aborted and self.task is not None:
            self.task.cancel()  # aborted before this ran: the first wait raises
        try:
            await rest
        except asyncio.CancelledError:
            aborted = True
            if not conn.closed and request_id in conn.codec.active_request_ids:
                conn.end_request(request_id)
            raise
        except ConnectionGone:
            aborted = True
            log.info("front server closed the connection during %s", self.request.script_path)
            return
        except Exception:
            log.exception("internal error serving %s", self.request.script_path or "a request")
            with contextlib.suppress(ConnectionGone):
                await self.sink.write(error_response(500, head=self.request.method == b"HEAD"))
        finally:
            # A cancelled task keeps its CancelledError, whose traceback
            # holds this frame, which holds `self`: without this the cycle
            # (and the request's Lua coroutine) waits for a full collection,
            # which the worker's GC settings make rare (bench/README.md).
            self.task = None
            self._done(aborted)
        if not conn.closed:
            conn.end_request(request_id)

    def _done(self, aborted: bool) -> None:
        conn = self._conn
        conn.forget(self.request_id)
        if self.slow is not None:
            self.slow.cancel()
            self.slow = None
        if self.observe:
            server = conn.server
            server.request_done(
                self.params, self.request.script_path, self.sink, self.began, aborted
            )
