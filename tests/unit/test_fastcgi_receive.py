"""Connection.next_event: every record type and edge case, three ways each."""

from __future__ import annotations

import struct

import pytest

from fcgi_lua.fastcgi import (
    AUTHORIZER,
    FILTER,
    NEED_DATA,
    RESPONDER,
    AbortRequest,
    BeginRequest,
    Connection,
    ConnectionClosed,
    EndRequest,
    GetValues,
    Limits,
    LocalProtocolError,
    Params,
    RemoteProtocolError,
    Stdin,
    StdinEnd,
    Stdout,
    UnknownRecordType,
)
from tests.helpers.fastcgi import (
    ABORT,
    BEGIN,
    DATA,
    END,
    GET_VALUES,
    GET_VALUES_RESULT,
    PARAMS,
    STDERR,
    STDIN,
    STDOUT,
    UNKNOWN_TYPE,
    ExplodingLimits,
    begin,
    check_error,
    check_events,
    drain,
    pairs,
    record,
    stream,
)

SIMPLE = [(b"SCRIPT_FILENAME", b"/srv/www/index.lua"), (b"REQUEST_METHOD", b"GET")]


def request(
    request_id: int = 1, body: bytes = b"", params: list[tuple[bytes, bytes]] = SIMPLE
) -> bytes:
    return (
        begin(request_id)
        + stream(PARAMS, request_id, pairs(params))
        + stream(STDIN, request_id, body)
    )


def request_events(
    request_id: int = 1, body: bytes = b"", params: list[tuple[bytes, bytes]] = SIMPLE
) -> list[object]:
    events: list[object] = [
        BeginRequest(request_id, RESPONDER, True),
        Params(request_id, tuple(params)),
    ]
    if body:
        events.append(Stdin(request_id, body))
    events.append(StdinEnd(request_id))
    return events


# ---- BEGIN_REQUEST ----------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "flags", "keep_conn"),
    [
        (RESPONDER, 1, True),
        (RESPONDER, 0, False),
        (RESPONDER, 0xFF, True),  # unknown flag bits ignored
        (RESPONDER, 0xFE, False),
        (AUTHORIZER, 1, True),
        (FILTER, 0, False),
        (99, 1, True),  # unknown role: still an event, the server says UNKNOWN_ROLE
    ],
)
def test_begin_request_any_role(role: int, flags: int, keep_conn: bool) -> None:
    check_events(begin(7, role, flags), [BeginRequest(7, role, keep_conn)])


def test_begin_request_max_id_and_padding() -> None:
    data = record(BEGIN, 0xFFFF, struct.pack(">HB5x", RESPONDER, 1), padding=255)
    check_events(data, [BeginRequest(0xFFFF, RESPONDER, True)])


@pytest.mark.parametrize("length", [0, 7, 9, 16])
def test_begin_request_with_bad_length(length: int) -> None:
    error = check_error(record(BEGIN, 1, b"\x00\x01" + b"\0" * (length - 2)), "8")
    assert error.record_type == BEGIN
    assert error.request_id == 1
    assert error.http_status is None


def test_begin_request_for_active_id() -> None:
    check_error(begin(3) + begin(3), "already active", before=[BeginRequest(3, RESPONDER, True)])


def test_begin_request_with_id_zero() -> None:
    check_error(begin(0), "request id 0")


# ---- PARAMS -----------------------------------------------------------------


def test_simple_request() -> None:
    check_events(request(body=b"x=1"), request_events(body=b"x=1"))


def test_empty_params_stream() -> None:
    check_events(begin(1) + record(PARAMS, 1), [BeginRequest(1, 1, True), Params(1, ())])


def test_params_keep_order_and_duplicates() -> None:
    params = [(b"HTTP_COOKIE", b"a=1"), (b"HTTP_X", b"1"), (b"HTTP_COOKIE", b"b=2"), (b"", b"")]
    check_events(request(params=params), request_events(params=params))


@pytest.mark.parametrize("size", [0, 1, 127, 128, 129, 255, 256, 65535 - 10, 70000])
def test_params_lengths(size: int) -> None:
    """1-byte lengths up to 127, 4-byte from 128; 70000 spans two records."""
    params = [(b"N" * size, b"v"), (b"n", b"V" * size), (b"A" * size, b"B" * size)]
    limits = Limits(max_params_bytes=4 * size + 10)
    for long_lengths in (False, True):
        data = begin(1) + stream(PARAMS, 1, pairs(params, long_lengths=long_lengths))
        check_events(data, [BeginRequest(1, 1, True), Params(1, tuple(params))], limits=limits)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 13])
