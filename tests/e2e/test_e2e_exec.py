"""ngx.exec through real nginx: fcgi-lua answers with X-Accel-Redirect and
nginx performs the internal redirect (to another script, an `internal`
location, a named location); compared with OpenResty where its ngx.exec
does the same."""

from __future__ import annotations

import pytest

from .e2e_clients import http_request
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e

CASES = [
    ("to-script", "/exec_lua.lua", "target uri=/exec_target.lua args=b=2%203\n"),
    ("to-internal", "/exec_internal.lua", "internal uri=/exec-internal/page args=a=1&c=4\n"),
    ("to-named", "/exec_named.lua?q=1", "named uri=/exec_named.lua args=q=1\n"),
]


@pytest.mark.parametrize("route", ["unix", "tcp", "oracle"])
@pytest.mark.parametrize(("name", "path", "body"), CASES, ids=[c[0] for c in CASES])
def test_exec(e2e: Stack, logs: Logs, name: str, path: str, body: str, route: str) -> None:
    resp = http_request(e2e.urls[route], path)
    assert resp.status == 200, resp.text
    assert resp.text == body
    assert resp.header("x-accel-redirect") is None  # consumed by nginx
    logs.assert_no_errors()


def test_exec_after_output_is_an_error(e2e: Stack, logs: Logs) -> None:
    ours = http_request(e2e.urls["unix"], "/exec_after_say.lua")
    oracle = http_request(e2e.urls["oracle"], "/exec_after_say.lua")
    assert ours.status == oracle.status == 200
    assert ours.text == oracle.text
    assert ours.text.endswith("attempt to call ngx.exec after sending out response headers\n")
    logs.assert_no_errors()


def test_x_accel_redirect_header_passes_through(e2e: Stack, logs: Logs) -> None:
    resp = http_request(e2e.urls["unix"], "/exec_header.lua")
    assert resp.status == 200
    assert resp.text == "internal uri=/exec-internal/by-header args=\n"
    logs.assert_no_errors()


def test_internal_location_is_not_reachable_directly(e2e: Stack, logs: Logs) -> None:
    assert http_request(e2e.urls["unix"], "/exec-internal/page").status == 404
    logs.allow("nginx", r"exec-internal")
    logs.assert_no_errors()
