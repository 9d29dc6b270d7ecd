"""fcgi-lua behind lighttpd, Apache httpd and Caddy, each started from the
config fronts/ ships (fronts_stack.py): the same request-in, response-out
cases as through nginx (hello, query, form post, upload, cookies, redirect,
streaming flush, 404, 500), each run twice, each asserting that neither
fcgi-lua nor the front logged an unexpected error. docs/fronts.md is the
table these tests back.

A front whose binary is missing is skipped on a developer's machine and
fails under ``CI`` (scripts/test installs lighttpd, apache2 and caddy).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from .e2e_clients import Response, http_request, timed_get
from .fronts_stack import (
    BINARIES,
    Front,
    FrontLogs,
    FrontsStack,
    remove_shared,
    start_fronts_stack,
)

pytestmark = pytest.mark.e2e

FRONTS = ["lighttpd", "apache2", "caddy"]
RUNS = [1, 2]
# fcgi-lua's own error pages end with this line: the answer came from
# fcgi-lua, not from the front's error page.
FCGI_LUA_PAGE = "<hr><center>fcgi-lua</center>"


@pytest.fixture(scope="session")
def fronts_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontsStack]:
    stack = start_fronts_stack(tmp_path_factory.mktemp("fronts"))
    try:
        yield stack
    finally:
        problems = stack.stop()
        remove_shared(stack)
    # Graceful stop is part of the contract, for fcgi-lua and the fronts.
    assert not problems, "; ".join(problems)


def started(stack: FrontsStack, name: str) -> Front:
    if BINARIES[name] is None:
        message = f"{name} binary not found (apt-get install {name})"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    if problem := stack.dead_service():
        pytest.fail(problem, pytrace=False)
    try:
        return stack.front(name)
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"{name} did not start: {exc}", pytrace=False)


@pytest.fixture(params=FRONTS)
def front(request: pytest.FixtureRequest, fronts_stack: FrontsStack) -> Front:
    return started(fronts_stack, request.param)


@pytest.fixture
def apache2(fronts_stack: FrontsStack) -> Front:
    return started(fronts_stack, "apache2")


@pytest.fixture
def logs(fronts_stack: FrontsStack, request: pytest.FixtureRequest) -> Iterator[FrontLogs]:
    """Overrides conftest.py's ``logs``: no nginx here; fcgi-lua's log and
    the log of the front the test uses must get no unexpected error."""
    name = "front" if "front" in request.fixturenames else "apache2"
    front: Front = request.getfixturevalue(name)
    watch = FrontLogs(fronts_stack, front.name)
    yield watch
    errors = watch.unexpected_errors()
    assert not errors, "unexpected errors logged:\n" + "\n".join(errors)


@pytest.fixture(autouse=True)
def _every_test_checks_logs(logs: FrontLogs) -> None:
    """Overrides conftest.py's (which starts the nginx stack): ``logs`` checks."""


# -- request in, response out ----------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    status: int
    body: str | None = None  # exact body; None: not checked
    body_re: str | None = None
    method: str = "GET"
    request_headers: tuple[tuple[str, str], ...] = ()
    request_body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)  # expected, names lower-case
    set_cookies: tuple[str, ...] = ()
    logged: str | None = None  # an error fcgi-lua is expected to log

    def __str__(self) -> str:
        return self.name


FORM = "application/x-www-form-urlencoded"
POST_ANSWER = "method: POST\nbytes: 11\nbody: a=1&b=x%20y\narg a = 1\narg b = x y\n"

