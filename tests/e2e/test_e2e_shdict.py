"""ngx.shared.DICT through real nginx, line by line against OpenResty
running the same script (lua_shared_dict there, shared_dicts here): every
method, value types, flags, the error strings, ttl and expiry, lists,
get_keys and the flushes."""

from __future__ import annotations

import pytest

from .e2e_clients import http_request
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e


def lines(stack: Stack, route: str) -> list[str]:
    resp = http_request(stack.urls[route], "/shdict_cases.lua")
    assert resp.status == 200, resp.text
    return resp.text.splitlines()


@pytest.mark.parametrize("route", ["unix", "tcp"])
def test_same_as_openresty(e2e: Stack, logs: Logs, route: str) -> None:
    ours = lines(e2e, route)
    oracle = lines(e2e, "oracle")
    mismatches = [f"ours:   {a}\noracle: {b}" for a, b in zip(ours, oracle, strict=False) if a != b]
    assert not mismatches, "\n".join(mismatches)
    assert len(ours) == len(oracle) > 100
    logs.assert_no_errors()
