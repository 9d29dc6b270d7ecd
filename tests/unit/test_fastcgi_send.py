"""Connection.send: the bytes we write, and misuse caught as LocalProtocolError."""

from __future__ import annotations

import struct

import pytest

from fcgi_lua.fastcgi import (
    OVERLOADED,
    UNKNOWN_ROLE,
    Connection,
    EndRequest,
    GetValuesResult,
    LocalProtocolError,
    Stderr,
    StdinEnd,
    Stdout,
    UnknownType,
)
from tests.helpers.fastcgi import (
    END,
    GET_VALUES_RESULT,
    STDERR,
    STDOUT,
    UNKNOWN_TYPE,
    begin,
    drain,
    pairs,
    parse_records,
    record,
)

MONKEY_MAX_RECORD = 65528  # Monkey 1.6 reads records into a buffer this big


def connection(*request_ids: int, keep_conn: bool = True) -> Connection:
    conn = Connection()
    conn.receive_data(b"".join(begin(i, flags=int(keep_conn)) for i in request_ids))
    drain(conn)
    return conn


def end_body(app_status: int = 0, protocol_status: int = 0) -> bytes:
    return struct.pack(">IB3x", app_status, protocol_status)


def test_small_stdout_is_one_unpadded_record() -> None:
    conn = connection(1)
    assert conn.send(Stdout(1, b"Status: 200 OK\r\n\r\nhello")) == record(
        STDOUT, 1, b"Status: 200 OK\r\n\r\nhello"
    )


@pytest.mark.parametrize("size", [65519, 65520, 65521, 65535, 65536, 2 * 65520, 200_000])
def test_large_stdout_is_split_into_monkey_sized_records(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    conn = connection(1)
    records = parse_records(conn.send(Stdout(1, data)))
    assert b"".join(content for _, _, content, _ in records) == data
    assert all(len(content) + 8 <= MONKEY_MAX_RECORD for _, _, content, _ in records)
    assert all(t == STDOUT and i == 1 and pad == 0 and content for t, i, content, pad in records)
    assert len(records) == -(-size // 65520)


def test_stdout_accepts_memoryview() -> None:
    conn = connection(1)
    assert conn.send(Stdout(1, memoryview(b"abc"))) == record(STDOUT, 1, b"abc")  # type: ignore[arg-type]


def test_end_request_closes_stdout_first() -> None:
    conn = connection(1)
    conn.send(Stdout(1, b"body"))
    assert conn.send(EndRequest(1)) == record(STDOUT, 1) + record(END, 1, end_body())


def test_completed_request_without_output_still_closes_stdout() -> None:
    conn = connection(1)
    assert conn.send(EndRequest(1)) == record(STDOUT, 1) + record(END, 1, end_body())


def test_refused_request_without_output_gets_end_request_alone() -> None:
    conn = connection(1)
    assert conn.send(EndRequest(1, 0, UNKNOWN_ROLE)) == record(END, 1, end_body(0, UNKNOWN_ROLE))


def test_end_request_after_explicit_close() -> None:
    conn = connection(1)
    assert conn.send(Stdout(1, b"")) == record(STDOUT, 1)
    assert conn.send(EndRequest(1, 0xFFFFFFFF, OVERLOADED)) == record(
        END, 1, end_body(0xFFFFFFFF, OVERLOADED)
    )


def test_end_request_closes_stderr_when_used() -> None:
    conn = connection(1)
    assert conn.send(Stderr(1, b"warning")) == record(STDERR, 1, b"warning")
    assert conn.send(EndRequest(1, 1)) == record(STDOUT, 1) + record(STDERR, 1) + record(
        END, 1, end_body(1)
    )
    conn = connection(1)
    conn.send(Stderr(1, b"warning"))
    conn.send(Stderr(1, b""))
    conn.send(Stdout(1, b""))
    assert conn.send(EndRequest(1)) == record(END, 1, end_body())


def test_large_stderr_is_split() -> None:
    conn = connection(2)
    records = parse_records(conn.send(Stderr(2, b"e" * 70000)))
    assert [(t, len(c), p) for t, _, c, p in records] == [(STDERR, 65520, 0), (STDERR, 4480, 0)]


@pytest.mark.parametrize("event_type", [Stdout, Stderr])
def test_write_after_stream_closed(event_type: type[Stdout] | type[Stderr]) -> None:
    conn = connection(1)
    conn.send(event_type(1, b"a"))
    conn.send(event_type(1, b""))
    for data in (b"more", b""):
        with pytest.raises(LocalProtocolError, match="closed") as info:
            conn.send(event_type(1, data))
        assert info.value.request_id == 1


@pytest.mark.parametrize(
    "event", [Stdout(2, b"x"), Stderr(2, b"x"), EndRequest(2), Stdout(0, b"x"), EndRequest(70000)]
)
def test_sending_for_a_request_never_begun(event: Stdout | Stderr | EndRequest) -> None:
    with pytest.raises(LocalProtocolError, match="never begun"):
        connection(1).send(event)


def test_sending_for_an_ended_request() -> None:
    conn = connection(1)
    conn.send(EndRequest(1))
    for event in (Stdout(1, b"x"), EndRequest(1)):
        with pytest.raises(LocalProtocolError, match="already ended"):
            conn.send(event)


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (EndRequest(1, -1), "app_status"),
        (EndRequest(1, 2**32), "app_status"),
        (EndRequest(1, 0, 256), "protocol_status"),
        (EndRequest(1, 0, -1), "protocol_status"),
    ],
)
def test_bad_end_request_leaves_the_request_active(event: EndRequest, match: str) -> None:
    conn = connection(1)
    with pytest.raises(LocalProtocolError, match=match):
        conn.send(event)
    assert conn.active_request_ids == {1}
    assert conn.send(EndRequest(1)).endswith(record(END, 1, end_body()))


