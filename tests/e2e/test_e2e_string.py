"""Debian's lua-nginx-string (OpenResty's lua-resty-string) unmodified
through real nginx, line by line against OpenResty running the same script
(scripts/string_cases.lua): resty.string's to_hex and atoi (nginx's
ngx_hex_dump and ngx_atoi through ffi.C, fcgi_lua/_ngxsyms.c here), md5,
sha1 ... sha512, aes and random (OpenSSL through ffi.C), and ngx.hmac_sha1
with its argument errors.  random is compared by length and format only."""

from __future__ import annotations

import pytest

from .e2e_clients import http_request
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e


def lines(stack: Stack, route: str, path: str) -> list[str]:
    resp = http_request(stack.urls[route], path)
    assert resp.status == 200, resp.text
    return resp.text.splitlines()


@pytest.mark.parametrize("route", ["unix", "tcp"])
def test_same_as_openresty(e2e: Stack, logs: Logs, route: str) -> None:
    for _ in range(2):
        ours = lines(e2e, route, "/string_cases.lua")
        oracle = lines(e2e, "oracle", "/string_cases.lua")
        assert len(ours) == len(oracle) > 60
        mismatches = [
            f"ours:   {a}\noracle: {b}" for a, b in zip(ours, oracle, strict=True) if a != b
        ]
        assert not mismatches, "\n".join(mismatches)
    assert "random true: 16 true true 32" in ours
    assert 'atoi "0042": 42' in ours
    logs.assert_no_errors()


def test_resty_names_are_debians_modules(e2e: Stack, logs: Logs) -> None:
    # OpenResty's names resolve to Debian's nginx/*.lua (socket.lua's aliases)
    assert lines(e2e, "unix", "/string_resty_alias.lua") == [
        "true true true 0.11",
        "900150983cd24fb0d6963f7d28e17f72",
    ]
    logs.assert_no_errors()
