"""Connection: one FastCGI connection, seen from the application side.

Owns the receive buffer, the set of active requests and their states.
Bytes go in with ``receive_data``, events come out of ``next_event``;
events go in to ``send`` and bytes come out.  It never touches a socket
(h11's ``Connection`` is the model).
"""

from __future__ import annotations

from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    NEED_DATA,
    AbortRequest,
    BeginRequest,
    ConnectionClosed,
    EndRequest,
    GetValues,
    GetValuesResult,
    NeedData,
    Params,
    ReceivedEvent,
    SentEvent,
    Stderr,
    Stdin,
    StdinEnd,
    Stdout,
    UnknownRecordType,
    UnknownType,
)
from ._limits import Limits
from ._records import (
    BEGIN_REQUEST_BODY,
    HEADER,
    PairDecoder,
    encode_end_request,
    encode_pairs,
    encode_record,
    encode_stream,
    encode_unknown_type,
)
from ._state import (
    INPUT_ERRORS,
    INPUT_STATE_WORDS,
    INPUT_TRANSITIONS,
    OUTPUT_TRANSITIONS,
    RECORD_ROUTES,
    STDERR_NEEDS_CLOSE,
    STDOUT_NEEDS_CLOSE,
    InputAction,
    InputState,
    OutputState,
    Route,
)
from .constants import (
    FCGI_DATA,
    FCGI_GET_VALUES_RESULT,
    FCGI_STDERR,
    FCGI_STDOUT,
    FILTER,
    HEADER_LEN,
    KEEP_CONN,
    MAX_CONTENT_LENGTH,
    NULL_REQUEST_ID,
    RECORD_TYPE_NAMES,
    REQUEST_COMPLETE,
    ROLE_NAMES,
    VERSION_1,
)

_BEGIN_REQUEST_BODY_LEN = BEGIN_REQUEST_BODY.size
_MAX_APP_STATUS = 0xFFFFFFFF


def _type_name(record_type: int) -> str:
    return RECORD_TYPE_NAMES.get(record_type, f"type {record_type}")


class _Request:
    """What the connection remembers about one active request."""

    __slots__ = ("input", "keep_conn", "pairs", "request_id", "role", "stderr", "stdout")

    def __init__(self, request_id: int, role: int, keep_conn: bool, pairs: PairDecoder) -> None:
        self.request_id = request_id
        self.role = role
        self.keep_conn = keep_conn
        self.input = InputState.PARAMS
        self.pairs: PairDecoder | None = pairs
        self.stdout = OutputState.UNUSED
        self.stderr = OutputState.UNUSED