def test_params_split_across_records_everywhere(size: int) -> None:
    """Tiny records cut pairs inside lengths, names and values."""
    params = [(b"A" * 130, b"b"), (b"c", b"D" * 200), (b"e", b"f"), (b"", b"g" * 128)]
    data = begin(1) + stream(PARAMS, 1, pairs(params), size=size)
    check_events(data, [BeginRequest(1, 1, True), Params(1, tuple(params))])


def test_params_with_padding_and_empty_records_inside() -> None:
    encoded = pairs(SIMPLE)
    data = (
        begin(1)
        + record(PARAMS, 1, encoded[:5], padding=3)
        + record(PARAMS, 1, encoded[5:], padding=255)
        + record(PARAMS, 1, padding=7)
    )
    check_events(data, [BeginRequest(1, 1, True), Params(1, tuple(SIMPLE))])


def test_params_stream_ends_inside_a_pair() -> None:
    data = begin(1) + record(PARAMS, 1, pairs(SIMPLE)[:-3]) + record(PARAMS, 1)
    error = check_error(data, "middle of a pair", before=[BeginRequest(1, 1, True)])
    assert error.request_id == 1


def test_params_over_byte_limit_fails_on_declared_length() -> None:
    """The error comes as soon as the lengths are read, before the value bytes."""
    limits = Limits(max_params_bytes=100)
    head = pairs([(b"a" * 50, b"b" * 50)]) + bytes([1]) + struct.pack(">I", (1 << 31) | 1000)
    error = check_error(
        begin(1) + record(PARAMS, 1, head), "limit of 100 bytes", before=[BeginRequest(1, 1, True)],
        limits=limits,
    )  # fmt: skip
    assert error.http_status == 431
    assert error.request_id == 1
    # exactly at the limit is fine
    data = begin(1) + stream(PARAMS, 1, pairs([(b"a" * 50, b"b" * 50)]))
    check_events(
        data, [BeginRequest(1, 1, True), Params(1, ((b"a" * 50, b"b" * 50),))], limits=limits
    )


def test_params_over_count_limit() -> None:
    limits = Limits(max_params_count=3)
    error = check_error(
        begin(1) + record(PARAMS, 1, pairs([(b"a", b"")] * 4)), "more than 3",
        before=[BeginRequest(1, 1, True)], limits=limits,
    )  # fmt: skip
    assert error.http_status == 431
    ok = [(b"a", b"")] * 3
    check_events(
        begin(1) + stream(PARAMS, 1, pairs(ok)), request_events(params=ok)[:2], limits=limits
    )


