"""One front-server connection: bytes in, codec events, responders out.

Owns an ``asyncio.Protocol`` for one connection: it feeds the bytes read to
the sans-IO codec (``fcgi_lua.fastcgi``), starts a ``Responder`` task for
each request whose params ended and feeds it its body, answers the
management records, writes what the responders produce (corked: one
send() per loop iteration), and closes the connection when FastCGI says so
or the worker drains.  Its back-pressure is ``fcgi_lua.flow``, the front
servers' deviations are ``fcgi_lua.quirks``.

It must never run a script, decide a response, or encode a record itself
(the codec does), and never block: everything here runs on the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from fcgi_lua import fastcgi
from fcgi_lua.flow import FlowControl
from fcgi_lua.quirks import protocol_error_answer, send_with_fin
from fcgi_lua.request import Request
from fcgi_lua.responder import Responder

if TYPE_CHECKING:
    from fcgi_lua.server import Server

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


class FastCGIProtocol(asyncio.Protocol):
    """One front-server connection; may carry several multiplexed requests.

    Setting one up is on the path of every request a front server sends
    without fastcgi_keep_conn (or past its keepalive pool): it costs one
    object, its codec and its FlowControl, and no syscall of its own.
    """

    __slots__ = (
        "_begun",
        "_corked",
        "_corked_size",
        "_input_open",
        "_linger_timer",
        "_ready",
        "_received",
        "_requests",
        "_seen",
        "_unsent",
        "closed",
        "codec",
        "family",
        "flow",
        "lingering",
        "quiet_since",
        "server",
        "transport",
    )

    def __init__(self, server: Server, family: int = 0) -> None:
        self.server = server
        self.family = family  # its listener's (AF_UNIX, AF_INET...); 0: not known
        self.codec = fastcgi.Connection(limits=server.codec_limits)
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.closed = False
        # Our last answer is sent: whatever still arrives is dropped.
        self.lingering = False
        self._linger_timer: asyncio.TimerHandle | None = None
        self._requests: dict[int, Responder] = {}
        self._ready: list[Responder] = []  # params ended in this read
        self._begun = 0  # requests begun on this connection (drain_when_idle)
        # Requests begun whose STDIN has not ended: the peer may still send
        # (see finish).
        self._input_open = 0
        self._corked: list[bytes] = []
        self._corked_size = 0
        # For the timeouts (Server.sweep, once a second): data_received
        # counts, the sweep notes when the count last moved.  Nothing else
        # is paid per request.
        self._received = 0
        self._seen = 0
        self.quiet_since = server.sweep_time
        self._unsent = 0  # the write buffer's size at the last sweep

    @property
    def peer(self) -> str:
        """For log lines only: looked up when one is written (a syscall)."""
        transport = self.transport
        try:
            peer = transport.get_extra_info("peername") if transport is not None else None
        except Exception:  # a closed transport has no socket left
            return "?"
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix"

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.flow = FlowControl(transport, self.server.loop)
        transport.set_write_buffer_limits(high=self.server.config.write_buffer_high)
        clients = self.server.client_filter
        if clients:
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and not clients.allows(peer[0]):
                log.warning("connection from %s refused: not in allowed_clients", self.peer)
                self.closed = True
                transport.abort()
                return
        server = self.server
        if len(server.connections) >= server.max_conns and not server.make_room():
            log.warning(
                "connection from %s refused: %d connections open (max_conns), none idle",
                self.peer,
                len(server.connections),
            )
            self.closed = True
            transport.close()
            return
        server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # after our last END_REQUEST: read and drop
        self._received += 1
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
        if self._linger_timer is not None:
            self._linger_timer.cancel()  # not kept, with this object, for LINGER_SECONDS
            self._linger_timer = None
        for request_id, responder in list(self._requests.items()):
            if responder.abort():
                log.info(
                    "front server closed the connection; aborting request %d (%s)",
                    request_id,
                    responder.request.script_path or "before dispatch",
                )
            responder.request.end_body()
        self._requests.clear()
        if self.flow is not None:
            self.flow.connection_lost()

    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow.pause_writing()

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow.resume_writing()

    # -- output ---------------------------------------------------------------

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

    # -- closing ----------------------------------------------------------------

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
        if not send_with_fin(transport, b"".join(corked), self.family):
            if corked:
                transport.write(b"".join(corked))
            transport.write_eof()
        if not transport.is_reading():
            transport.resume_reading()
        self._linger_timer = self.server.loop().call_later(LINGER_SECONDS, self.close)

    def finish(self) -> None:
        """Close after our last request's END_REQUEST, the cheap way when
        nothing more can come: every request's STDIN ended (nginx without
        fastcgi_keep_conn).  The last bytes and the FIN still leave together
        (docs/monkey.md, quirk 15), and the socket closes at once: no
        read of the peer's EOF, no timer.  Otherwise (a request ended
        before its STDIN did, Monkey's bodyless requests, libfcgi's late
        empty STDIN) close_gracefully lingers, since closing with unread
        bytes would reset the connection.
        """
        transport = self.transport
        if self._input_open or not self.idle:
            self.close_gracefully()
            return
        if transport is None or self.closed or self.lingering:
            return
        self.lingering = True
        corked, self._corked = self._corked, []
        self._corked_size = 0
        data = b"".join(corked) if len(corked) != 1 else corked[0]
        sent = transport.can_write_eof() and send_with_fin(transport, data, self.family)
        if not sent and data:
            transport.write(data)
        transport.close()

    def end_request(self, request_id: int) -> None:
        """Our END_REQUEST for ``request_id``; the connection closes if
        FastCGI or a drain says so."""
        self.write(self.codec.send(fastcgi.EndRequest(request_id)))
        self._requests.pop(request_id, None)
        self._maybe_close()

    def forget(self, request_id: int) -> None:
        """The request's responder is done (its END_REQUEST may follow)."""
        self._requests.pop(request_id, None)

    def _maybe_close(self) -> None:
        if self.codec.should_close:
            self.finish()
        elif self.server.closing and self.idle:
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

    # -- timeouts (Server.sweep) ---------------------------------------------

    def quiet_for(self, now: float) -> float:
        """Seconds since this connection last received bytes, as seen by the
        sweeps (to a sweep's interval)."""
        if self._received != self._seen:
            self._seen = self._received
            self.quiet_since = now
        return now - self.quiet_since

    @property
    def waiting_for_input(self) -> bool:
        """A request's params or body is incomplete while we read: the peer
        owes us records (not a body the script has not read yet, for
        which we stopped reading ourselves)."""
        flow = self.flow
        if flow is not None and flow.body_pauses:
            return False
        requests = self._requests
        for request_id in self.codec.active_request_ids:
            responder = requests.get(request_id)
            if responder is None or not responder.request.body_complete:
                return True
        return False

    def check_timeouts(self, now: float) -> None:
        """Close this connection if it was idle, stalled or not read from
        for longer than its timeouts (called once a sweep)."""
        if self.closed or self.lingering or self.transport is None:
            return
        config = self.server.config
        quiet = self.quiet_for(now)
        flow = self.flow
        if flow is not None and flow.write_paused:
            unsent = self.transport.get_write_buffer_size()
            if unsent < self._unsent or not self._unsent:
                self._unsent = unsent
                self.quiet_since = now  # the peer reads: not stalled
                return
            if config.write_timeout and quiet >= config.write_timeout:
                log.warning(
                    "front server %s read none of %d bytes of responses for %.0f s "
                    "(write_timeout); closing the connection",
                    self.peer,
                    unsent,
                    quiet,
                )
                self.transport.abort()  # connection_lost aborts its requests
            return
        self._unsent = 0
        if self.idle:
            if config.idle_timeout and quiet >= config.idle_timeout:
                log.debug("closing %s: idle for %.0f s (idle_timeout)", self.peer, quiet)
                self.close_gracefully()
        elif not self.waiting_for_input:
            self.quiet_since = now  # a script runs: its time is request_timeout's
        elif config.read_timeout and quiet >= config.read_timeout:
            log.warning(
                "front server %s sent nothing for %.0f s in the middle of a request "
                "(read_timeout); closing the connection",
                self.peer,
                quiet,
            )
            self.transport.abort()  # connection_lost aborts its requests

    # -- events --------------------------------------------------------------

    def _process(self) -> None:
        self._decode()
        if self._ready:
            self.server.start_soon(self)

    def start_ready(self) -> None:
        """Start the requests whose params ended (Server.start_soon)."""
        ready, self._ready = self._ready, []
        requests = self._requests
        for responder in ready:
            if not self.closed and requests.get(responder.request_id) is responder:
                responder.start()
            else:  # aborted, or the connection went, before it started
                responder.request.close()

    def _decode(self) -> None:
        codec = self.codec
        while not self.closed:
            try:
                event = codec.next_event()
            except fastcgi.RemoteProtocolError as exc:
                log.warning(
                    "FastCGI protocol error from %s: %s; closing connection", self.peer, exc
                )
                self._abort_all()
                answer = protocol_error_answer(exc, codec.active_request_ids, self._requests.keys())
                if answer is not None:
                    # The peer can still be told why (e.g. 431 for oversized params).
                    request_id, response = answer
                    self.write(codec.send(fastcgi.Stdout(request_id, response)))
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
        self._input_open += 1
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
        request.body.flow = self.flow
        responder = Responder(self, event.request_id, request)
        self._requests[event.request_id] = responder
        self._begun += 1
        # It starts once this loop iteration's reads are done (start_ready):
        # a body or an abort that came with the params is seen first.
        self._ready.append(responder)

    def _on_stdin(self, event: fastcgi.Stdin) -> None:
        responder = self._requests.get(event.request_id)
        if responder is not None:
            responder.request.feed_body(event.data)

    def _on_stdin_end(self, event: fastcgi.StdinEnd) -> None:
        self._input_open -= 1
        responder = self._requests.get(event.request_id)
        if responder is not None:
            responder.request.end_body()

    def _on_abort(self, event: fastcgi.AbortRequest) -> None:
        responder = self._requests.get(event.request_id)
        if responder is None or responder.task is None:
            # Aborted before its params ended: nothing runs yet.
            if event.request_id in self.codec.active_request_ids:
                self.end_request(event.request_id)
            return
        log.info(
            "ABORT_REQUEST for request %d (%s)", event.request_id, responder.request.script_path
        )
        responder.abort()

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
        for responder in self._requests.values():
            if responder.abort():
                log.info(
                    "front server went away; aborting %s",
                    responder.request.script_path or "a request before dispatch",
                )
