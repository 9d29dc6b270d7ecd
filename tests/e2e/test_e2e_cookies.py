"""Cookies both ways through real nginx: ngx.var.cookie_NAME and
$http_cookie (also with several Cookie header lines), Set-Cookie through
ngx.header, and Debian's lua-nginx-cookie (lua-resty-cookie) unmodified,
each compared with OpenResty running the same script."""

from __future__ import annotations

import pytest

from .e2e_clients import Response, http_request
from .e2e_stack import REPO, Logs, Stack

pytestmark = pytest.mark.e2e

TWO_COOKIE_HEADERS = [("Cookie", "a=1; b=two%20words"), ("Cookie", "c=3; a=9")]

# (name, path, request headers)
CASES = [
    ("one-header", "/cookie_get.lua", [("Cookie", "a=1; b=2;c=x y")]),
    ("two-headers", "/cookie_get.lua", TWO_COOKIE_HEADERS),
    ("no-cookie", "/cookie_get.lua", []),
    ("set-several", "/cookie_set.lua", []),
    ("resty-cookie", "/cookie_resty.lua", [("Cookie", "a=1; b=2; session=old")]),
    ("resty-cookie-two-headers", "/cookie_resty.lua", TWO_COOKIE_HEADERS),
    ("resty-cookie-none", "/cookie_resty.lua", []),
]


def get(stack: Stack, route: str, path: str, headers: list[tuple[str, str]]) -> Response:
    return http_request(stack.urls[route], path, headers=headers)


@pytest.mark.parametrize("route", ["unix", "tcp"])
@pytest.mark.parametrize(("name", "path", "headers"), CASES, ids=[c[0] for c in CASES])
def test_same_as_openresty(
    e2e: Stack, logs: Logs, name: str, path: str, headers: list[tuple[str, str]], route: str
) -> None:
    ours = get(e2e, route, path, headers)
    oracle = get(e2e, "oracle", path, headers)
    assert ours.status == oracle.status == 200, ours.text
    assert ours.text == oracle.text
    assert ours.header_all("set-cookie") == oracle.header_all("set-cookie")
    logs.assert_no_errors()


def test_var_cookie_with_two_headers(e2e: Stack, logs: Logs) -> None:
    resp = get(e2e, "unix", "/cookie_get.lua", TWO_COOKIE_HEADERS)
    assert resp.text == (
        "cookie_a = 1\ncookie_b = two%20words\ncookie_c = 3\ncookie_missing = nil\n"
        "http_cookie = a=1; b=two%20words; c=3; a=9\n"
        "header = a=1; b=two%20words | c=3; a=9\n"
    )
    logs.assert_no_errors()


def test_set_cookie_headers(e2e: Stack, logs: Logs) -> None:
    resp = get(e2e, "unix", "/cookie_set.lua", [])
    assert resp.header_all("set-cookie") == [
        "a=1; Path=/",
        "b=2; HttpOnly; Secure",
        "c=3; Max-Age=60; SameSite=Lax",
    ]
    logs.assert_no_errors()


def test_resty_cookie_get_and_set(e2e: Stack, logs: Logs) -> None:
    resp = get(e2e, "unix", "/cookie_resty.lua", [("Cookie", "a=1; b=2")])
    assert resp.text == (
        'a = 1\na => 1\nb => 2\nmissing value: nil missing cookie field "key" or "value"\ndone\n'
    )
    assert resp.header_all("set-cookie") == [
        "session=s1; Expires=Wed, 09 Jun 2038 10:18:14 GMT; Max-Age=3600; "
        "Domain=example.com; Path=/; Secure; HttpOnly; SameSite=Strict",
        "plain=p",
        "third=3; Path=/sub",
    ]
    logs.assert_no_errors()


def test_resty_cookie_by_its_openresty_name(e2e: Stack, logs: Logs) -> None:
    # fcgi-lua only: OpenResty on Debian has no "resty.cookie" module
    resp = get(e2e, "unix", "/cookie_resty_alias.lua", [("Cookie", "x=42")])
    assert resp.status == 200, resp.text
    assert resp.text == "true 0.01\n42\n"
    logs.assert_no_errors()


def test_cookie_example_page(e2e: Stack, logs: Logs) -> None:
    # examples/cookies.lua, the page a newcomer opens in a browser
    (e2e.root / "example_cookies.lua").write_bytes((REPO / "examples" / "cookies.lua").read_bytes())
    resp = get(e2e, "unix", "/example_cookies.lua?set=flavour&value=oat%20meal", [])
    assert resp.status == 303
    assert (resp.header("location") or "").endswith("/example_cookies.lua")
    (cookie,) = resp.header_all("set-cookie")
    assert cookie.startswith("flavour=oat%20meal; Path=/; Max-Age=3600; HttpOnly")
    resp = get(e2e, "unix", "/example_cookies.lua", [("Cookie", "flavour=oat%20meal; n=1")])
    assert resp.status == 200
    assert "<td>flavour</td><td>oat meal</td>" in resp.text
    assert resp.header("content-type") == "text/html; charset=utf-8"
    resp = get(e2e, "unix", "/example_cookies.lua?delete=n", [("Cookie", "n=1")])
    assert resp.header_all("set-cookie") == ["n=; Path=/; Max-Age=0"]
    logs.assert_no_errors()
