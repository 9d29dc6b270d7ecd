"""lua-cjson through real nginx, line by line against OpenResty running the
same script (scripts/cjson_cases.lua): nested tables, cjson.null and
ngx.null (the same NULL light userdata), number precision, escaping, the
decoder's errors, cjson.safe.

Both sides load the same C module: Debian's lua-cjson 2.1.0 from
/usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so (the oracle's LuaJIT has it on
its default package.cpath; test_oracle_loads_debians_cjson checks it).  So
OpenResty's own fork's extras (cjson.empty_array, array_mt,
encode_empty_table_as_object, decode_array_with_array_mt) are absent on
both sides, and the "fork extras" line says so (docs/lua-api.md)."""

from __future__ import annotations

import pytest

from .e2e_clients import http_request
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e


def lines(stack: Stack, route: str, path: str = "/cjson_cases.lua") -> list[str]:
    resp = http_request(stack.urls[route], path)
    assert resp.status == 200, resp.text
    return resp.text.splitlines()


@pytest.mark.parametrize("route", ["unix", "tcp"])
def test_same_as_openresty(e2e: Stack, logs: Logs, route: str) -> None:
    for _ in range(2):  # the module's settings must not leak between requests
        ours = lines(e2e, route)
        oracle = lines(e2e, "oracle")
        assert len(ours) == len(oracle) > 90
        mismatches = [
            f"ours:   {a}\noracle: {b}" for a, b in zip(ours, oracle, strict=True) if a != b
        ]
        assert not mismatches, "\n".join(mismatches)
    logs.assert_no_errors()


@pytest.mark.parametrize("route", ["unix", "oracle"])
def test_oracle_loads_debians_cjson(e2e: Stack, logs: Logs, route: str) -> None:
    found = lines(e2e, route, "/cjson_where.lua")
    assert found == [
        "cjson /usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so 2.1.0",
        'null {"a":null} true',
    ]
    logs.assert_no_errors()
