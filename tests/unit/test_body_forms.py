"""multipart/form-data parsing: fields, files in temp files, limits, bad bodies."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fcgi_lua.body import Body
from fcgi_lua.forms import MAX_FIELD_SIZE, Multipart, MultipartError, parse_multipart
from tests.helpers.forms import BOUNDARY, CTYPE, form, part


def body_of(tmp_path: Path, data: bytes, buffer: int = 64) -> Body:
    body = Body(str(len(data)).encode(), max_size=10**9, buffer_size=buffer, temp_dir=str(tmp_path))
    for i in range(0, len(data), 1000):
        body.feed(data[i : i + 1000])
    assert body.complete
    return body


def parse(tmp_path: Path, data: bytes, ctype: bytes = CTYPE, **kw: int) -> Multipart:
    return asyncio.run(parse_multipart(body_of(tmp_path, data), ctype, **kw))


def uploads(tmp_path: Path) -> list[str]:
    return sorted(n for n in os.listdir(tmp_path) if n.startswith("fcgi-lua-upload-"))


def test_fields_and_files(tmp_path: Path) -> None:
    blob = bytes(range(256)) * 40
    data = form(
        part(b"title", b"hello world"),
        part(b"tag", b"a"),
        part(b"tag", b"b"),
        part(b"doc", blob, b"report.bin", b"application/x-thing"),
        part(b"doc", b"plain text\r\n--not-a-boundary", b"notes.txt", b"text/plain"),
        part(b"empty", b"", b""),
    )
    result = parse(tmp_path, data)
    assert result.fields == {b"title": [b"hello world"], b"tag": [b"a", b"b"]}
    assert not result.truncated
    first, second, empty = result.files
    assert (first.name, first.filename, first.content_type, first.size) == (
        b"doc",
        b"report.bin",
        b"application/x-thing",
        len(blob),
    )
    assert Path(first.path).read_bytes() == blob
    assert Path(second.path).read_bytes() == b"plain text\r\n--not-a-boundary"
    assert (empty.filename, empty.size, empty.content_type) == (
        b"",
        0,
        b"application/octet-stream",  # RFC 7578's default for files
    )
    assert len(uploads(tmp_path)) == 3


def test_filename_keeps_only_the_last_component_and_raw_utf8(tmp_path: Path) -> None:
    data = form(
        part(b"a", b"1", b"../../etc/passwd"),
        part(b"b", b"2", "C:\\Users\\me\\r\u00e9sum\u00e9.pdf".encode()),
    )
    result = parse(tmp_path, data)
    assert [f.filename for f in result.files] == [b"passwd", "r\u00e9sum\u00e9.pdf".encode()]


def test_parts_without_a_name_are_skipped(tmp_path: Path) -> None:
    data = form(
        b"--" + BOUNDARY + b"\r\nContent-Type: text/plain\r\n\r\norphan\r\n",
        part(b"", b"x"),
        part(b"ok", b"1"),
    )
    assert parse(tmp_path, data).fields == {b"ok": [b"1"]}


def test_max_parts_truncates(tmp_path: Path) -> None:
    data = form(part(b"a", b"1"), part(b"b", b"2", b"b.txt"), part(b"c", b"3", b"c.txt"))
    result = parse(tmp_path, data, max_parts=2)
    assert result.truncated
    assert result.fields == {b"a": [b"1"]}
    assert [f.name for f in result.files] == [b"b"]
    assert len(uploads(tmp_path)) == 1  # the part beyond the limit is not stored
    unlimited = parse(tmp_path, data, max_parts=0)
    assert not unlimited.truncated and len(unlimited.files) == 2


@pytest.mark.parametrize(
    ("ctype", "message"),
    [
        (b"multipart/form-data", "no boundary"),
        (b"multipart/form-data; charset=utf-8", "no boundary"),
        (b"application/x-www-form-urlencoded", "not a multipart/form-data body"),
        (b"", "not a multipart/form-data body (Content-Type: none)"),
        (b"multipart/form-data; boundary=" + b"x" * 300, "bad multipart boundary"),
    ],
)
def test_bad_content_type(tmp_path: Path, ctype: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(tmp_path, form(part(b"a", b"1")), ctype)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # cut in the middle of a file: the closing boundary never comes
        (form(part(b"f", b"x" * 5000, b"f.bin"))[:3000], "truncated multipart body"),
        (b"", "truncated multipart body"),
        (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="a"\r\n', "truncated"),
        (b"this is not multipart at all\r\n", "bad multipart body"),
        (b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\nx\r\n", "bad multipart body"),
    ],
)
def test_bad_bodies_are_errors_and_leave_no_file(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        parse(tmp_path, data)
    assert uploads(tmp_path) == []


def test_oversized_field_is_refused(tmp_path: Path) -> None:
    data = form(part(b"f", b"x" * 10, b"f.txt"), part(b"big", b"y" * (MAX_FIELD_SIZE + 1)))
    with pytest.raises(MultipartError, match="form field 'big' is larger than"):
        parse(tmp_path, data)
    assert uploads(tmp_path) == []


def test_large_upload_is_parsed_from_the_spooled_file_in_pieces(tmp_path: Path) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 17)
    data = form(part(b"name", b"v"), part(b"up", blob, b"big.bin", b"application/octet-stream"))
    body = body_of(tmp_path, data)
    assert body.path is not None
    result = asyncio.run(parse_multipart(body, CTYPE))
    assert result.files[0].size == len(blob)
    assert Path(result.files[0].path).read_bytes() == blob
    body.close()
    assert os.listdir(tmp_path) == []


def test_byte_by_byte_into_the_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fcgi_lua.forms.READ_CHUNK", 1)
    data = form(part(b"a", b"1"), part(b"f", b"\r\n--" + BOUNDARY[:-1], b"f"))
    body = Body(b"", buffer_size=16, temp_dir=str(tmp_path))
    for i in range(len(data)):
        body.feed(data[i : i + 1])
    body.end()
    result = asyncio.run(parse_multipart(body, CTYPE))
    assert result.fields == {b"a": [b"1"]}
    assert Path(result.files[0].path).read_bytes() == b"\r\n--" + BOUNDARY[:-1]