def test_default_limits_are_sane() -> None:
    limits = Limits()
    assert limits.max_params_bytes >= 32 * 1024
    assert 100 <= limits.max_params_count <= 10_000


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10"])
def test_limits_reject_nonsense(bad: object) -> None:
    with pytest.raises(ValueError, match="positive int"):
        Limits(max_params_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive int"):
        Limits(max_params_count=bad)  # type: ignore[arg-type]


def test_params_after_params_ended() -> None:
    data = begin(1) + stream(PARAMS, 1, pairs(SIMPLE)) + record(PARAMS, 1, pairs(SIMPLE))
    error = check_error(data, "PARAMS after the PARAMS stream ended", before=request_events()[:2])
    assert error.http_status == 400
    assert error.record_type == PARAMS


def test_params_after_stdin_ended() -> None:
    check_error(request() + record(PARAMS, 1), "PARAMS after", before=request_events())


# ---- STDIN ------------------------------------------------------------------


def test_stdin_records_each_give_an_event() -> None:
    data = (
        begin(1)
        + stream(PARAMS, 1, pairs(SIMPLE))
        + record(STDIN, 1, b"a" * 65535, padding=1)
        + record(STDIN, 1, b"b", padding=255)
        + record(STDIN, 1, padding=7)
    )
    expected = [*request_events()[:2], Stdin(1, b"a" * 65535), Stdin(1, b"b"), StdinEnd(1)]
    check_events(data, expected)


def test_stdin_before_params_ended() -> None:
    data = begin(1) + record(PARAMS, 1, pairs(SIMPLE)) + record(STDIN, 1, b"x")
    check_error(data, "STDIN before the PARAMS stream ended", before=[BeginRequest(1, 1, True)])


def test_stdin_after_stdin_ended() -> None:
    check_error(
        request() + record(STDIN, 1, b"x"), "STDIN after the STDIN", before=request_events()
    )


# ---- ABORT_REQUEST, DATA, unknown and misdirected types -----------------------


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_abort_in_each_state_then_later_records_dropped(cut: int) -> None:
    full = [begin(1), stream(PARAMS, 1, pairs(SIMPLE)), record(STDIN, 1, b"x"), record(STDIN, 1)]
    events = [BeginRequest(1, 1, True), Params(1, tuple(SIMPLE)), Stdin(1, b"x"), StdinEnd(1)]
    data = b"".join(full[:cut]) + record(ABORT, 1) + b"".join(full[cut:]) + record(ABORT, 1)
    check_events(data, [*events[:cut], AbortRequest(1)])


def test_abort_with_a_body_is_tolerated() -> None:
    check_events(begin(1) + record(ABORT, 1, b"junk"), [BeginRequest(1, 1, True), AbortRequest(1)])


def test_empty_data_record_is_dropped() -> None:
    """flup's own client sends an empty DATA stream to every responder."""
    check_events(request() + record(DATA, 1), request_events())


def test_data_on_a_responder_request() -> None:
    error = check_error(
        request() + record(DATA, 1, b"x"), "DATA record on a RESPONDER", before=request_events()
    )
    assert error.record_type == DATA


def test_data_on_a_filter_request_is_dropped() -> None:
    data = begin(1, FILTER) + stream(PARAMS, 1, b"") + stream(STDIN, 1, b"") + stream(DATA, 1, b"d")
    check_events(data, [BeginRequest(1, FILTER, True), Params(1, ()), StdinEnd(1)])


@pytest.mark.parametrize("record_type", [0, 12, 100, 255])
@pytest.mark.parametrize("request_id", [0, 1, 999])
def test_unknown_record_type(record_type: int, request_id: int) -> None:
    """Spec: unknown management types get UNKNOWN_TYPE.  We answer unknown
    types on a request id the same way instead of failing (leniency)."""
    check_events(
        record(record_type, request_id, b"abc", padding=5), [UnknownRecordType(record_type)]
    )


@pytest.mark.parametrize("record_type", [END, STDOUT, STDERR, GET_VALUES_RESULT, UNKNOWN_TYPE])
@pytest.mark.parametrize("request_id", [0, 1])
def test_records_only_applications_send(record_type: int, request_id: int) -> None:
    error = check_error(record(record_type, request_id, b"\0" * 8), "only an application sends")
    assert error.record_type == record_type


@pytest.mark.parametrize("record_type", [ABORT, PARAMS, STDIN, DATA])
def test_application_record_with_id_zero(record_type: int) -> None:
    check_error(record(record_type, 0, b"x"), "request id 0")


@pytest.mark.parametrize("record_type", [ABORT, PARAMS, STDIN, DATA])
def test_unknown_request_id(record_type: int) -> None:
    error = check_error(
        begin(1) + record(record_type, 2), "unknown request id 2", before=[BeginRequest(1, 1, True)]
    )
    assert error.request_id == 2
    assert error.http_status is None


@pytest.mark.parametrize("version", [0, 2, 255, ord("G")])
def test_bad_version(version: int) -> None:
    error = check_error(record(BEGIN, 1, b"\0" * 8, version=version), f"version {version}")
    assert error.http_status is None


def test_http_request_on_the_fastcgi_port() -> None:
    check_error(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "unsupported FastCGI version 71")


# ---- GET_VALUES ---------------------------------------------------------------


def test_get_values() -> None:
    names = [b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"]
    content = pairs([(name, b"") for name in names])
    check_events(record(GET_VALUES, 0, content, padding=6), [GetValues(tuple(names))])


def test_get_values_ignores_values_and_may_be_empty() -> None:
    check_events(record(GET_VALUES, 0, pairs([(b"A", b"junk")])), [GetValues((b"A",))])
    check_events(record(GET_VALUES, 0), [GetValues(())])


def test_get_values_with_request_id() -> None:
    check_error(record(GET_VALUES, 1, pairs([(b"A", b"")])), "must be 0")


def test_get_values_truncated_pair_and_limits() -> None:
    check_error(record(GET_VALUES, 0, pairs([(b"A" * 200, b"")])[:-1]), "middle of a pair")
    check_error(
        record(GET_VALUES, 0, pairs([(b"A", b"")] * 5)),
        "more than 4",
        limits=Limits(max_params_count=4),
    )


# ---- multiplexing and ended requests ---------------------------------------------


def test_interleaved_requests() -> None:
    p1, p3 = pairs(SIMPLE), pairs([(b"A", b"3")])
    data = b"".join(
        [
            begin(1),
            begin(3, flags=0),
            record(PARAMS, 3, p3),
            record(PARAMS, 1, p1[:4]),
            record(PARAMS, 3),
            record(STDIN, 3, b"three"),
            record(PARAMS, 1, p1[4:]),
            record(PARAMS, 1),
            record(STDIN, 1),
            record(STDIN, 3),
        ]
    )
    check_events(
        data,
        [
            BeginRequest(1, 1, True),
            BeginRequest(3, 1, False),
            Params(3, ((b"A", b"3"),)),
            Stdin(3, b"three"),
            Params(1, tuple(SIMPLE)),
            StdinEnd(1),
            StdinEnd(3),
        ],
    )


def test_records_for_an_ended_request_are_dropped_until_begun_again() -> None:
    conn = Connection()
    conn.receive_data(begin(1, AUTHORIZER) + begin(2) + record(PARAMS, 2) + record(STDIN, 2, b"a"))
    assert drain(conn) == [
        BeginRequest(1, AUTHORIZER, True), BeginRequest(2, 1, True), Params(2, ()), Stdin(2, b"a")
    ]  # fmt: skip
    conn.send(EndRequest(1, 0, 3))  # UNKNOWN_ROLE, before its PARAMS arrived
    conn.send(EndRequest(2))  # answered early, body still coming
    assert conn.active_request_ids == frozenset()
    late = stream(PARAMS, 1, pairs(SIMPLE)) + stream(STDIN, 2, b"rest") + record(ABORT, 2)
    for byte in range(len(late)):
        conn.receive_data(late[byte : byte + 1])
        assert conn.next_event() is NEED_DATA
    conn.receive_data(begin(2) + record(PARAMS, 2))
    assert drain(conn) == [BeginRequest(2, 1, True), Params(2, ())]
    assert conn.active_request_ids == frozenset({2})


# ---- EOF and the receive buffer ------------------------------------------------


def test_eof_at_record_boundary() -> None:
    conn = Connection()
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()
    assert conn.next_event() == ConnectionClosed()
    conn.receive_data(b"")  # idempotent
    with pytest.raises(LocalProtocolError, match="after EOF"):
        conn.receive_data(b"x")


@pytest.mark.parametrize("cut", [1, 7, 8, 9, 12, 13])
def test_eof_mid_record_is_truncated(cut: int) -> None:
    """Cut inside the header, the content, or the padding."""
    data = record(STDIN, 1, b"abcd", padding=2)[:cut]
    check_error(
        request()[: -len(record(STDIN, 1))] + data, "truncated record", before=request_events()[:2],
        eof=True, modes=("whole", "bytewise"),
    )  # fmt: skip


def test_complete_records_before_eof_still_come_out() -> None:
    conn = Connection()
    conn.receive_data(request())
    conn.receive_data(b"")
    assert drain(conn) == [*request_events(), ConnectionClosed()]


def test_receive_data_copies_mutable_buffers() -> None:
    data = bytearray(begin(1))
    conn = Connection()
    conn.receive_data(data)
    data[1] = 99
    conn.receive_data(memoryview(record(PARAMS, 1)))
    assert drain(conn) == [BeginRequest(1, 1, True), Params(1, ())]


def test_many_records_in_one_read_and_one_record_in_many_reads() -> None:
    body = bytes(range(256)) * 256
    data = request(body=body[:65535])
    expected = request_events(body=body[:65535])
    for chunk_size in (1, 3, 100, 4096, 65536, len(data)):
        conn = Connection()
        events = []
        for i in range(0, len(data), chunk_size):
            conn.receive_data(data[i : i + chunk_size])
            events.extend(drain(conn))
        assert events == expected


# ---- errors are sticky; sending still works -------------------------------------


def test_after_a_remote_error_next_event_keeps_failing_but_send_works() -> None:
    conn = Connection(limits=Limits(max_params_count=1))
    conn.receive_data(begin(5) + record(PARAMS, 5, pairs(SIMPLE)))
    assert conn.next_event() == BeginRequest(5, 1, True)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.http_status == 431
    assert info.value.request_id in conn.active_request_ids
    conn.receive_data(record(PARAMS, 5))
    with pytest.raises(RemoteProtocolError, match="already failed") as again:
        conn.next_event()
    assert again.value.__cause__ is info.value
    reply = conn.send(Stdout(5, b"Status: 431\r\n\r\n")) + conn.send(EndRequest(5))
    assert reply.endswith(record(END, 5, b"\0" * 8))


def test_an_internal_error_is_latched_too() -> None:
    # h11's rule: every exception out of next_event is latched, not only the
    # peer's garbage; nothing is decoded from a buffer in an unknown state
    conn = Connection(limits=ExplodingLimits())
    ExplodingLimits.armed = True
    try:
        conn.receive_data(begin(5) + record(PARAMS, 5, pairs(SIMPLE)) + record(PARAMS, 5))
        with pytest.raises(RuntimeError, match="boom") as info:
            conn.next_event()
    finally:
        ExplodingLimits.armed = False
    with pytest.raises(LocalProtocolError, match="internal error") as again:
        conn.next_event()
    assert again.value.__cause__ is info.value
