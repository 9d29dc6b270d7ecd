"""CGI scripts, unchanged, through real nginx: the same cgi_*.lua files
run by fcgi-lua (CGI mode, marked by their "#!/usr/bin/env lua" line) and,
as the oracle, by Debian's fcgiwrap with a real Lua interpreter (a process
per request).  Also: marking by path pattern, and os.exit ending only the
request."""

from __future__ import annotations

import pytest

from .e2e_clients import Response, http_request
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e

FORM = [("Content-Type", "application/x-www-form-urlencoded")]

# name, path, method, headers, body, expected status, expected body
CASES = [
    (
        "print-headers-and-body",
        "/cgi_hello.lua?x=1",
        "GET",
        [],
        None,
        200,
        "<h1>Hello from CGI</h1>\n<p>method=GET query=x=1</p>\n<p>gateway=CGI/1.1</p>\n",
    ),
    (
        "echo-post-body",
        "/cgi_echo.lua",
        "POST",
        [("Content-Type", "text/plain")],
        b"posted \x00 bytes\nsecond line",
        200,
        "content_length=26 read=26\nposted \x00 bytes\nsecond line\n",
    ),
    ("echo-empty-post", "/cgi_echo.lua", "POST", [], b"", 200, "content_length=0 read=0\n\n"),
    ("redirect-and-exit", "/cgi_redirect.lua", "GET", [], None, 302, None),
    (
        "lines",
        "/cgi_lines.lua",
        "POST",
        [],
        b"one\ntwo\n\nfour",
        200,
        "1: one\n2: two\n3: \n4: four\nlines=4\n",
    ),
    (
        "lua-cgi-urlcode",
        "/cgi_urlcode.lua?q=a%20b&n=1",
        "POST",
        FORM,
        b"n=2&msg=caf%C3%A9+au+lait",
        200,
        "msg=caf\u00e9 au lait\nn=1,2\nq=a b\n",
    ),
    ("status-404", "/cgi_status.lua", "GET", [], None, 404, "no such thing\n"),
]
IDS = [c[0] for c in CASES]


def fetch(stack: Stack, route: str, case: tuple) -> Response:  # type: ignore[type-arg]
    _, path, method, headers, body, _, _ = case
    return http_request(stack.urls[route], path, method=method, headers=headers, body=body)


@pytest.mark.parametrize("route", ["unix", "tcp"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cgi_script(e2e: Stack, logs: Logs, case: tuple, route: str) -> None:  # type: ignore[type-arg]
    status, body = case[5], case[6]
    resp = fetch(e2e, route, case)
    assert resp.status == status, resp.text
    if body is not None:
        assert resp.text == body
    if case[0] == "print-headers-and-body":
        assert resp.header("content-type") == "text/html; charset=utf-8"
        assert resp.header("x-cgi") == "hello"
        assert resp.header_all("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    if case[0] == "redirect-and-exit":
        assert resp.header("location") == "/cgi_hello.lua?from=redirect"
        assert "never printed" not in resp.text
    logs.assert_no_errors()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_same_as_fcgiwrap(e2e: Stack, logs: Logs, case: tuple) -> None:  # type: ignore[type-arg]
    if "cgi" not in e2e.urls:
        pytest.skip("fcgiwrap or a lua interpreter is not installed")
    ours = fetch(e2e, "unix", case)
    theirs = fetch(e2e, "cgi", case)
    assert ours.status == theirs.status, theirs.text
    if ours.status != 302:
        assert ours.body == theirs.body
    for name in ("content-type", "location", "x-cgi"):
        assert ours.header(name) == theirs.header(name), name
    assert ours.header_all("set-cookie") == theirs.header_all("set-cookie")
    logs.assert_no_errors()


def test_marked_by_path_pattern(e2e: Stack, logs: Logs) -> None:
    # no shebang: CGI mode from cgi_patterns' defaults "cgi-bin/*", "*.cgi.lua"
    script = 'io.write("Content-Type: text/plain\\n\\n", os.getenv("SCRIPT_NAME"), "\\n")\n'
    (e2e.root / "cgi-bin").mkdir(exist_ok=True)
    (e2e.root / "cgi-bin" / "plain.lua").write_text(script)
    (e2e.root / "plain.cgi.lua").write_text(script)
    resp = http_request(e2e.urls["unix"], "/cgi-bin/plain.lua")
    assert (resp.status, resp.text) == (200, "/cgi-bin/plain.lua\n")
    resp = http_request(e2e.urls["unix"], "/plain.cgi.lua")
    assert (resp.status, resp.text) == (200, "/plain.cgi.lua\n")
    logs.assert_no_errors()


def test_os_exit_ends_the_request_not_the_worker(e2e: Stack, logs: Logs) -> None:
    for _ in range(3):
        assert http_request(e2e.urls["unix"], "/cgi_redirect.lua").status == 302
        assert http_request(e2e.urls["unix"], "/hello.lua").text == "Hello, world!\n"
    assert e2e.dead_service() == ""
    logs.assert_no_errors()


def test_malformed_cgi_output_is_a_500(e2e: Stack, logs: Logs) -> None:
    (e2e.root / "bad.cgi.lua").write_text('print("no header here")\n')
    logs.allow("fcgi-lua", r"malformed CGI response|bad\.cgi\.lua")
    resp = http_request(e2e.urls["unix"], "/bad.cgi.lua")
    assert resp.status == 500
    logs.assert_no_errors()
