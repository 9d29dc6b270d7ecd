"""ngx.re.* through real nginx, line by line against OpenResty running the
same script (its ngx.re is lua-resty-core over PCRE 8): captures, named
and duplicate names, options, ctx.pos, find's nth, gmatch, sub/gsub
templates and functions, ngx.re.split, and the error strings; and a
require of a module whose top level yields, which fails alike."""

from __future__ import annotations

import pytest

from .e2e_clients import http_request
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e

# What OpenResty logs at error level for the bad templates the script tries.
ORACLE_TEMPLATE_ERRORS = (
    r'attempt to use named capturing variable "x"|the closing bracket in "1" variable'
    r"|lua script: invalid capturing variable name found in"
)


def lines(stack: Stack, route: str) -> list[str]:
    resp = http_request(stack.urls[route], "/re_cases.lua")
    assert resp.status == 200, resp.text
    return resp.text.splitlines()


@pytest.mark.parametrize("route", ["unix", "tcp"])
def test_same_as_openresty(e2e: Stack, logs: Logs, route: str) -> None:
    logs.allow("nginx", ORACLE_TEMPLATE_ERRORS)
    logs.allow("fcgi-lua", ORACLE_TEMPLATE_ERRORS)
    ours = lines(e2e, route)
    oracle = lines(e2e, "oracle")
    assert len(ours) == len(oracle) > 130
    mismatches = [f"ours:   {a}\noracle: {b}" for a, b in zip(ours, oracle, strict=True) if a != b]
    assert not mismatches, "\n".join(mismatches)


REQUIRE_TOPLEVEL = """\
plain: true loaded
sleep: false attempt to yield across C-call boundary
again: false loop or previous error loading module 'requiremod_sleep'
"""


@pytest.mark.parametrize("route", ["unix", "oracle"])
def test_require_of_a_module_that_yields_at_top_level(e2e: Stack, logs: Logs, route: str) -> None:
    # docs/lua-api.md, "require": the same failure as OpenResty's
    resp = http_request(e2e.urls[route], "/require_toplevel.lua")
    assert resp.status == 200, resp.text
    assert resp.text == REQUIRE_TOPLEVEL
