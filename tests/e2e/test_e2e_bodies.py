"""Request bodies, forms and uploads through real nginx.

Routes (conftest.py): ``unix``/``unbuffered`` reach the main fcgi-lua
(client_max_body_size 1m, the default); ``bodies``/``bodies_unbuffered``
reach an instance with a 150m limit; nginx's own limit is 200m so that
fcgi-lua's is the one tested.  Each instance has its own
client_body_temp_path, so every test can check that no temp file is left.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .e2e_bodies import (
    END,
    FORM,
    MB,
    MULTIPART,
    field,
    file_part,
    part_head,
    post,
    rss_kb,
    serving_pid,
    temp_files,
    wait_empty,
)
from .e2e_clients import Response, fastcgi_request, http_request
from .e2e_stack import Logs, Stack


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- urlencoded, compared with OpenResty --------------------------------------

URLENCODED = [
    b"a=1&b=2",
    b"a=1&a=2&a=3&flag&empty=&=nokey&sp=x+y%20z",
    b"bad=%zz&half=%4&pct=%&u=%E2%82%AC&plus=%2B",  # invalid escapes: kept as OpenResty does
    b"&&a=1&&",
    b"k=" + b"v" * 9000,  # in memory (under client_body_buffer_size 16k)
    b"x" * 30000,  # above 16k * 1.25: a temp file for nginx and for fcgi-lua
]


@pytest.mark.parametrize("body", URLENCODED, ids=range(len(URLENCODED)))
def test_urlencoded_matches_openresty(e2e: Stack, logs: Logs, body: bytes) -> None:
    ours = post(e2e.urls["unix"], "/body_echo.lua", body)
    oracle = post(e2e.urls["oracle"], "/body_echo.lua", body)
    assert ours.status == oracle.status == 200
    assert ours.text == oracle.text
    assert f"size: {len(body)}\n" in ours.text
    assert temp_files(e2e.body_temp_main) == []


def test_post_args_limit_matches_openresty(e2e: Stack, logs: Logs) -> None:
    body = b"&".join(b"k%d=%d" % (i, i) for i in range(150))
    for query in ("", "?max=10", "?max=0"):
        ours = post(e2e.urls["unix"], "/body_echo.lua" + query, body)
        oracle = post(e2e.urls["oracle"], "/body_echo.lua" + query, body)
        assert ours.text == oracle.text
    assert "err: truncated" in post(e2e.urls["unix"], "/body_echo.lua", body).text


def test_post_args_of_a_spooled_body(e2e: Stack, logs: Logs) -> None:
    body = b"a=" + b"x" * 40000 + b"&b=2"
    ours = post(e2e.urls["unix"], "/body_post_args.lua", body)
    oracle = post(e2e.urls["oracle"], "/body_post_args.lua", body)
    # both refuse: the script reads the file (docs/lua-api.md)
    assert ours.text == oracle.text == "nil, request body in temp file not supported\n"


def test_body_set_and_built_by_the_script_as_openresty(e2e: Stack, logs: Logs) -> None:
    for body in (b"z=1", b"z=" + b"y" * 40000):  # in memory, spooled
        ours = post(e2e.urls["unix"], "/body_build.lua", body)
        oracle = post(e2e.urls["oracle"], "/body_build.lua", body)
        assert ours.status == oracle.status == 200
        assert ours.text == oracle.text
        assert "in a file: data=nil file=d=567&e length=7" in ours.text
    assert temp_files(e2e.body_temp_main) == []


def test_discard_body(e2e: Stack, logs: Logs) -> None:
    ours = post(e2e.urls["unix"], "/body_discard.lua", b"x" * 50000)
    oracle = post(e2e.urls["oracle"], "/body_discard.lua", b"x" * 50000)
    assert ours.text == oracle.text == "discarded: nil nil\n"
    assert temp_files(e2e.body_temp_main) == []


# -- multipart ------------------------------------------------------------------


def test_multipart_fields_and_two_files(e2e: Stack, logs: Logs) -> None:
    photo = os.urandom(300 * 1024)
    notes = "r\u00e9sum\u00e9 \u20ac\r\n--not-the-boundary\r\n".encode() * 100
    body = (
        field("title", "Hello world")
        + field("tag", "a")
        + field("tag", "b")
        + file_part("upload", "photo.jpg", photo, "image/jpeg")
        + file_part("upload", "notes.txt", notes, "text/plain; charset=utf-8")
        + END
    )
    for route in ("bodies", "bodies_unbuffered", "unix"):
        resp = post(e2e.urls[route], "/body_multipart.lua", body, MULTIPART)
        assert resp.status == 200, resp.text
        assert resp.text == (
            "field tag = {a,b}\n"
            "field title = Hello world\n"
            f"file 1 upload photo.jpg image/jpeg {len(photo)} {md5(photo)}\n"
            f"file 2 upload notes.txt text/plain; charset=utf-8 {len(notes)} {md5(notes)}\n"
            "truncated: nil\n"
        )
    assert wait_empty(e2e.body_temp) == []
    assert wait_empty(e2e.body_temp_main) == []


def pattern_pieces(total: int, piece: int = MB) -> Iterator[bytes]:
    block = hashlib.sha512(b"seed").digest() * (piece // 64)
    sent = 0
    while sent < total:
        chunk = block[: min(piece, total - sent)]
        sent += len(chunk)
        yield chunk


def test_100mb_upload_keeps_worker_memory_flat(e2e: Stack, logs: Logs, tmp_path: Path) -> None:
    size = 100 * MB
    expected = hashlib.sha256()
    for chunk in pattern_pieces(size):
        expected.update(chunk)
    head = field("name", "big") + part_head("blob", "big.bin", "application/octet-stream")
    tail = b"\r\n" + END
    keep = tmp_path / "kept"
    keep.mkdir()
    pid = serving_pid(e2e, "fcgi-lua-bodies")
    # A warm-up upload, so lazily built things (code cache, buffers) exist.
    small = head + b"x" * MB + tail
    post(e2e.urls["bodies"], "/body_multipart.lua", small, MULTIPART)
    before = rss_kb(pid)
    # Reset the peak (VmHWM) so it measures this upload only.
    Path(f"/proc/{pid}/clear_refs").write_text("5")

    def pieces() -> Iterator[bytes]:
        yield head
        yield from pattern_pieces(size)
        yield tail

    started = time.monotonic()
    resp = post(
        e2e.urls["bodies"],
        f"/body_multipart.lua?keep={keep}",
        pieces(),
        MULTIPART,
        length=len(head) + size + len(tail),
    )
    elapsed = time.monotonic() - started
    assert resp.status == 200, resp.text
    assert f"file 1 blob big.bin application/octet-stream {size} -\n" in resp.text
    peak, after = rss_kb(pid, "VmHWM"), rss_kb(pid)
    print(f"100 MB upload: {elapsed:.2f}s, RSS {before} kB -> peak {peak} kB, after {after} kB")
    assert peak - before < 8 * 1024, f"RSS grew by {peak - before} kB during the upload"
    assert after - before < 4 * 1024
    kept = keep / "1-big.bin"
    digest = hashlib.sha256()
    with kept.open("rb") as f:
        while chunk := f.read(MB):
            digest.update(chunk)
    assert digest.hexdigest() == expected.hexdigest()
    kept.unlink()
    assert wait_empty(e2e.body_temp) == []


def test_chunked_uploads_with_request_buffering_off(e2e: Stack, logs: Logs) -> None:
    data = os.urandom(3 * MB + 5)
    body = field("a", "1") + file_part("f", "data.bin", data, "application/octet-stream") + END
    pieces = [body[i : i + 100_000] for i in range(0, len(body), 100_000)]
    resp = post(
        e2e.urls["bodies_unbuffered"], "/body_multipart.lua", pieces, MULTIPART, chunked=True
    )
    assert resp.status == 200, resp.text
    assert f"file 1 f data.bin application/octet-stream {len(data)} {md5(data)}\n" in resp.text
    form = b"a=1&b=" + b"y" * 20000
    resp = post(e2e.urls["unbuffered"], "/body_echo.lua", [form[:7], form[7:]], chunked=True)
    assert resp.text.startswith(f"where: file\nsize: {len(form)}\nmd5: {md5(form)}\n")
    assert wait_empty(e2e.body_temp) == []
    assert wait_empty(e2e.body_temp_main) == []


# -- limits and bad bodies --------------------------------------------------------


def test_413_by_content_length(e2e: Stack, logs: Logs) -> None:
    logs.allow("fcgi-lua", r"too large body")
    resp = post(e2e.urls["unix"], "/body_echo.lua", b"x" * (2 * MB))
    assert resp.status == 413
    assert temp_files(e2e.body_temp_main) == []
    # The upstream connection (kept alive) is still good.
    for _ in range(3):
        assert post(e2e.urls["unix"], "/body_echo.lua", b"a=1").status == 200


def test_413_of_a_streamed_body_crossing_the_limit(e2e: Stack, logs: Logs) -> None:
    logs.allow("fcgi-lua", r"too large body")
    logs.allow("nginx", r"upstream prematurely closed|sending request body to upstream")
    pieces = (b"z" * 65536 for _ in range(40))  # 2.5 MB > 1m, no Content-Length
    resp = post(e2e.urls["unbuffered"], "/body_echo.lua", pieces, chunked=True)
    assert resp.status == 413
    assert temp_files(e2e.body_temp_main) == []
    assert post(e2e.urls["unbuffered"], "/body_echo.lua", b"a=1").status == 200
    assert http_request(e2e.urls["unix"], "/hello.lua").status == 200


def test_bad_multipart_bodies(e2e: Stack, logs: Logs) -> None:
    whole = field("a", "1") + file_part("f", "f.bin", b"q" * 50000, "application/x") + END
    cases = [
        (whole[:-30], MULTIPART, "error: truncated multipart body: no closing boundary"),
        (
            whole,
            "multipart/form-data",
            "error: no boundary in the multipart/form-data Content-Type",
        ),
        (b"garbage\r\n", MULTIPART, "error: bad multipart body"),
        (b"a=1", FORM, "error: not a multipart/form-data body"),
    ]
    for body, ctype, message in cases:
        for route in ("bodies", "bodies_unbuffered"):
            resp = post(e2e.urls[route], "/body_multipart.lua", body, ctype)
            assert (resp.status, resp.text[: len(message)]) == (400, message)
    assert wait_empty(e2e.body_temp) == []


def fcgi_post(e2e: Stack, length: str, stdin: bytes) -> Response:
    params: dict[str, str | bytes] = {
        "SCRIPT_FILENAME": str(e2e.root / "body_echo.lua"),
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": FORM,
        "CONTENT_LENGTH": length,
    }
    return fastcgi_request(str(e2e.unix_socket), params, stdin).response


def test_wrong_content_length(e2e: Stack, logs: Logs) -> None:
    logs.allow("fcgi-lua", r"body ended after|invalid CONTENT_LENGTH")
    # Fewer bytes than announced, then the end of STDIN: 400.
    assert fcgi_post(e2e, "100", b"a=1").status == 400
    assert fcgi_post(e2e, "100000", b"a" * 50000).status == 400  # spooled, then dropped
    assert fcgi_post(e2e, "abc", b"a=1").status == 400
    assert fcgi_post(e2e, "-5", b"").status == 400
    # More bytes than announced: the extra bytes are not part of the body.
    assert "size: 3\n" in fcgi_post(e2e, "3", b"a=1&b=2").text
    assert temp_files(e2e.body_temp_main) == []


def test_abort_in_the_middle_of_an_upload(e2e: Stack, logs: Logs) -> None:
    url = urlsplit(e2e.urls["bodies_unbuffered"])
    head = (
        "POST /body_multipart.lua HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: {MULTIPART}\r\nContent-Length: {50 * MB}\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head + part_head("f", "f.bin", "application/x"))
        for chunk in pattern_pieces(5 * MB, 256 * 1024):
            sock.sendall(chunk)
        deadline = time.monotonic() + 5
        while not temp_files(e2e.body_temp) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert temp_files(e2e.body_temp), "the body never reached a temp file"
    # The client is gone: nginx closes the FastCGI connection, the request
    # is cancelled, and its temp file removed.
    assert wait_empty(e2e.body_temp) == []
    logs.wait_for("fcgi-lua-bodies", r"aborting|closed the connection")
    assert http_request(e2e.urls["bodies"], "/hello.lua").status == 200
    body = field("a", "after") + END
    resp = post(e2e.urls["bodies_unbuffered"], "/body_multipart.lua", body, MULTIPART)
    assert resp.text == "field a = after\ntruncated: nil\n"
