"""CGI scripts, unchanged, through real nginx: the same cgi_*.lua files
run by fcgi-lua (CGI mode, marked by their "#!/usr/bin/env lua" line) and,
as the oracle, by Debian's fcgiwrap with a real Lua interpreter (a process
per request).  Also: marking by path pattern, os.exit ending only the
request, and cgiapp/, an application of three scripts and two shared
modules (package.path relative to the script, a require'd module that
reads os.getenv and prints, a dofile'd chunk, os.exit after an error
page), compared byte for byte with fcgiwrap."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from .e2e_clients import Response, fastcgi_request, http_request, raw_http
from .e2e_stack import Logs, Stack, fcgi_lua_argv

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
    _, path, method, headers, body, _, _ = case
    head = f"{method} {path} HTTP/1.1\r\nHost: cgi.test\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    request = head.encode() + b"\r\n" + (body or b"")
    theirs = split_response(raw_http(e2e.urls["cgi"], request))
    ours = split_response(raw_http(e2e.urls["unix"], request))
    assert ours[0] == theirs[0]  # status line
    assert ours[1] == theirs[1]  # every header line but the framing, in order
    assert ours[2] == theirs[2]  # body
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


# -- cgiapp/: a CGI application of several files ------------------------------

# name, method, path, body
APP_CASES = [
    ("index", "GET", "/cgiapp/index.lua", None),
    ("index-query", "GET", "/cgiapp/index.lua?name=a%3Cb%3E+c", None),
    ("form-post", "POST", "/cgiapp/form.lua", b"id=7&note=hello+there%21"),
    ("form-missing-note", "POST", "/cgiapp/form.lua", b"id=8"),
    ("error-page-exit", "GET", "/cgiapp/error.lua", None),
    ("error-page-exit-in-module", "GET", "/cgiapp/error.lua?in=module", None),
]
APP_IDS = [c[0] for c in APP_CASES]

# Framing nginx chooses per upstream: fcgiwrap's responses have no length
# (nginx sends them chunked), fcgi-lua's buffered ones do.
FRAMING = {"date", "content-length", "transfer-encoding"}


def app_request(method: str, path: str, body: bytes | None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: cgiapp.test\r\nConnection: close\r\n"
    if body is not None:
        head += "Content-Type: application/x-www-form-urlencoded\r\n"
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


def split_response(raw: bytes) -> tuple[bytes, list[bytes], bytes]:
    """Status line, header lines (framing left out, as sent), decoded body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = [h for h in lines if h.split(b":", 1)[0].strip().lower().decode() not in FRAMING]
    if any(h.lower() == b"transfer-encoding: chunked" for h in lines):
        decoded = b""
        while True:
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded += body[:size]
            body = body[size + 2 :]
        body = decoded
    return status_line, headers, body


def fetch_app(stack: Stack, route: str, case: tuple) -> tuple[bytes, list[bytes], bytes]:  # type: ignore[type-arg]
    _, method, path, body = case
    return split_response(raw_http(stack.urls[route], app_request(method, path, body)))


@pytest.mark.parametrize("case", APP_CASES, ids=APP_IDS)
def test_cgi_app_same_as_fcgiwrap(e2e: Stack, logs: Logs, case: tuple) -> None:  # type: ignore[type-arg]
    if "cgi" not in e2e.urls:
        pytest.skip("fcgiwrap or a lua interpreter is not installed")
    theirs = fetch_app(e2e, "cgi", case)
    assert theirs[0] != b"HTTP/1.1 502 Bad Gateway", "fcgiwrap could not run cgiapp"
    for _ in range(2):  # twice: the second request finds everything compiled
        ours = fetch_app(e2e, "unix", case)
        assert ours[0] == theirs[0]  # status line
        assert ours[1] == theirs[1]  # every header line, in order
        assert ours[2] == theirs[2]  # body
    logs.assert_no_errors()


