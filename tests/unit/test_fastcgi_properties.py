"""Hypothesis properties of the codec.

1. Whatever bytes arrive, in whatever chunks: events or RemoteProtocolError,
   nothing else, and no hang.
2. Round trips: params and bodies encoded by the test-side encoder decode to
   the same events however they are cut; our STDOUT re-joins to the data,
   in zero-padded records Monkey can read.
"""

from __future__ import annotations

import itertools
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fcgi_lua.fastcgi import (
    NEED_DATA,
    BeginRequest,
    Connection,
    ConnectionClosed,
    EndRequest,
    Limits,
    Params,
    ReceivedEvent,
    RemoteProtocolError,
    Stderr,
    Stdin,
    StdinEnd,
    Stdout,
)
from tests.helpers.fastcgi import PARAMS, STDERR, STDIN, STDOUT, begin, pairs, parse_records, record

EVENT_TYPES = ReceivedEvent.__args__  # type: ignore[attr-defined]


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` split at ``points`` (fractions of its length, in 0..1000)."""
    offsets = sorted({len(data) * p // 1000 for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(offsets) if b > a]


# Mostly well-formed records (version 1, small ids, all types), so that the
# fuzzer gets past the header check and into the request state machines.
fuzz_record = st.builds(
    record,
    record_type=st.integers(0, 13),
    request_id=st.integers(0, 3),
    content=st.one_of(
        st.binary(max_size=40),
        st.builds(
            lambda role, flags: struct.pack(">HB5x", role, flags),
            st.integers(0, 4),
            st.integers(0, 3),
        ),
        st.lists(st.tuples(st.binary(max_size=140), st.binary(max_size=140)), max_size=3).map(
            pairs
        ),
    ),
    padding=st.integers(0, 9),
    version=st.sampled_from([1, 1, 1, 1, 1, 1, 1, 2]),
)
fuzz_stream = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(fuzz_record, st.binary(max_size=5)), max_size=25).map(b"".join),
)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=fuzz_stream,
    points=st.lists(st.integers(0, 1000), max_size=10),
    eof=st.booleans(),
    end_requests=st.booleans(),
)
def test_events_or_remote_protocol_error_nothing_else(
    data: bytes, points: list[int], eof: bool, end_requests: bool
) -> None:
    conn = Connection(limits=Limits(max_params_bytes=300, max_params_count=5))
    chunks = cut(data, points) + ([b""] if eof else [])
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            # Each record yields at most one event, so this bounds the loop.
            for _ in range(len(data) + 2):
                event = conn.next_event()
                if event is NEED_DATA or isinstance(event, ConnectionClosed):
                    break
                assert isinstance(event, EVENT_TYPES)
                if end_requests and isinstance(event, BeginRequest | Params):
                    conn.send(EndRequest(event.request_id))  # exercise "ended" drops
            else:
                raise AssertionError("next_event never returned NEED_DATA")
    except RemoteProtocolError:
        try:
            conn.next_event()
        except RemoteProtocolError:
            return
        raise AssertionError("a failed connection produced an event") from None


params_strategy = st.lists(
    st.tuples(
        st.one_of(st.binary(max_size=20), st.binary(min_size=120, max_size=300)),
        st.one_of(st.binary(max_size=20), st.binary(min_size=120, max_size=3000)),
    ),
    max_size=12,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=params_strategy,
    body_chunks=st.lists(st.binary(min_size=1, max_size=2000), max_size=4),
    param_points=st.lists(st.integers(0, 1000), max_size=6),
    read_points=st.lists(st.integers(0, 1000), max_size=12),
    padding=st.integers(0, 255),
    long_lengths=st.booleans(),
    request_id=st.integers(1, 0xFFFF),
)
def test_round_trip_params_and_body(
    params: list[tuple[bytes, bytes]],
    body_chunks: list[bytes],
    param_points: list[int],
    read_points: list[int],
    padding: int,
    long_lengths: bool,
    request_id: int,
) -> None:
    encoded = pairs(params, long_lengths=long_lengths)
    data = begin(request_id, flags=0)
    for piece in cut(encoded, param_points):
        data += record(PARAMS, request_id, piece, padding=padding)
    data += record(PARAMS, request_id, padding=padding)
    for chunk in body_chunks:
        data += record(STDIN, request_id, chunk, padding=padding)
    data += record(STDIN, request_id)
    expected: list[ReceivedEvent] = [
        BeginRequest(request_id, 1, False),
        Params(request_id, tuple(params)),
        *(Stdin(request_id, chunk) for chunk in body_chunks),
        StdinEnd(request_id),
        ConnectionClosed(),
    ]
    conn = Connection()
    events: list[ReceivedEvent] = []
    for chunk in [*cut(data, read_points), b""]:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ConnectionClosed):
                break
    assert events == expected


@settings(max_examples=100)
@given(
    sizes=st.lists(st.integers(1, 200_000), max_size=4),
    seed=st.binary(min_size=1, max_size=64),
    use_stderr=st.booleans(),
    close_explicitly=st.booleans(),
)
def test_stdout_records_rejoin_and_fit_monkey(
    sizes: list[int], seed: bytes, use_stderr: bool, close_explicitly: bool
) -> None:
    conn = Connection()
    conn.receive_data(begin(5))
    conn.next_event()
    out = b""
    sent = b""
    logged = []
    for size in sizes:
        data = (seed * (size // len(seed) + 1))[:size]
        out += conn.send(Stdout(5, data))
        sent += data
        if use_stderr:
            logged.append(data[:10])
            out += conn.send(Stderr(5, data[:10]))
    if close_explicitly:
        out += conn.send(Stdout(5, b""))
    out += conn.send(EndRequest(5))
    records = parse_records(out)
    assert all(len(content) + 8 <= 65528 and pad == 0 for _, _, content, pad in records)
    stdout = [content for t, _, content, _ in records if t == STDOUT]
    assert b"".join(stdout) == sent
    assert stdout.index(b"") == len(stdout) - 1  # exactly one end-of-stream, last
    stderr = [content for t, _, content, _ in records if t == STDERR]
    assert stderr == ([*logged, b""] if logged else [])
    assert conn.active_request_ids == frozenset()
