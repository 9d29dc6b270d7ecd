"""resty.core as fcgi-lua provides it, and the libraries that need it, run
unmodified through real nginx: Debian's lua-resty-lrucache (both
resty.lrucache and resty.lrucache.pureffi, on the real FFI of the default
LuaJIT runtime) and what a library sees of resty.core.*, ngx.base64,
ngx.resp, table.* and string.buffer, line by line against OpenResty
running the same script with Debian's own lua-resty-core."""

from __future__ import annotations

import pytest

from .e2e_clients import Response, http_request
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e


def fetch(stack: Stack, route: str, path: str) -> Response:
    resp = http_request(stack.urls[route], path)
    assert resp.status == 200, resp.text
    return resp


def assert_same_lines(ours: str, oracle: str, at_least: int) -> None:
    a, b = ours.splitlines(), oracle.splitlines()
    mismatches = [f"ours:   {x}\noracle: {y}" for x, y in zip(a, b, strict=False) if x != y]
    assert not mismatches, "\n".join(mismatches)
    assert len(a) == len(b) >= at_least, (a, b)


@pytest.mark.parametrize("route", ["unix", "tcp"])
def test_lrucache_same_as_openresty(e2e: Stack, logs: Logs, route: str) -> None:
    for _ in range(2):  # the second run: the modules are loaded, the code cached
        ours = fetch(e2e, route, "/lrucache_cases.lua").text
        assert_same_lines(ours, fetch(e2e, "oracle", "/lrucache_cases.lua").text, 30)
    assert "== resty.lrucache.pureffi" in ours
    logs.assert_no_errors()


@pytest.mark.parametrize("route", ["unix", "tcp"])
def test_resty_core_same_as_openresty(e2e: Stack, logs: Logs, route: str) -> None:
    ours = fetch(e2e, route, "/resty_core_cases.lua")
    oracle = fetch(e2e, "oracle", "/resty_core_cases.lua")
    assert_same_lines(ours.text, oracle.text, 60)
    # ngx.resp.add_header's values reach the client as OpenResty's do
    for name in ("x-added", "content-type", "x-under"):
        assert ours.header_all(name) == oracle.header_all(name), name
    assert ours.header_all("x-added") == ["one", "two", "three"]
    logs.assert_no_errors()
