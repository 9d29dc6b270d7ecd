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
from typing import TYPE_CHECKING

from fcgi_lua import errorlog, fastcgi
from fcgi_lua.flow import ConnectionGone
from fcgi_lua.http import error_response
from fcgi_lua.quirks import from_monkey, monkey_params, without_content_length
from fcgi_lua.request import Request
from fcgi_lua.scripts import ScriptRejected

if TYPE_CHECKING:
    from fcgi_lua.protocol import FastCGIProtocol

log = logging.getLogger("fcgi_lua.server")


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
        flow = conn.flow
        if flow is not None and flow.write_paused and not await flow.drain():
            raise ConnectionGone("front server closed the connection")

    def stderr(self, data: bytes) -> None:
        conn = self._conn
        if not conn.closed:
            data = errorlog.clip_bytes(data, conn.server.config.log_max_line)
            conn.write(conn.codec.send(fastcgi.Stderr(self._request_id, data)))


class Responder:
    """One request on its connection: its task, its abort, its cycle (``run``)."""

    __slots__ = ("_conn", "aborted", "request", "request_id", "task")

    def __init__(self, conn: FastCGIProtocol, request_id: int, request: Request) -> None:
        self._conn = conn
        self.request_id = request_id
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

    async def run(self) -> None:
        conn = self._conn
        request_id = self.request_id
        request = self.request
        server = conn.server
        sink = Sink(conn, request_id)
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
            if not conn.closed and request_id in conn.codec.active_request_ids:
                conn.end_request(request_id)
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
            conn.forget(request_id)
            # A cancelled task keeps its CancelledError, whose traceback
            # holds this frame, which holds `self`: without this the cycle
            # (and the request's Lua coroutine) waits for a full collection,
            # which the worker's GC settings make rare (bench/README.md).
            self.task = None
            if slow is not None:
                slow.cancel()
            if observe:
                server.request_done(params, request.script_path, sink, began, aborted)
        if not conn.closed:
            conn.end_request(request_id)
