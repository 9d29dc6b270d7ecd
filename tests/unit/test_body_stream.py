"""A body streamed to the script (ngx.req.socket): what was stored before
is read first, nothing more is stored, the connection is paused while the
reader is behind and resumed when it catches up or the request ends; and
the sized receiveuntil cuts chunks where lua-nginx-module's matcher does."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fcgi_lua.body import STREAM_HIGH_WATER, STREAM_LOW_WATER, Body
from fcgi_lua.lua.cosocket import PENDING, UNTIL, UntilState, take


class FakeFlow:
    def __init__(self) -> None:
        self.paused = 0
        self.calls: list[str] = []

    def pause(self) -> None:
        self.paused += 1
        self.calls.append("pause")

    def resume(self) -> None:
        self.paused -= 1
        self.calls.append("resume")


def make(tmp_path: Path, length: bytes | None) -> tuple[Body, FakeFlow]:
    body = Body(length, max_size=10 * STREAM_HIGH_WATER, buffer_size=16, temp_dir=str(tmp_path))
    flow = FakeFlow()
    body.flow = flow
    return body, flow


def read_all(body: Body) -> bytes:
    out = b""
    while piece := body.read(1000):
        out += piece
    return out


def test_spooled_prefix_is_read_first_and_leaves_no_file(tmp_path: Path) -> None:
    body, _ = make(tmp_path, b"")
    body.feed(b"a" * 40)  # over the 16-byte buffer: spooled
    assert body.path is not None
    body.stream()
    assert os.listdir(tmp_path) == []  # unlinked, still open
    body.feed(b"b" * 10)
    assert not body.ended
    body.end()
    assert body.ended
    assert read_all(body) == b"a" * 40 + b"b" * 10
    assert body.path is None and not body.data


def test_reader_behind_pauses_the_connection_until_it_catches_up(tmp_path: Path) -> None:
    body, flow = make(tmp_path, b"")
    body.stream()
    woken = []
    body.listener = lambda: woken.append(1)
    chunk = b"x" * 65536
    for _ in range(STREAM_HIGH_WATER // len(chunk) + 1):
        body.feed(chunk)
    assert flow.calls == ["pause"] and woken
    while body._live and len(body._live) >= STREAM_LOW_WATER:
        body.read(65536)
    assert flow.calls == ["pause", "resume"] and flow.paused == 0


def test_request_end_resumes_a_paused_connection(tmp_path: Path) -> None:
    body, flow = make(tmp_path, b"")
    body.stream()
    for _ in range(8):
        body.feed(b"y" * 65536)
    assert flow.paused == 1
    body.close()
    assert flow.paused == 0
    body.feed(b"z")  # the rest of STDIN is read and dropped
    assert body.read(10) == b""


def test_too_large_while_streaming_ends_the_stream(tmp_path: Path) -> None:
    body, _ = make(tmp_path, b"")
    body.stream()
    body.feed(b"q" * (10 * STREAM_HIGH_WATER + 1))
    assert body.error is not None and body.error.status == 413
    assert body.ended and body.read(10) == b""


def reference_chunks(data: bytes, pattern: bytes, size: int) -> list[bytes]:
    """lua-nginx-module's ngx_http_lua_socket_read_until, byte by byte (a
    KMP matcher): a chunk ends once `size` bytes are known not to start the
    pattern; the bytes of a failed partial match become known together."""
    chunks: list[bytes] = []
    start, state, rest, i = 0, 0, size, 0
    while i < len(data):
        c = data[i]
        if c == pattern[state]:
            state += 1
            i += 1
            if state == len(pattern):
                chunks.append(data[start : i - state])
                return chunks
            continue
        if state == 0:
            i += 1
            rest -= 1
            if rest == 0:
                chunks.append(data[start:i])
                start, rest = i, size
            continue
        k = next(
            (
                k
                for k in range(state, 0, -1)
                if pattern[k - 1] == c and pattern[: k - 1] == pattern[state - k + 1 : state]
            ),
            0,
        )
        known = state if k == 0 else state + 1 - k
        end = i - state + known
        if k:
            i += 1
        state = k
        if rest <= known:
            chunks.append(data[start:end])
            start, rest = end, size
        else:
            rest -= known
    return chunks


@given(
    st.binary(max_size=60).map(lambda b: b.replace(b"\x00", b"")),
    st.sampled_from([b"\r\n--b", b"aab", b"abab", b"x"]),
    st.integers(min_value=1, max_value=9),
)
def test_sized_receiveuntil_cuts_like_lua_nginx_module(
    data: bytes, pattern: bytes, size: int
) -> None:
    alphabet_data = bytes(b % 4 for b in data).translate(
        bytes.maketrans(b"\x00\x01\x02\x03", b"ab\r-")
    )
    whole = alphabet_data + pattern
    expected = reference_chunks(whole, pattern, size)
    buf = bytearray(whole)
    until = UntilState(pattern, False)
    got = []
    while not until.done:
        piece = take(buf, UNTIL, size, until)
        assert piece is not PENDING
        got.append(piece)
    assert got == expected
