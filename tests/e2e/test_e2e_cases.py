"""Request in, response out: each case runs through real nginx over the
Unix socket and over TCP, twice (the second run hits the code cache and a
kept-alive upstream connection), and asserts nothing unexpected was logged.
The same cases then run side by side against OpenResty (the oracle)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from .e2e_clients import Response, http_request
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e

RUNS = [1, 2]


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    status: int
    body: str | None = None  # exact body; None: not checked here
    body_re: str | None = None
    method: str = "GET"
    request_headers: tuple[tuple[str, str], ...] = ()
    request_body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)  # expected, names lower-case
    set_cookies: tuple[str, ...] = ()
    oracle: bool = True  # deterministic: compare with OpenResty
    # Errors the case is expected to log, as (log name, regex).
    logged: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return self.name


CASES = [
    Case("hello", "/hello.lua", 200, "Hello, world!\n"),
    Case(
        "numbers-like-luajit",  # the default runtime's doubles and bit (docs/runtimes.md)
        "/numbers.lua",
        200,
        "n=5 5 2147483648 2 -4\n3   2.0 ff 1e+15 9.007199254741e+15\n255 ffffffff 15\n"
        "1 42 1.4142135623731\n",
    ),
    Case(
        "query-args",
        "/args.lua?a=1&a=2&c&d=x%20y&e=",
        200,
        "a = [1, 2]\nc = true (boolean)\nd = x y (string)\ne =  (string)\n",
    ),
    Case(
        "vars",
        "/vars.lua?x=1&y=%41",
        200,
        "method: GET\nuri: /vars.lua\nargs: x=1&y=%41\n"
        "request_uri: /vars.lua?x=1&y=%41\nrequest_method: GET\n",
    ),
    Case("vars-no-args", "/vars.lua", 200, body_re=r"args: nil\n"),
    Case(
        "headers-in",
        "/headers_in.lua",
        200,
        "x-one: 1\nX-One: 1\nx_one: 1\nuser-agent: e2e-agent/1.0\nabsent: nil\n",
        request_headers=(("X-One", "1"), ("User-Agent", "e2e-agent/1.0")),
    ),
    Case(
        "headers-in-repeated",
        "/headers_multi.lua",
        200,
        "table: a|b\n",
        request_headers=(("X-Multi", "a"), ("X-Multi", "b")),
    ),
    Case(
        "headers-out",
        "/headers_out.lua",
        200,
        '{"ok":true}\n',
        headers={
            "content-type": "application/json",
            "x-custom": "yes",
            "cache-control": "no-store",
        },
        set_cookies=("a=1; Path=/", "b=2; HttpOnly", "c=3"),
    ),
    Case("status-201", "/status_201.lua", 201, "created\n"),
    Case("exit-404", "/exit_404.lua", 404, body_re=r"404 Not Found"),
    Case("exit-503", "/exit_503.lua", 503, body_re=r"503 Service (Temporarily )?Unavailable"),
    Case("exit-after-say", "/exit_after_say.lua", 200, "before\n"),
    Case(
        "redirect-302",
        "/redirect_302.lua",
        302,
        headers={"location": "/hello.lua"},
    ),
    Case(
        "redirect-301",
        "/redirect_301.lua",
        301,
        headers={"location": "http://example.com/moved"},
    ),
    Case("head", "/hello.lua", 200, "", method="HEAD"),
    Case(
        "head-headers-out",
        "/headers_out.lua",
        200,
        "",
        method="HEAD",
        headers={"x-custom": "yes", "content-type": "application/json"},
        set_cookies=("a=1; Path=/", "b=2; HttpOnly", "c=3"),
    ),
    # Deliberately unlike OpenResty, where a file's globals live in one
    # environment per file and survive across requests (counting up, with a
    # "writing a global Lua variable" warning): each fcgi-lua request gets a
    # fresh global table (DESIGN.md), so no oracle comparison.
    Case("globals-fresh-per-request", "/global_counter.lua", 200, "1\n", oracle=False),
    Case("ctx-fresh-per-request", "/ctx.lua", 200, "ctx.n = 1\n"),
    Case(
        "script-error",
        "/error.lua",
        500,
        logged=(("fcgi-lua", r"boom from e2e|error\.lua"), ("nginx", r"boom from e2e")),
    ),
    Case(
        "missing-script",
        "/no_such_script.lua",
        404,
        body_re=r"404 Not Found",
        logged=(("nginx", r"failed to load external Lua file"),),
    ),
    Case(
        "post-form",
        "/body.lua",
        200,
        "method: POST\nbytes: 11\nbody: a=1&b=x%20y\narg a = 1\narg b = x y\n",
        method="POST",
        request_headers=(("Content-Type", "application/x-www-form-urlencoded"),),
        request_body=b"a=1&b=x%20y",
    ),
    Case(
        "post-empty",
        "/body.lua",
        200,
        "method: POST\nbytes: 0\nbody: \n",
        method="POST",
        request_body=b"",
    ),
    Case("subdir", "/sub/inner.lua", 200, "inner\n"),
    Case("path-info", "/hello.lua/extra/path", 200, "Hello, world!\n", oracle=False),
]

ORACLE_CASES = [case for case in CASES if case.oracle]


def fetch(base: str, case: Case) -> Response:
    return http_request(
        base,
        case.path,
        method=case.method,
        headers=list(case.request_headers),
        body=case.request_body,
    )


def normalise_location(value: str | None) -> str | None:
    # nginx may make a relative Location absolute (absolute_redirect) for
    # one route and not the other; both mean the same to a client.
    return None if value is None else re.sub(r"^http://127\.0\.0\.1:\d+(?=/)", "", value)


def normalise_body(body: bytes) -> str:
    # Default error pages differ only by the server token line.
    return re.sub(r"<hr><center>[^<]*</center>", "<hr><center>SERVER</center>", body.decode())


def check_case(resp: Response, case: Case) -> None:
    assert resp.status == case.status, resp.text
    if case.body is not None:
        assert resp.text == case.body
    if case.body_re is not None:
        assert re.search(case.body_re, resp.text), resp.text
    for name, expected in case.headers.items():
        value = resp.header(name)
        if name == "location":
            value = normalise_location(value)
        assert value == expected, f"{name}: {value!r}"
    if case.set_cookies:
        assert resp.header_all("set-cookie") == list(case.set_cookies)


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("route", ["unix", "tcp"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(e2e: Stack, logs: Logs, case: Case, route: str, run: int) -> None:
    for name, pattern in case.logged:
        if name == "fcgi-lua":
            logs.allow(name, pattern)
    resp = fetch(e2e.urls[route], case)
    check_case(resp, case)
    if case.status >= 500:
        # The default (non-debug) error page must not leak the Lua error.
        assert "boom" not in resp.text
    logs.assert_no_errors()


COMPARED_HEADERS = ("content-type", "location", "x-custom", "cache-control")


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("case", ORACLE_CASES, ids=str)
def test_same_as_openresty(e2e: Stack, logs: Logs, case: Case, run: int) -> None:
    for name, pattern in case.logged:
        logs.allow(name, pattern)
    ours = fetch(e2e.urls["unix"], case)
    oracle = fetch(e2e.urls["oracle"], case)
    assert ours.status == oracle.status
    if case.status < 500:  # a 500's body is ours to choose (and hide)
        assert normalise_body(ours.body) == normalise_body(oracle.body)
    for name in COMPARED_HEADERS:
        a, b = ours.header(name), oracle.header(name)
        if name == "location":
            a, b = normalise_location(a), normalise_location(b)
        assert a == b, f"{name}: fcgi-lua {a!r} vs OpenResty {b!r}"
    assert ours.header_all("set-cookie") == oracle.header_all("set-cookie")
    logs.assert_no_errors()