CASES = [
    Case("hello", "/hello.lua", 200, "Hello, world!\n", headers={"content-type": "text/plain"}),
    Case(
        "query",
        "/args.lua?a=1&a=2&c&d=x%20y&e=",
        200,
        "a = [1, 2]\nc = true (boolean)\nd = x y (string)\ne =  (string)\n",
    ),
    Case("path-info", "/hello.lua/extra/path", 200, "Hello, world!\n"),
    Case("subdir", "/sub/inner.lua", 200, "inner\n"),
    Case(
        "form-post",
        "/body.lua",
        200,
        POST_ANSWER,
        method="POST",
        request_headers=(("Content-Type", FORM),),
        request_body=b"a=1&b=x%20y",
    ),
    Case(
        "cookies-in",
        "/cookie_get.lua",
        200,
        "cookie_a = 1\ncookie_b = x y\ncookie_c = nil\ncookie_missing = nil\n"
        "http_cookie = a=1; b=x y\nheader = a=1; b=x y\n",
        request_headers=(("Cookie", "a=1; b=x y"),),
    ),
    Case(
        "cookies-out",
        "/cookie_set.lua",
        200,
        "set 3\n",
        set_cookies=(
            "a=1; Path=/",
            "b=2; HttpOnly; Secure",
            "c=3; Max-Age=60; SameSite=Lax",
        ),
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
    ),
    Case("redirect-302", "/redirect_302.lua", 302, headers={"location": "/hello.lua"}),
    Case(
        "redirect-301",
        "/redirect_301.lua",
        301,
        headers={"location": "http://example.com/moved"},
    ),
    Case("status-201", "/status_201.lua", 201, "created\n"),
    Case("exit-404", "/exit_404.lua", 404, body_re=re.escape(FCGI_LUA_PAGE)),
    Case("missing-script", "/no_such_script.lua", 404, body_re=re.escape(FCGI_LUA_PAGE)),
    Case("exit-503", "/exit_503.lua", 503, body_re=re.escape(FCGI_LUA_PAGE)),
    Case(
        "error-500",
        "/error.lua",
        500,
        body_re=re.escape(FCGI_LUA_PAGE),
        logged=r"boom from e2e|error\.lua",
    ),
    Case("head", "/hello.lua", 200, "", method="HEAD"),
]


def fetch(base: str, case: Case) -> Response:
    return http_request(
        base,
        case.path,
        method=case.method,
        headers=list(case.request_headers),
        body=case.request_body,
    )


def check_case(resp: Response, case: Case) -> None:
    assert resp.status == case.status, resp.text
    if case.body is not None:
        assert resp.text == case.body
    if case.body_re is not None:
        assert re.search(case.body_re, resp.text), resp.text
    for name, expected in case.headers.items():
        value = resp.header(name)
        if name == "location" and value is not None:
            # a front may make a relative Location absolute; same to a client
            value = re.sub(r"^http://127\.0\.0\.1:\d+(?=/)", "", value)
        assert value == expected, f"{name}: {value!r}"
    if case.set_cookies:
        assert resp.header_all("set-cookie") == list(case.set_cookies)
    # The CGI "Status:" line is for the front; a client must never see it.
    assert resp.header("status") is None, resp.headers


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(front: Front, logs: FrontLogs, case: Case, run: int) -> None:
    if case.logged:
        logs.allow("fcgi-lua", case.logged)
    resp = fetch(front.url, case)
    check_case(resp, case)
    if case.status >= 500:
        assert "boom" not in resp.text  # the Lua error stays in the log
    if case.logged:
        logs.wait_for("fcgi-lua", r"boom from e2e")


# -- the params each front sends -------------------------------------------------


def test_params_as_nginx_would_send_them(front: Front, fronts_stack: FrontsStack) -> None:
    """SCRIPT_NAME / PATH_INFO split, decoded uri, raw request_uri, the
    script's real path, Authorization and cookies all reach the script."""
    resp = http_request(
        front.url,
        "/front_env.lua/a%20b/c?q=%41&r=1",
        headers=[("Authorization", "Basic dXNlcjpwdw=="), ("Cookie", "a=1; b=2")],
    )
    assert resp.status == 200, resp.text
    port = urlsplit(front.url).port
    # lighttpd normalises the query's unreserved escapes (%41 is "A")
    # before anyone sees it; the arguments decode the same.
    args = "q=A&r=1" if front.name == "lighttpd" else "q=%41&r=1"
    assert resp.text == (
        "uri: /front_env.lua/a b/c\n"
        "request_uri: /front_env.lua/a%20b/c?q=%41&r=1\n"
        f"args: {args}\n"
        "script_name: /front_env.lua\n"
        "path_info: /a b/c\n"
        f"script_filename: {fronts_stack.root}/front_env.lua\n"
        f"request_filename: {fronts_stack.root}/front_env.lua\n"
        "scheme: http\n"
        "host: 127.0.0.1\n"
        f"server_port: {port}\n"
        "http_authorization: Basic dXNlcjpwdw==\n"
        "cookie_a: 1\n"
        "cookie_b: 2\n"
    )


