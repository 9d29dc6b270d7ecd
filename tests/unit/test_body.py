"""Body storage: memory up to client_body_buffer_size, then a temp file;
completion, limits, discard, and the removal of every temp file."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcgi_lua.body import (
    SPOOL_PREFIX,
    BadBody,
    Body,
    BodyStorageError,
    BodyTooLarge,
)


def make(tmp_path: Path, length: bytes | None, *, buffer: int = 16, limit: int = 1000) -> Body:
    return Body(length, max_size=limit, buffer_size=buffer, temp_dir=str(tmp_path))


def temp_files(tmp_path: Path) -> list[str]:
    return sorted(os.listdir(tmp_path))


def test_small_body_stays_in_memory(tmp_path: Path) -> None:
    body = make(tmp_path, b"16")
    body.feed(b"a" * 10)
    body.feed(b"b" * 6)
    assert body.complete
    assert body.data == b"a" * 10 + b"b" * 6  # exactly the buffer size: memory
    assert body.path is None
    assert temp_files(tmp_path) == []


def test_known_length_above_buffer_spools_from_the_first_byte(tmp_path: Path) -> None:
    body = make(tmp_path, b"17")
    body.feed(b"x")
    assert body.path is not None and os.path.basename(body.path).startswith(SPOOL_PREFIX)
    body.feed(b"y" * 16)
    assert body.complete and body.data is None
    assert Path(body.path).read_bytes() == b"x" + b"y" * 16  # flushed and closed
    assert os.stat(body.path).st_mode & 0o777 == 0o600
    body.close()
    assert temp_files(tmp_path) == []


def test_unknown_length_spools_when_crossing_the_buffer(tmp_path: Path) -> None:
    body = make(tmp_path, b"")
    body.feed(b"0123456789")
    assert body.path is None
    body.feed(b"abcdefghij")
    assert body.path is not None
    assert not body.complete
    body.end()
    assert body.complete
    assert body.read_all() == b"0123456789abcdefghij"
    assert list(body.chunks(7)) == [b"0123456", b"789abcd", b"efghij"]
    body.close()
    body.close()  # idempotent
    assert temp_files(tmp_path) == []


def test_bytes_beyond_content_length_are_dropped(tmp_path: Path) -> None:
    body = make(tmp_path, b"3")
    body.feed(b"abcdef")
    body.feed(b"more")
    assert body.data == b"abc"


def test_short_body_is_a_bad_body(tmp_path: Path) -> None:
    body = make(tmp_path, b"40")
    body.feed(b"x" * 20)  # spooled already
    body.end()
    assert isinstance(body.error, BadBody) and body.error.status == 400
    assert "body ended after 20 of 40 bytes" in str(body.error)
    assert temp_files(tmp_path) == []  # dropped at once
    with pytest.raises(BadBody):
        asyncio.run(body.wait())


def test_too_large_by_header_is_never_stored(tmp_path: Path) -> None:
    body = make(tmp_path, b"1001")
    assert isinstance(body.error, BodyTooLarge) and body.error.status == 413
    body.feed(b"z" * 1001)
    assert temp_files(tmp_path) == []
    assert body.size == 0 or body.data in (None, b"")


def test_too_large_streamed_wakes_the_reader_and_drops_the_file(tmp_path: Path) -> None:
    body = make(tmp_path, b"", limit=100)

    async def scenario() -> None:
        reader = asyncio.ensure_future(body.wait())
        await asyncio.sleep(0)
        body.feed(b"a" * 60)
        assert len(temp_files(tmp_path)) == 1
        await asyncio.sleep(0)
        assert not reader.done()
        body.feed(b"a" * 60)  # crosses the limit: no need to wait for the end
        assert temp_files(tmp_path) == []
        with pytest.raises(BodyTooLarge):
            await reader
        body.feed(b"a" * 60)  # the rest is ignored
        assert temp_files(tmp_path) == []

    asyncio.run(scenario())


def test_reader_waits_for_the_end_record(tmp_path: Path) -> None:
    body = make(tmp_path, b"")

    async def scenario() -> bytes | None:
        reader = asyncio.ensure_future(body.wait())
        await asyncio.sleep(0)
        body.feed(b"abc")
        await asyncio.sleep(0)
        assert not reader.done()
        body.end()
        await reader
        return body.data

    assert asyncio.run(scenario()) == b"abc"


def test_discard_frees_storage_and_releases_the_reader(tmp_path: Path) -> None:
    body = make(tmp_path, b"")
    body.feed(b"x" * 40)
    assert len(temp_files(tmp_path)) == 1
    body.discard()
    assert temp_files(tmp_path) == []
    body.feed(b"x" * 4000)  # beyond the limit too: a discarded body is not checked
    asyncio.run(body.wait())
    assert body.data is None and body.path is None and body.error is None


def test_unwritable_temp_dir_is_a_storage_error(tmp_path: Path) -> None:
    body = Body(b"", buffer_size=4, temp_dir=str(tmp_path / "missing"))
    body.feed(b"12345")
    assert isinstance(body.error, BodyStorageError) and body.error.status == 500
    body.feed(b"more")
    body.end()
    with pytest.raises(BodyStorageError):
        asyncio.run(body.wait())


def test_close_removes_uploads_except_moved_ones(tmp_path: Path) -> None:
    body = make(tmp_path, b"0")
    first, first_path = body.new_temp_file()
    first.write(b"1")
    first.close()
    second, second_path = body.new_temp_file()
    second.close()
    moved = tmp_path / "kept"
    os.rename(second_path, moved)
    body.close()
    assert temp_files(tmp_path) == ["kept"]
    assert not os.path.exists(first_path)


def test_close_while_receiving(tmp_path: Path) -> None:
    body = make(tmp_path, b"100")
    body.feed(b"x" * 50)
    body.close()  # the request was aborted mid-upload
    assert temp_files(tmp_path) == []
    body.feed(b"x" * 50)
    assert temp_files(tmp_path) == []


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    known=st.booleans(),
    buffer=st.sampled_from([1, 16, 64, 1000]),
)
def test_any_split_stores_the_same_bytes(
    tmp_path_factory: pytest.TempPathFactory,
    data: bytes,
    cuts: list[int],
    known: bool,
    buffer: int,
) -> None:
    tmp = tmp_path_factory.mktemp("split")
    body = make(tmp, str(len(data)).encode() if known else b"", buffer=buffer)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        body.feed(data[start:end])
    body.end()
    assert body.error is None
    assert body.read_all() == data
    assert (body.path is not None) == (len(data) > buffer)
    body.close()
    assert os.listdir(tmp) == []


def test_byte_by_byte(tmp_path: Path) -> None:
    data = bytes(range(256)) * 3
    body = make(tmp_path, str(len(data)).encode())
    for i in range(len(data)):
        body.feed(data[i : i + 1])
    assert body.complete
    assert body.read_all() == data


@pytest.mark.parametrize("length", [b"", b"-1"])  # nginx unbuffered; Caddy 2 (chunked)
def test_unknown_length_reads_to_the_end_record(tmp_path: Path, length: bytes) -> None:
    body = make(tmp_path, length)
    assert body.error is None
    body.feed(b"abc")
    assert not body.complete
    body.feed(b"de")
    body.end()
    assert body.complete
    assert body.data == b"abcde"


@pytest.mark.parametrize("length", [b"-2", b"x", b"1.5"])
def test_invalid_length_is_a_bad_body(tmp_path: Path, length: bytes) -> None:
    assert isinstance(make(tmp_path, length).error, BadBody)
