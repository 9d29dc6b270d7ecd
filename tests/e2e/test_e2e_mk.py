"""The Monkey Lua plugin's mk.* API through real nginx: the plugin's
example script, every mk.request field, decoded args, cookies both ways,
urlencoded and multipart bodies (files with their file name)."""

from __future__ import annotations

import re

import pytest

from .e2e_clients import http_request
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("route", ["unix", "tcp"])
def test_example_script(e2e: Stack, logs: Logs, route: str) -> None:
    resp = http_request(
        e2e.urls[route],
        "/mk_example.lua?a=1&a=2&b=x%20y",
        method="POST",
        headers=[
            ("Cookie", "s=1; t=a%20b"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body=b"f=1&f=2&g=h%26i",
    )
    assert resp.status == 200, resp.text
    assert resp.header("content-type") == "text/html; charset=utf-8"
    lines = resp.text.split("\n")
    # mk.print joins its calls with "\n": no newline after the last line
    assert lines[0] == "Hello World" and lines[-1] == "last line !"
    fields = dict(line.split(" ", 2)[1:] for line in lines if re.match(r"\d+ ", line))
    assert fields["request_uri"] == "/mk_example.lua?a=1&a=2&b=x%20y"
    assert fields["query_string"] == "a=1&a=2&b=x%20y"
    assert fields["request_method"] == "POST"
    assert fields["server_software"].startswith("nginx/")
    assert fields["script_name"] == "/mk_example.lua"
    assert fields["remote_addr"] == "127.0.0.1"
    assert 'args {a = "1"; b = "x y"}' in lines
    assert 'args all {a = {"1", "2"}; b = {"x y"}}' in lines
    assert 'data {f = "1"; g = "h&i"}' in lines
    assert 'data all {f = {"1", "2"}; g = {"h&i"}}' in lines
    assert 'cookies {s = "1"; t = "a b"}' in lines
    first, second = resp.header_all("set-cookie")
    assert re.fullmatch(
        r"name=nithin; Expires=\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT; Path=/; HttpOnly",
        first,
    )  # no Domain, no Secure: a browser at 127.0.0.1 keeps them (mk_request.lua sets both)
    assert re.fullmatch(r"blog=spelling; Expires=[^;]+ GMT; Path=/", second)
    logs.assert_no_errors()


def test_request_response_and_cookies(e2e: Stack, logs: Logs) -> None:
    resp = http_request(
        e2e.urls["unix"],
        "/mk_request.lua?a=x%2By&a=2&flag",
        headers=[("User-Agent", "mk-test/1"), ("Cookie", "sid=s%3B1; theme=light")],
    )
    assert resp.status == 202, resp.text
    assert resp.header("x-mk") == "yes"
    assert resp.text == (
        "request_uri /mk_request.lua?a=x%2By&a=2&flag\n"
        "query_string a=x%2By&a=2&flag\n"
        "script_name /mk_request.lua\n"
        "method GET\n"
        "ua mk-test/1\n"
        "server_port number, remote_port number\n"
        "a x+y [x+y|2] flag ''\n"
        "cookie sid=s;1 theme=light\n"
        "status 202"
    )
    assert resp.header_all("set-cookie") == [
        "sid=new%20value%3B1; Expires=Wed, 18 May 2033 03:33:20 GMT; Domain=example.com; "
        "Path=/app; Secure; HttpOnly",
        "theme=dark; Expires=Wed, 18 May 2033 03:33:20 GMT; Path=/; SameSite=Lax",
    ]
    logs.assert_no_errors()


def test_parsedata_urlencoded(e2e: Stack, logs: Logs) -> None:
    resp = http_request(
        e2e.urls["unix"],
        "/mk_form.lua",
        method="POST",
        headers=[("Content-Type", "application/x-www-form-urlencoded")],
        body=b"x=1&y=a+b&x=%E2%9C%93",
    )
    assert resp.status == 200, resp.text
    assert resp.text == "x = 1 | 1, \u2713\ny = a b | a b\nmethod POST, data bytes 21"
    logs.assert_no_errors()


def test_parsedata_multipart_with_files(e2e: Stack, logs: Logs) -> None:
    boundary = "----mkboundary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="title"\r\n\r\n'
        "hello world\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="upload"; filename="notes.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
        "line one\nline two\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="upload"; filename="b.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
        "BIN\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    resp = http_request(
        e2e.urls["unix"],
        "/mk_form.lua",
        method="POST",
        headers=[("Content-Type", f"multipart/form-data; boundary={boundary}")],
        body=body,
    )
    assert resp.status == 200, resp.text
    assert resp.text == (
        "title = hello world | hello world\n"
        "upload = notes.txt | file(notes.txt, text/plain, 17 bytes: line one\nline two), "
        "file(b.bin, application/octet-stream, 3 bytes: BIN)\n"
        f"method POST, data bytes {len(body)}"
    )
    logs.assert_no_errors()
