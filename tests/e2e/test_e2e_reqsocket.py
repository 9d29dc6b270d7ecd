"""ngx.req.socket(): the request body as a stream, through real nginx,
compared with OpenResty (the ``oracle`` route) on the same bodies.

The scripts read the body the way lua-resty-upload does (receiveuntil on
the boundary with a chunk size, receive("*l") for headers) or with
receive(n); the chunk sizes they print must be OpenResty's too, since its
matcher decides where a chunk ends.  ``unbuffered`` makes nginx forward
the body as it arrives, one STDIN record per read.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

from .e2e_bodies import (
    END,
    MB,
    MULTIPART,
    field,
    file_part,
    post,
    rss_kb,
    serving_pid,
    temp_files,
)
from .e2e_clients import http_request
from .e2e_stack import Logs, Stack

PROBE_BODY = b"abcline1\r\nline2\nxyz--bqq--bend"


def both(e2e: Stack, path: str, body: bytes, ctype: str = "application/octet-stream") -> str:
    # "bodies": the instance with a 150m client_max_body_size
    ours = post(e2e.urls["bodies"], path, body, ctype)
    oracle = post(e2e.urls["oracle"], path, body, ctype)
    assert ours.status == oracle.status == 200, ours.text
    assert ours.text == oracle.text
    return ours.text


def test_reads_and_errors_match_openresty(e2e: Stack, logs: Logs) -> None:
    logs.allow("nginx", r"attempt to receive data on a closed socket")  # the oracle says so
    text = both(e2e, "/reqsock_probe.lua", PROBE_BODY)
    assert '"line1"\n"line2"\n' in text
    assert 'nil, "closed", "end"\n' in text
    for mode, expected in [
        ("read_first", 'nil, "request body already exists"\n'),
        ("twice", 'nil, "request body already exists"\n'),
        ("args", 'false, "expecting zero arguments, but got 2"\n'),
    ]:
        assert expected in both(e2e, f"/reqsock_probe.lua?mode={mode}", PROBE_BODY)
    # OpenResty says "no body" once nginx has discarded it, which depends on
    # whether the body came with the head: fcgi-lua always says the other.
    path = "/reqsock_probe.lua?mode=discard_first"
    ours = post(e2e.urls["unix"], path, PROBE_BODY)
    oracle = post(e2e.urls["oracle"], path, PROBE_BODY)
    assert ours.text == 'nil, "request body discarded"\n'
    assert oracle.text in (ours.text, 'nil, "no body"\n')
    ours = http_request(e2e.urls["unix"], "/reqsock_probe.lua")
    oracle = http_request(e2e.urls["oracle"], "/reqsock_probe.lua")
    assert ours.text == oracle.text == 'nil, "no body"\n'


def test_raw_request_socket_is_a_clear_error(e2e: Stack, logs: Logs) -> None:
    logs.allow("fcgi-lua-debug", r"ngx\.req\.socket\(true\) is not available")
    resp = http_request(e2e.urls["debug"], "/reqsock_raw.lua")
    assert resp.status == 500
    assert "ngx.req.socket(true) is not available in fcgi-lua" in resp.text


def multipart_body(big: int) -> bytes:
    rng = random.Random(7)
    blob = rng.randbytes(big)
    notes = b"line\r\n--not-the-boundary\r\n-\r\r\n--" * 200
    return (
        field("title", "Hello world")
        + file_part("notes", "notes.txt", notes, "text/plain")
        + file_part("blob", "blob.bin", blob, "application/octet-stream")
        + END
    )


def test_multipart_reader_matches_openresty(e2e: Stack, logs: Logs) -> None:
    body = multipart_body(3 * MB + 7)
    for chunk in (4096, 7, 65536):
        text = both(e2e, f"/reqsock_multipart.lua?chunk={chunk}", body, MULTIPART)
        assert 'header: Content-Disposition: form-data; name="blob"' in text
        assert f"part: {3 * MB + 7} " in text
        assert "rest: \n" in text and "after: closed" in text


def test_small_chunks_match_openresty(e2e: Stack, logs: Logs) -> None:
    body = multipart_body(20_000)
    for chunk in (1, 2, 3, 5):
        both(e2e, f"/reqsock_multipart.lua?chunk={chunk}", body, MULTIPART)


def pieces_of(data: bytes, size: int, pause_every: int = 0) -> Iterator[bytes]:
    for n, start in enumerate(range(0, len(data), size)):
        if pause_every and n % pause_every == pause_every - 1:
            time.sleep(0.005)  # so nginx forwards them in separate records
        yield data[start : start + size]


def test_body_in_many_records_matches_openresty(e2e: Stack, logs: Logs) -> None:
    body = multipart_body(200_000)
    path = "/reqsock_multipart.lua?chunk=1000"
    ours = post(
        e2e.urls["bodies_unbuffered"], path, pieces_of(body, 997, 20), MULTIPART, length=len(body)
    )
    oracle = post(e2e.urls["oracle"], path, pieces_of(body, 997, 20), MULTIPART, length=len(body))
    assert ours.status == oracle.status == 200
    assert ours.text == oracle.text
    sized = "/reqsock_sized.lua?n=4099"
    ours = post(e2e.urls["bodies_unbuffered"], sized, pieces_of(body, 1500, 50), length=len(body))
    oracle = post(e2e.urls["oracle"], sized, body)
    assert ours.text == oracle.text
    assert f"size {len(body)} md5 {hashlib.md5(body).hexdigest()}" in ours.text


def test_chunked_body_streams_where_openresty_refuses(e2e: Stack, logs: Logs) -> None:
    body = b"0123456789" * 10_000
    ours = post(
        e2e.urls["bodies_unbuffered"], "/reqsock_sized.lua?n=3", pieces_of(body, 4000), chunked=True
    )
    assert ours.text == (
        f"end: closed partial 1\nreads 33333 size 100000 md5 {hashlib.md5(body).hexdigest()}\n"
    )
    oracle = post(e2e.urls["oracle"], "/reqsock_sized.lua", pieces_of(body, 4000), chunked=True)
    assert oracle.text == "no socket: chunked request bodies not supported yet\n"


def test_100mb_body_streams_with_flat_memory(e2e: Stack, logs: Logs, tmp_path: Path) -> None:
    size = 100 * MB
    block = hashlib.sha512(b"seed").digest() * (MB // 64)
    pid = serving_pid(e2e, "fcgi-lua-bodies")
    post(e2e.urls["bodies_unbuffered"], "/reqsock_sized.lua?hash=0", block)  # warm-up
    before = rss_kb(pid)
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    started = time.monotonic()
    resp = post(
        e2e.urls["bodies_unbuffered"],
        "/reqsock_sized.lua?hash=0&n=65536",
        (block for _ in range(size // MB)),
        length=size,
    )
    elapsed = time.monotonic() - started
    assert (
        resp.text
        == f"end: closed partial 0\nreads 1600 size {size} md5 {hashlib.md5(b'').hexdigest()}\n"
    )
    peak = rss_kb(pid, "VmHWM")
    print(f"100 MB through ngx.req.socket: {elapsed:.2f}s, RSS {before} kB -> peak {peak} kB")
    assert peak - before < 8 * 1024, f"RSS grew by {peak - before} kB"
    assert temp_files(e2e.body_temp) == []


def test_quote_sql_str_matches_openresty(e2e: Stack, logs: Logs) -> None:
    ours = http_request(e2e.urls["unix"], "/quote_sql_str.lua")
    oracle = http_request(e2e.urls["oracle"], "/quote_sql_str.lua")
    assert ours.status == oracle.status == 200
    assert ours.body == oracle.body
    assert b"\\0\x01" in ours.body and b"\\Z" in ours.body and b"'it\\'s " in ours.body


def test_set_and_clear_header_match_openresty(e2e: Stack, logs: Logs) -> None:
    headers = [("X-Old", "old"), ("X-Multi", "m1"), ("X-Multi", "m2"), ("Cookie", "a=0")]
    ours = http_request(e2e.urls["unix"], "/headers_set.lua", headers=headers)
    oracle = http_request(e2e.urls["oracle"], "/headers_set.lua", headers=headers)
    assert ours.status == oracle.status == 200
    assert ours.text == oracle.text
    assert "x-multi=a,b,3 x-new=fresh x-old=replaced x_under=u\n" in ours.text
    assert "cleared: content-type=text/x-new cookie=a=1; b=2 x-num=42 x_under=u\n" in ours.text