def test_repeated_cookie_headers(front: Front, logs: FrontLogs) -> None:
    """Two Cookie lines (browsers send one): lighttpd joins them with "; ",
    Apache and Caddy with ", ", which reads as part of a cookie value
    (docs/fronts.md)."""
    resp = http_request(
        front.url, "/cookie_get.lua", headers=[("Cookie", "a=1"), ("Cookie", "b=2")]
    )
    assert resp.status == 200, resp.text
    joined = "a=1; b=2" if front.name == "lighttpd" else "a=1, b=2"
    cookie_a, cookie_b = ("1", "2") if front.name == "lighttpd" else ("1, b=2", "nil")
    assert resp.text.startswith(
        f"cookie_a = {cookie_a}\ncookie_b = {cookie_b}\ncookie_c = nil\ncookie_missing = nil\n"
        f"http_cookie = {joined}\n"
    )


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_response_framing(front: Front, logs: FrontLogs, method: str) -> None:
    """fcgi-lua's Content-Length reaches the client, except through Apache,
    which re-sends the body chunked (docs/fronts.md)."""
    resp = http_request(front.url, "/hello.lua", method=method)
    assert resp.status == 200
    assert resp.body == (b"" if method == "HEAD" else b"Hello, world!\n")
    if front.name == "apache2":
        assert resp.header("content-length") is None
        if method == "GET":
            assert resp.header("transfer-encoding") == "chunked"
    else:
        assert resp.header("content-length") == "14"


# -- bodies ------------------------------------------------------------------------


def post(base: str, path: str, body: bytes, ctype: str, *, chunked: bool = False) -> Response:
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        headers = {"Content-Type": ctype}
        if chunked:
            pieces = [body[i : i + 4] for i in range(0, len(body), 4)]
            conn.request("POST", path, iter(pieces), headers, encode_chunked=True)
        else:
            conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], data)
    finally:
        conn.close()


@pytest.mark.parametrize("run", RUNS)
def test_chunked_form_post(front: Front, logs: FrontLogs, run: int) -> None:
    # Caddy sends CONTENT_LENGTH "-1" for a chunked body (fcgi_lua/body.py).
    resp = post(front.url, "/body.lua", b"a=1&b=x%20y", FORM, chunked=True)
    assert resp.status == 200, resp.text
    assert resp.text == POST_ANSWER


BOUNDARY = "----frontsBoundary7Qx"


