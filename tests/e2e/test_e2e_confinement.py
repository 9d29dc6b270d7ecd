"""Confinement: whatever the URL or the FastCGI params say, fcgi-lua runs
only .lua files under its --root, and never shows another file's content.

Through nginx (``passall`` forwards every path, so nginx's own normalising
is not what saves us) and straight over FastCGI (params an attacker-shaped
or misconfigured front server could send)."""

from __future__ import annotations

import re

import pytest

from .e2e_clients import fastcgi_request, http_request, parse_raw_response, raw_http
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e

RUNS = [1, 2]
LUA_LOCATION = re.compile(r"[^/]\.lua(/|$)")  # nginx/fcgi-lua.conf's location
SECRETS = (b"SECRET-OUTSIDE-ROOT", b"TXT-SECRET", b"LUA-TXT-SECRET", b"root:", b"Hello")

# (path as sent on the request line, statuses acceptable). nginx itself
# rejects some of these with 400 before fcgi-lua sees them; fine either way.
HTTP_ATTEMPTS = [
    ("/../etc/passwd.lua", {400, 403, 404}),
    ("/%2e%2e/outside/secret.lua", {400, 403, 404}),
    ("/sub/%2e%2e/%2e%2e/outside/secret.lua", {400, 403, 404}),
    ("/sub/..%2f..%2foutside/secret.lua", {400, 403, 404}),
    ("/escape.lua", {403, 404}),
    ("/escape_dir/secret.lua", {403, 404}),
    ("/hello.lua%00.txt", {400, 403, 404}),
    ("/notes.txt", {403, 404}),
    ("/notes.lua.txt", {403, 404}),
    ("/sub", {403, 404}),
    ("/sub/", {403, 404}),
]


def _http_params() -> list[tuple[str, str, set[int]]]:
    params = []
    for path, allowed in HTTP_ATTEMPTS:
        params.append(("passall", path, allowed))
        # The shipped snippet forwards only paths naming a .lua file; nginx
        # handles the rest itself, which is not what this test is about.
        if LUA_LOCATION.search(path):
            params.append(("unix", path, allowed))
    return params


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize(
    ("route", "path", "allowed"), _http_params(), ids=[f"{r}:{p}" for r, p, _ in _http_params()]
)
def test_http_attempt_is_refused(
    e2e: Stack, logs: Logs, route: str, path: str, allowed: set[int], run: int
) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    resp = parse_raw_response(raw_http(e2e.urls[route], request.encode()))
    assert resp.status in allowed, resp.text
    for secret in SECRETS:
        assert secret not in resp.body
    logs.assert_no_errors()


def _params(e2e: Stack, **extra: str | bytes) -> dict[str, str | bytes]:
    params: dict[str, str | bytes] = {
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "",
        "REQUEST_URI": "/x.lua",
        "DOCUMENT_ROOT": str(e2e.root),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "GATEWAY_INTERFACE": "CGI/1.1",
    }
    params.update(extra)
    return params


def _fastcgi_attempts(e2e: Stack) -> list[tuple[str, dict[str, str | bytes]]]:
    root, outside = str(e2e.root), str(e2e.outside)
    return [
        ("dotdot", _params(e2e, SCRIPT_FILENAME=f"{root}/../outside/secret.lua")),
        ("absolute-outside", _params(e2e, SCRIPT_FILENAME=f"{outside}/secret.lua")),
        ("etc-passwd", _params(e2e, SCRIPT_FILENAME="/etc/passwd")),
        ("symlink-file", _params(e2e, SCRIPT_FILENAME=f"{root}/escape.lua")),
        ("symlink-dir", _params(e2e, SCRIPT_FILENAME=f"{root}/escape_dir/secret.lua")),
        ("extension", _params(e2e, SCRIPT_FILENAME=f"{root}/notes.txt")),
        ("double-extension", _params(e2e, SCRIPT_FILENAME=f"{root}/notes.lua.txt")),
        ("nul-byte", _params(e2e, SCRIPT_FILENAME=f"{root}/hello.lua\x00.txt".encode())),
        ("nul-before-ext", _params(e2e, SCRIPT_FILENAME=f"{root}/notes.txt\x00.lua".encode())),
        ("directory", _params(e2e, SCRIPT_FILENAME=f"{root}/sub")),
        ("missing", _params(e2e, SCRIPT_FILENAME=f"{root}/nope.lua")),
        (
            "script-name-dotdot",
            _params(e2e, SCRIPT_NAME="/../outside/secret.lua"),
        ),
        (
            # A front server with a wrong root must not widen --root.
            "document-root-widened",
            _params(e2e, DOCUMENT_ROOT="/", SCRIPT_NAME=f"{outside}/secret.lua"),
        ),
    ]


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_fastcgi_attempts_are_refused(e2e: Stack, logs: Logs, transport: str, run: int) -> None:
    address = str(e2e.unix_socket) if transport == "unix" else e2e.tcp_address
    failures = []
    for name, params in _fastcgi_attempts(e2e):
        result = fastcgi_request(address, params)
        resp = result.response
        leaked = [s for s in SECRETS if s in resp.body or s in result.stderr]
        if resp.status not in (403, 404) or leaked:
            failures.append(f"{name}: {resp.status} {resp.body[:120]!r} leaked={leaked}")
    assert not failures, "\n".join(failures)
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
def test_fastcgi_inside_root_is_served(e2e: Stack, logs: Logs, run: int) -> None:
    # The control for the refusals above: the same client, a legitimate path.
    by_filename = fastcgi_request(
        str(e2e.unix_socket), _params(e2e, SCRIPT_FILENAME=f"{e2e.root}/hello.lua")
    )
    by_script_name = fastcgi_request(e2e.tcp_address, _params(e2e, SCRIPT_NAME="/sub/inner.lua"))
    assert (by_filename.response.status, by_filename.response.body) == (200, b"Hello, world!\n")
    assert (by_script_name.response.status, by_script_name.response.body) == (200, b"inner\n")
    assert by_filename.app_status == 0
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
def test_missing_script_is_404(e2e: Stack, logs: Logs, run: int) -> None:
    resp = http_request(e2e.urls["unix"], "/no/such/dir/script.lua")
    assert resp.status == 404
    logs.assert_no_errors()