def test_cgi_app_expected_pages(e2e: Stack, logs: Logs) -> None:
    # what the comparison above compares, spelled out (also without fcgiwrap)
    status, headers, body = fetch_app(e2e, "unix", APP_CASES[1])
    assert status == b"HTTP/1.1 200 OK"
    assert b"X-App: cgiapp" in headers
    assert b"X-Request: GET /cgiapp/index.lua" in headers
    text = body.decode()
    assert "<p>pages rendered by this module: 1</p>" in text  # a fresh module
    assert "<p>hello a&lt;b&gt; c</p>" in text
    assert "<p>motd: Welcome to &lt;cgiapp&gt;</p>" in text  # data/motd.txt
    assert "<p>check: GET Welcome to <cgiapp></p>" in text  # loadfile'd
    assert "<p>same page module: true</p>" in text  # module(), package.seeall
    status, _, body = fetch_app(e2e, "unix", APP_CASES[2])
    assert (status, body) == (
        b"HTTP/1.1 200 OK",
        b"saved: hello there!\nafter remove: data/note-7.txt: No such file or directory\n"
        b"length: 24\n",
    )
    status, _, body = fetch_app(e2e, "unix", APP_CASES[5])
    # "Status: 404" as the module wrote it: nginx's status line says no more
    assert (status, body) == (b"HTTP/1.1 404", b"error 404: no such page\n")
    status, _, body = fetch_app(e2e, "unix", APP_CASES[4])
    assert (status, body) == (
        b"HTTP/1.1 503 Service Unavailable",
        b"<h1>down for maintenance</h1>\r\n",
    )
    logs.assert_no_errors()


PROBE = """\
ngx.say(package.path)
ngx.say(package.cpath)
ngx.say(tostring(package.loaded.page), " ", tostring(package.loaded.util), " ", tostring(util))
ngx.say(package.searchpath("nginx.redis", package.path) ~= nil)
"""


def test_cgi_app_leaves_nothing_in_the_worker(e2e: Stack, logs: Logs) -> None:
    (e2e.root / "cgiapp_probe.lua").write_text(PROBE)
    before = http_request(e2e.urls["unix"], "/cgiapp_probe.lua").text
    for case in APP_CASES:
        fetch_app(e2e, "unix", case)
    after = http_request(e2e.urls["unix"], "/cgiapp_probe.lua").text
    assert after == before
    assert after.endswith("nil nil nil\ntrue\n")
    # an ngx script's require of a library on the path (failed once)
    resp = http_request(e2e.urls["unix"], "/redis_basic.lua")
    assert "module 'resty.redis' not found" not in resp.text
    assert e2e.dead_service() == ""
    logs.assert_no_errors()


def test_cgi_app_os_exit_keeps_the_worker(e2e: Stack, logs: Logs) -> None:
    pids = set()
    for _ in range(3):
        for case in APP_CASES[3:]:
            fetch_app(e2e, "unix", case)
        pids.add(http_request(e2e.urls["unix"], "/cgiapp_pid.lua").text)
    assert len(pids) == 1  # the same worker served them all
    assert e2e.dead_service() == ""
    log = e2e.fcgi_log.read_text()
    assert "recycled" not in log and "os.exit" not in log
    logs.assert_no_errors()


def test_a_worker_ended_by_a_script_is_logged_with_its_name(tmp_path: Path) -> None:
    # its own fcgi-lua: the shared stack's worker must not die; two
    # workers, since one is a single process without a master
    root = tmp_path / "root"
    root.mkdir()
    (root / "quit.lua").write_text('ngx.say("bye")\nos.exit(0)\n')
    (root / "hello.lua").write_text('ngx.say("hello")\n')
    sock = tmp_path / "f.sock"
    log_path = tmp_path / "fcgi-lua.log"
    argv = fcgi_lua_argv("serve", "--listen", f"unix:{sock}", "--root", str(root), "--workers", "2")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        params = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "/quit.lua",
            "SCRIPT_FILENAME": str(root / "quit.lua"),
            "DOCUMENT_ROOT": str(root),
        }
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError):  # the worker died mid-request
            fastcgi_request(str(sock), params, timeout=5)
        pattern = re.compile(r"worker \d+ ended by a script's os\.exit")
        while time.monotonic() < deadline and not pattern.search(log_path.read_text()):
            time.sleep(0.05)
        log = log_path.read_text()
        assert f"os.exit(0) in {root / 'quit.lua'} at {root / 'quit.lua'}:2" in log, log
        assert pattern.search(log), log
        assert "recycled" not in log
        # and a new worker serves
        params.update(SCRIPT_NAME="/hello.lua", SCRIPT_FILENAME=str(root / "hello.lua"))
        while time.monotonic() < deadline:
            try:
                if fastcgi_request(str(sock), params, timeout=5).response.body == b"hello\n":
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("no worker came back:\n" + log_path.read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=20)
