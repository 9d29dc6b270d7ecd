"""When a request body is complete, from what front servers really send."""

from __future__ import annotations

import asyncio

import pytest

from fcgi_lua.request import BadBody, BodyTooLarge, Request


def make(length: bytes | None, limit: int = 100) -> Request:
    params = [(b"REQUEST_METHOD", b"POST")]
    if length is not None:
        params.append((b"CONTENT_LENGTH", length))
    return Request(params, max_body_size=limit)


def test_missing_or_zero_length_is_complete_at_once() -> None:
    # Monkey sends no STDIN record at all for a bodyless request.
    assert make(None).body_complete
    assert make(b"0").body_complete
    assert asyncio.run(make(None).read_body()) == b""


def test_empty_length_reads_to_end_of_stdin() -> None:
    # nginx with fastcgi_request_buffering off and a chunked client body.
    request = make(b"")

    async def scenario() -> bytes:
        reader = asyncio.ensure_future(request.read_body())
        await asyncio.sleep(0)
        assert not reader.done()
        request.feed_body(b"abc")
        request.feed_body(b"def")
        await asyncio.sleep(0)
        assert not reader.done()
        request.end_body()
        return await reader

    assert asyncio.run(scenario()) == b"abcdef"


def test_transfer_encoding_without_length_reads_to_end_of_stdin() -> None:
    # Apache (mod_proxy_fcgi) with a chunked client body it has not read
    # whole: HTTP_TRANSFER_ENCODING, no CONTENT_LENGTH, then STDIN.
    request = Request([(b"REQUEST_METHOD", b"POST"), (b"HTTP_TRANSFER_ENCODING", b"chunked")])
    assert not request.body_complete
    request.feed_body(b"a=1")
    request.feed_body(b"&b=2")
    assert not request.body_complete
    request.end_body()
    assert asyncio.run(request.read_body()) == b"a=1&b=2"
    # Its CONTENT_LENGTH, when it sends one, still rules.
    params = [(b"HTTP_TRANSFER_ENCODING", b"chunked"), (b"CONTENT_LENGTH", b"3")]
    request = Request(params)
    request.feed_body(b"abc")
    assert request.body_complete


def test_known_length_completes_without_end_record() -> None:
    request = make(b"5")
    request.feed_body(b"hel")
    assert not request.body_complete
    request.feed_body(b"lo")
    assert request.body_complete
    assert asyncio.run(request.read_body()) == b"hello"


def test_short_body_is_an_error() -> None:
    request = make(b"10")
    request.feed_body(b"abc")
    request.end_body()
    with pytest.raises(BadBody, match="body ended after 3 of 10 bytes"):
        asyncio.run(request.read_body())


def test_too_large_by_header_and_by_stream() -> None:
    assert isinstance(make(b"101").body_error, BodyTooLarge)
    request = make(b"", limit=4)
    request.feed_body(b"12345")
    request.end_body()
    with pytest.raises(BodyTooLarge):
        asyncio.run(request.read_body())


def test_bad_length() -> None:
    assert isinstance(make(b"abc").body_error, BadBody)
    assert isinstance(make(b"-2").body_error, BadBody)  # "-1" is Caddy's "unknown"
    assert make(b"abc").body_error.status == 400  # type: ignore[union-attr]


def test_method_and_length_are_the_first_given() -> None:
    params = [
        (b"REQUEST_METHOD", b"HEAD"),
        (b"CONTENT_LENGTH", b"3"),
        (b"REQUEST_METHOD", b"GET"),
        (b"CONTENT_LENGTH", b"5"),
    ]
    request = Request(params)
    assert request.method == b"HEAD"
    assert request.body.expected == 3
    assert Request([]).method == b""


def test_var_is_the_first_param_by_lower_case_name() -> None:
    # nginx's names are upper-case: looked up as they are
    request = Request([(b"REQUEST_URI", b"/a"), (b"HTTP_X", b"1"), (b"HTTP_X", b"2")])
    assert request.var(b"request_uri") == b"/a"
    assert request.var(b"http_x") == b"1"
    assert request.var(b"missing") is None
    # a fastcgi_param of any case: the first name that lower-cases to it
    mixed = Request([(b"My_Var", b"first"), (b"MY_VAR", b"second"), (b"other", b"o")])
    assert mixed.var(b"my_var") == b"first"
    assert mixed.var(b"other") == b"o"
    assert mixed.var(b"OTHER") is None  # ngx.var lower-cases before asking
    assert Request([]).var(b"x") is None