class Connection:
    """The sans-IO FastCGI 1.0 codec for one connection (application side).

    Multiplexing is supported: any number of requests may be active at
    once.  After ``next_event`` raised RemoteProtocolError, it raises again
    on every call; ``send`` still works, so the server can answer the
    active requests (see ``RemoteProtocolError.http_status``) before it
    closes the connection.
    """

    def __init__(self, *, limits: Limits | None = None) -> None:
        self.limits = limits if limits is not None else Limits()
        # Receive buffer: unread bytes are self._buffer[self._position:],
        # then the chunks received since.  Chunks are joined only once they
        # hold the rest of the current record, so a record that arrives in
        # many small reads is copied a bounded number of times, and one big
        # read of many records is parsed in place without any copy.
        self._buffer = b""
        self._position = 0
        self._chunks: list[bytes] = []
        self._chunks_size = 0
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._internal_error: Exception | None = None
        self._requests: dict[int, _Request] = {}
        # Requests we ended: records still in flight for them are dropped
        # until the id is begun again.  At most 65535 ids, so bounded.
        self._ended: set[int] = set()
        self._should_close = False

    # ---- properties ---------------------------------------------------------

    @property
    def active_request_ids(self) -> frozenset[int]:
        """Requests begun and not yet ended with ``EndRequest``."""
        return frozenset(self._requests)

    @property
    def should_close(self) -> bool:
        """True once we ended a request begun without FCGI_KEEP_CONN."""
        return self._should_close

    # ---- receiving ----------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes read from the peer; ``b""`` means it closed (EOF)."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("receive_data() called with data after EOF")
        if type(data) is not bytes:
            data = bytes(data)  # never keep a reference to a mutable buffer
        if not self._chunks and self._position == len(self._buffer):
            self._buffer = data
            self._position = 0
        else:
            self._chunks.append(data)
            self._chunks_size += len(data)

    def next_event(self) -> ReceivedEvent | NeedData:
        """The next event, or NEED_DATA; RemoteProtocolError on garbage.

        Every failure is latched, as h11 does: after garbage from the peer
        every call raises RemoteProtocolError again; after any other
        exception (a bug of ours, caught half-way through a record) every
        call raises LocalProtocolError, never an event from a buffer in an
        unknown state."""
        if self._error is not None:
            again = RemoteProtocolError(
                f"connection already failed: {self._error}",
                request_id=self._error.request_id,
                record_type=self._error.record_type,
            )
            # not "raise ... from": mypyc-compiled code drops the cause
            again.__cause__ = self._error
            raise again
        if self._internal_error is not None:
            broken = LocalProtocolError(
                f"connection already failed on an internal error: {self._internal_error!r}"
            )
            broken.__cause__ = self._internal_error
            raise broken
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc
            raise
        except Exception as exc:
            self._internal_error = exc
            raise

    def _next_event(self) -> ReceivedEvent | NeedData:
        while True:
            buffer = self._buffer
            position = self._position
            if len(buffer) - position < HEADER_LEN:
                if not self._gather(HEADER_LEN):
                    return self._starved()
                buffer = self._buffer
                position = 0
            version, record_type, request_id, content_length, padding_length = HEADER.unpack_from(
                buffer, position
            )
            if version != VERSION_1:
                raise RemoteProtocolError(
                    f"unsupported FastCGI version {version} (is the peer speaking FastCGI?)",
                    request_id=request_id,
                    record_type=record_type,
                )
            content_start = position + HEADER_LEN
            content_end = content_start + content_length
            record_end = content_end + padding_length
            if record_end > len(buffer):
                if not self._gather(record_end - position):
                    return self._starved()
                buffer = self._buffer
                content_start = HEADER_LEN
                content_end = content_start + content_length
                record_end = content_end + padding_length
            self._position = record_end
            event = self._handle_record(record_type, request_id, buffer, content_start, content_end)
            if event is not None:
                return event

    def _gather(self, size: int) -> bool:
        """Make ``size`` unread bytes contiguous at the buffer start; False
        if fewer have been received."""
        unread = len(self._buffer) - self._position
        if unread + self._chunks_size < size:
            return False
        chunks: list[bytes | memoryview] = [memoryview(self._buffer)[self._position :]]
        chunks.extend(self._chunks)
        self._buffer = b"".join(chunks)
        self._position = 0
        self._chunks.clear()
        self._chunks_size = 0
        return True

    def _starved(self) -> ReceivedEvent | NeedData:
        if not self._eof:
            return NEED_DATA
        unread = len(self._buffer) - self._position + self._chunks_size
        if unread:
            raise RemoteProtocolError(
                f"truncated record: connection closed with {unread} bytes of an incomplete record"
            )
        return ConnectionClosed()

    def _handle_record(
        self, record_type: int, request_id: int, buffer: bytes, start: int, end: int
    ) -> ReceivedEvent | None:
        route = RECORD_ROUTES.get(record_type)
        if route is Route.REQUEST:
            return self._request_record(record_type, request_id, buffer, start, end)
        if route is Route.BEGIN:
            return self._begin_request(request_id, buffer, start, end)
        if route is Route.GET_VALUES:
            if request_id != NULL_REQUEST_ID:
                raise RemoteProtocolError(
                    f"management record GET_VALUES with request id {request_id} (must be 0)",
                    request_id=request_id,
                    record_type=record_type,
                )
            decoder = PairDecoder(
                NULL_REQUEST_ID, self.limits.max_params_bytes, self.limits.max_params_count
            )
            decoder.feed(buffer, start, end)
            return GetValues(tuple(name for name, _ in decoder.finish()))
        if route is Route.OUTBOUND_ONLY:
            raise RemoteProtocolError(
                f"received a {_type_name(record_type)} record, which only an "
                f"application sends (is the peer another application?)",
                request_id=request_id,
                record_type=record_type,
            )
        # Unknown type.  The spec defines UNKNOWN_TYPE for management
        # records (id 0); we answer an unknown type on a request id the same
        # way rather than kill the connection, so a newer peer degrades.
        return UnknownRecordType(record_type)

    def _begin_request(self, request_id: int, buffer: bytes, start: int, end: int) -> BeginRequest:
        if request_id == NULL_REQUEST_ID:
            raise RemoteProtocolError(
                "BEGIN_REQUEST with request id 0 (reserved for management records)",
                request_id=request_id,
                record_type=1,
            )
        if end - start != _BEGIN_REQUEST_BODY_LEN:
            raise RemoteProtocolError(
                f"BEGIN_REQUEST with a {end - start}-byte body (must be 8)",
                request_id=request_id,
                record_type=1,
            )
        if request_id in self._requests:
            raise RemoteProtocolError(
                f"BEGIN_REQUEST for request {request_id}, which is already active",
                request_id=request_id,
                record_type=1,
            )
        role, flags = BEGIN_REQUEST_BODY.unpack_from(buffer, start)
        keep_conn = bool(flags & KEEP_CONN)
        limits = self.limits
        self._requests[request_id] = _Request(
            request_id,
            role,
            keep_conn,
            PairDecoder(request_id, limits.max_params_bytes, limits.max_params_count),
        )
        self._ended.discard(request_id)
        return BeginRequest(request_id, role, keep_conn)

    def _request_record(
        self, record_type: int, request_id: int, buffer: bytes, start: int, end: int
    ) -> ReceivedEvent | None:
        request = self._requests.get(request_id)
        if request is None:
            if request_id in self._ended:
                return None  # still in flight when we ended it
            if request_id == NULL_REQUEST_ID:
                message = (
                    f"{_type_name(record_type)} record with request id 0 "
                    f"(reserved for management records)"
                )
            else:
                message = f"{_type_name(record_type)} record for unknown request id {request_id}"
            raise RemoteProtocolError(message, request_id=request_id, record_type=record_type)
        transition = INPUT_TRANSITIONS.get((request.input, record_type, end > start))
        if transition is None:
            if record_type == FCGI_DATA and request.role == FILTER:
                return None  # FILTER is not served; the server rejects it
            raise self._input_error(request, record_type)
        request.input, action = transition
        if action is InputAction.STDIN_DATA:
            return Stdin(request_id, buffer[start:end])
        if action is InputAction.FEED_PARAMS:
            assert request.pairs is not None
            request.pairs.feed(buffer, start, end)
            return None
        if action is InputAction.END_PARAMS:
            assert request.pairs is not None
            params = request.pairs.finish()
            request.pairs = None
            return Params(request_id, params)
        if action is InputAction.STDIN_END:
            return StdinEnd(request_id)
        if action is InputAction.ABORT:
            request.pairs = None
            return AbortRequest(request_id)
        return None  # InputAction.DROP

    def _input_error(self, request: _Request, record_type: int) -> RemoteProtocolError:
        message = INPUT_ERRORS.get((request.input, record_type))
        if message is None:
            if record_type == FCGI_DATA:
                role = ROLE_NAMES.get(request.role, f"role {request.role}")
                message = f"DATA record on a {role} request (only FILTER uses DATA)"
            else:
                state = INPUT_STATE_WORDS[request.input]
                message = f"unexpected {_type_name(record_type)} record {state}"
        return RemoteProtocolError(
            f"{message} (request {request.request_id})",
            request_id=request.request_id,
            record_type=record_type,
            http_status=400,
        )

    # ---- sending ------------------------------------------------------------

    def send(self, event: SentEvent | ReceivedEvent) -> bytes:
        """The bytes that carry ``event``; LocalProtocolError on misuse
        (a received event is typed in, so that compiled code reports it as
        misuse too rather than as a TypeError)."""
        event_type = type(event)
        if event_type is Stdout:
            assert isinstance(event, Stdout)
            request = self._active(event.request_id, "Stdout")
            request.stdout = _next_output(request.stdout, event, "stdout")
            return encode_stream(FCGI_STDOUT, event.request_id, event.data)
        if event_type is EndRequest:
            assert isinstance(event, EndRequest)
            return self._end_request(event)
        if event_type is Stderr:
            assert isinstance(event, Stderr)
            request = self._active(event.request_id, "Stderr")
            request.stderr = _next_output(request.stderr, event, "stderr")
            return encode_stream(FCGI_STDERR, event.request_id, event.data)
        if event_type is GetValuesResult:
            assert isinstance(event, GetValuesResult)
            return self._get_values_result(event)
        if event_type is UnknownType:
            assert isinstance(event, UnknownType)
            if not 0 <= event.record_type <= 0xFF:
                raise LocalProtocolError(
                    f"UnknownType record type {event.record_type} not in 0..255"
                )
            return encode_unknown_type(event.record_type)
        raise LocalProtocolError(f"cannot send {event!r}: not an event the application sends")

    def _active(self, request_id: int, what: str) -> _Request:
        request = self._requests.get(request_id)
        if request is None:
            state = "already ended" if request_id in self._ended else "never begun"
            raise LocalProtocolError(
                f"{what} for request {request_id}, which is not active ({state})",
                request_id=request_id,
            )
        return request

    def _end_request(self, event: EndRequest) -> bytes:
        request_id = event.request_id
        request = self._active(request_id, "EndRequest")
        if not 0 <= event.app_status <= _MAX_APP_STATUS:
            raise LocalProtocolError(
                f"EndRequest app_status {event.app_status} not in 0..2**32-1",
                request_id=request_id,
            )
        if not 0 <= event.protocol_status <= 0xFF:
            raise LocalProtocolError(
                f"EndRequest protocol_status {event.protocol_status} not in 0..255",
                request_id=request_id,
            )
        del self._requests[request_id]
        self._ended.add(request_id)
        if not request.keep_conn:
            self._should_close = True
        return encode_end_request(
            request_id,
            event.app_status,
            event.protocol_status,
            # A request refused outright (UNKNOWN_ROLE, OVERLOADED...) that
            # never wrote gets END_REQUEST alone, as in the spec's examples.
            close_stdout=request.stdout in STDOUT_NEEDS_CLOSE
            and not (
                event.protocol_status != REQUEST_COMPLETE and request.stdout is OutputState.UNUSED
            ),
            close_stderr=request.stderr in STDERR_NEEDS_CLOSE,
        )

    def _get_values_result(self, event: GetValuesResult) -> bytes:
        content = encode_pairs(event.values)
        if len(content) > MAX_CONTENT_LENGTH:
            raise LocalProtocolError(
                f"GetValuesResult needs {len(content)} bytes, more than one record holds"
            )
        return encode_record(FCGI_GET_VALUES_RESULT, NULL_REQUEST_ID, content)


def _next_output(state: OutputState, event: Stdout | Stderr, stream: str) -> OutputState:
    """The state of an output stream after ``event`` (OUTPUT_TRANSITIONS)."""
    new = OUTPUT_TRANSITIONS.get((state, bool(event.data)))
    if new is None:
        raise LocalProtocolError(
            f"{type(event).__name__} for request {event.request_id} after its {stream} "
            "stream was closed",
            request_id=event.request_id,
        )
    return new