def test_active_request_ids_and_should_close() -> None:
    conn = connection(1, 2)
    assert conn.active_request_ids == {1, 2}
    assert not conn.should_close
    conn.send(EndRequest(2))
    assert conn.active_request_ids == {1}
    assert not conn.should_close
    conn.receive_data(begin(3, flags=0))
    drain(conn)
    assert conn.active_request_ids == {1, 3}
    assert not conn.should_close
    conn.send(EndRequest(3))
    assert conn.should_close
    assert conn.active_request_ids == {1}


def test_multiplexed_output_interleaves() -> None:
    conn = connection(1, 2)
    out = conn.send(Stdout(2, b"two")) + conn.send(Stdout(1, b"one")) + conn.send(EndRequest(2))
    assert [(t, i, c) for t, i, c, _ in parse_records(out)] == [
        (STDOUT, 2, b"two"), (STDOUT, 1, b"one"), (STDOUT, 2, b""), (END, 2, end_body()),
    ]  # fmt: skip


def test_get_values_result() -> None:
    values = ((b"FCGI_MAX_CONNS", b"1024"), (b"N" * 128, b"1"), (b"FCGI_MPXS_CONNS", b"1"))
    assert Connection().send(GetValuesResult(values)) == record(GET_VALUES_RESULT, 0, pairs(values))
    with pytest.raises(LocalProtocolError, match="more than one record"):
        Connection().send(GetValuesResult(((b"A", b"v" * 70000),)))


@pytest.mark.parametrize("record_type", [0, 12, 255])
def test_unknown_type(record_type: int) -> None:
    assert Connection().send(UnknownType(record_type)) == record(
        UNKNOWN_TYPE, 0, bytes([record_type]) + b"\0" * 7
    )


@pytest.mark.parametrize("record_type", [-1, 256])
def test_unknown_type_out_of_range(record_type: int) -> None:
    with pytest.raises(LocalProtocolError, match=r"0\.\.255"):
        Connection().send(UnknownType(record_type))


def test_sending_a_received_event_is_misuse() -> None:
    with pytest.raises(LocalProtocolError, match="not an event the application sends"):
        Connection().send(StdinEnd(1))  # type: ignore[arg-type]


def test_events_are_frozen_and_slotted() -> None:
    event = Stdout(1, b"x")
    with pytest.raises(AttributeError):
        event.data = b"y"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