def multipart(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"\r\nContent-Type: application/octet-stream'
        out += f"--{BOUNDARY}\r\n{disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_upload(
    front: Front, fronts_stack: FrontsStack, logs: FrontLogs, run: int, chunked: bool
) -> None:
    photo = os.urandom(300 * 1024)  # above the 16k buffer: spooled to a temp file
    small = b"tiny\r\n--not-the-boundary\r\n"
    body = multipart(
        [("title", None, b"Hello"), ("up", "photo.bin", photo), ("up", "small.txt", small)]
    )
    resp = post(
        front.url,
        "/body_multipart.lua",
        body,
        f"multipart/form-data; boundary={BOUNDARY}",
        chunked=chunked,
    )
    assert resp.status == 200, resp.text
    md5 = hashlib.md5
    assert resp.text == (
        "field title = Hello\n"
        f"file 1 up photo.bin application/octet-stream {len(photo)} {md5(photo).hexdigest()}\n"
        f"file 2 up small.txt application/octet-stream {len(small)} {md5(small).hexdigest()}\n"
        "truncated: nil\n"
    )
    # fcgi-lua removes the request's temp files once the request has ended
    deadline = time.monotonic() + 5
    while (left := os.listdir(fronts_stack.body_temp)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []


# -- streaming, connections ----------------------------------------------------------


@pytest.mark.parametrize("run", RUNS)
def test_flush_streams(front: Front, logs: FrontLogs, run: int) -> None:
    # stream.lua: "first", ngx.flush(true), sleep 1 s, "last". Buffered by
    # the front, both would arrive together at the end.
    arrival = timed_get(front.url, "/stream.lua")
    first, last = arrival.first_time(b"first\n"), arrival.first_time(b"last\n")
    assert first < 0.8, f"first line after {first:.2f}s: the front buffered it"
    assert last - first > 0.8
    assert arrival.data.startswith(b"HTTP/1.1 200")


def test_sequential_and_concurrent_requests(front: Front, logs: FrontLogs) -> None:
    for _ in range(30):
        resp = http_request(front.url, "/hello.lua")
        assert (resp.status, resp.text) == (200, "Hello, world!\n")
    results: list[tuple[int, str]] = []

    def one() -> None:
        resp = http_request(front.url, "/sleep100.lua")
        results.append((resp.status, resp.text))

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [(200, "ok\n")] * 20


@pytest.mark.parametrize("run", RUNS)
def test_client_disconnect_mid_response(front: Front, logs: FrontLogs, run: int) -> None:
    # Every front closes its FastCGI connection when the client goes away
    # (none sends FCGI_ABORT_REQUEST): fcgi-lua must notice and stop.
    logs.allow("caddy", r"aborting with incomplete response")
    url = urlsplit(front.url)
    host = f"{url.hostname}:{url.port}"  # Caddy serves only the site's own Host
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(f"GET /slow_stream.lua HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        seen = b""
        while b"tick 1\n" not in seen:
            data = sock.recv(4096)
            assert data, f"closed early: {seen!r}"
            seen += data
    logs.wait_for("fcgi-lua", r"(?i)abort\w*\b.*slow_stream\.lua", timeout=5)
    resp = http_request(front.url, "/hello.lua")
    assert (resp.status, resp.text) == (200, "Hello, world!\n")


SOURCE_PROBES = [
    "/hello.lua",
    "/hello.lua/",
    "/hello.lua/extra",
    "//hello.lua",
    "/./hello.lua",
    "/sub/../hello.lua",
    "/hello.lua.",
    "/hello.lua%20",
    "/hello%2elua",
    "/hello.lua?x=1",
]


def test_static_files_but_never_a_scripts_source(front: Front, logs: FrontLogs) -> None:
    resp = http_request(front.url, "/static.txt")
    assert (resp.status, resp.text) == (200, "static file\n")
    for path in SOURCE_PROBES:
        resp = http_request(front.url, path)
        assert "ngx.say" not in resp.text, f"{path} sent the source: {resp.text!r}"


# -- front-specific ------------------------------------------------------------------


@pytest.mark.parametrize("run", RUNS)
def test_apache_php_fpm_style_config(apache2: Front, fronts_stack: FrontsStack, run: int) -> None:
    """The config of php-fpm guides (no ProxyFCGIBackendType GENERIC) sends
    SCRIPT_FILENAME "proxy:fcgi://localhost/...": fcgi-lua strips the prefix."""
    base = apache2.extra_urls["fpm-style"]
    resp = http_request(base, "/front_env.lua?x=1")
    assert resp.status == 200, resp.text
    root = fronts_stack.root
    assert f"script_filename: proxy:fcgi://localhost{root}/front_env.lua\n" in resp.text
    assert f"request_filename: {root}/front_env.lua\n" in resp.text
    assert http_request(base, "/hello.lua/extra").text == "Hello, world!\n"
    resp = http_request(base, "/no_such_script.lua")
    assert resp.status == 404
    assert FCGI_LUA_PAGE in resp.text
