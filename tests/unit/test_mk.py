"""The mk.* API (fcgi_lua/lua/mk.lua): mk.print's joining rule, mk.response
applied until the first flush, mk.request fields and parsers, cookies, and
per-request isolation of everything on `mk`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fcgi_lua.lua import LuaEngine
from tests.helpers.lua import FakeRequest, MemorySink, make_params, parse, run_script


def test_print_joins_calls_with_newlines(tmp_path: Path) -> None:
    res = run_script(tmp_path, 'mk.print("a") mk.print("") mk.print(3) mk.print("b")')
    assert res.body == b"a\n\n3\nb"


def test_print_rejects_tables(tmp_path: Path) -> None:
    res = run_script(tmp_path, "mk.print({})", debug=True)
    assert res.status == 500
    assert b"bad argument #1 to 'print' (string expected, got table)" in res.body


def test_response_can_change_after_print(tmp_path: Path) -> None:
    src = """
mk.print("body")
mk.response.status = 404
mk.response.headers["Content-Type"] = "text/html"
mk.cookies.set_cookie{name = "late", value = "1"}
"""
    res = run_script(tmp_path, src)
    assert res.status == 404
    assert res.header(b"Content-Type") == b"text/html"
    assert res.all(b"Set-Cookie") == [b"late=1; Path=/"]
    assert res.body == b"body"


def test_response_defaults(tmp_path: Path) -> None:
    src = "mk.print(mk.response.status .. ' ' .. tostring(mk.response.headers['X']))"
    assert run_script(tmp_path, src).body == b"200 nil"


def test_request_fields(tmp_path: Path) -> None:
    src = """
local r = mk.request
mk.print(r.request_uri)
mk.print(r.query_string)
mk.print(r.request_method .. " " .. r.server_protocol .. " " .. r.remote_addr)
mk.print(type(r.server_port) .. " " .. r.server_port)
mk.print(r.headers.HTTP_USER_AGENT .. " " .. r.headers.HTTP_X_MULTI)
mk.print("[" .. r.data .. "]")
"""
    params = make_params(
        method=b"POST",
        query=b"a=1",
        headers=[
            (b"HTTP_USER_AGENT", b"ua/1"),
            (b"HTTP_X_MULTI", b"x"),
            (b"HTTP_X_MULTI", b"y"),
            (b"CONTENT_LENGTH", b"4"),
        ],
    )
    res = run_script(tmp_path, src, params=params, body=b"data")
    assert res.body == b"/t.lua?a=1\na=1\nPOST HTTP/1.1 127.0.0.1\nnumber 8080\nua/1 x, y\n[data]"


def test_request_uri_gets_the_query_when_the_server_left_it_out(tmp_path: Path) -> None:
    params = [(b"REQUEST_URI", b"/t.lua"), (b"QUERY_STRING", b"x=1")]
    res = run_script(tmp_path, "mk.print(mk.request.request_uri)", params=params)
    assert res.body == b"/t.lua?x=1"


def test_parseargs_two_tables_decoded(tmp_path: Path) -> None:
    src = """
local first, all = mk.request.parseargs()
mk.print(first.a .. "|" .. table.concat(all.a, ",") .. "|" .. first.b .. "|" .. first.c .. "|")
"""
    res = run_script(tmp_path, src, params=make_params(query=b"a=x%20y&a=%2B&b=caf%C3%A9&c"))
    assert res.body == "x y|x y,+|café||".encode()


def test_parsedata_urlencoded(tmp_path: Path) -> None:
    src = """
local first, all = mk.request.parsedata()
mk.print(first.k .. " " .. #all.k .. " " .. first.m)
"""
    params = make_params(
        method=b"POST",
        extra=[
            (b"CONTENT_TYPE", b"application/x-www-form-urlencoded"),
            (b"CONTENT_LENGTH", b"17"),
        ],
    )
    res = run_script(tmp_path, src, params=params, body=b"k=1&k=2&m=a+b%21")
    assert res.body == b"1 2 a b!"


def test_parsedata_other_types_are_empty(tmp_path: Path) -> None:
    src = "local a, b = mk.request.parsedata() mk.print(tostring(next(a)) .. tostring(next(b)))"
    assert run_script(tmp_path, src).body == b"nilnil"


def test_get_cookies_decoded_and_trimmed(tmp_path: Path) -> None:
    src = """
local c = mk.cookies.get_cookies()
local names = {}
for k, v in pairs(c) do names[#names + 1] = k .. "=" .. v end
table.sort(names)
mk.print(table.concat(names, ","))
"""
    params = make_params(
        headers=[(b"HTTP_COOKIE", b"a=1;  b=x%20y ; a=2"), (b"HTTP_COOKIE", b"c=3")]
    )
    assert run_script(tmp_path, src, params=params).body == b"a=1,b=x y,c=3"


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ('{name="n", value="v"}', b"n=v; Path=/"),
        ('{name="n", value="a b;c%"}', b"n=a%20b%3Bc%25; Path=/"),
        (
            '{name="n", value="v", expiry=0, domain="d.com", path="/p", secure=true,'
            " httponly=true}",
            b"n=v; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Domain=d.com; Path=/p; Secure; HttpOnly",
        ),
        (
            '{name="n", value="v", expires="soon", max_age=10.7, samesite="Strict"}',
            b"n=v; Expires=soon; Max-Age=10; Path=/; SameSite=Strict",
        ),
    ],
)
def test_set_cookie(tmp_path: Path, call: str, expected: bytes) -> None:
    res = run_script(tmp_path, f"assert(mk.cookies.set_cookie{call}) mk.cookie.set_cookie{call}")
    assert res.all(b"Set-Cookie") == [expected, expected]


@pytest.mark.parametrize(
    "call", ['{name="a b", value="v"}', '{value="v"}', '{name="n", domain="x;y"}', '"n=v"']
)
def test_set_cookie_bad_arguments(tmp_path: Path, call: str) -> None:
    res = run_script(tmp_path, f"mk.cookies.set_cookie({call})", debug=True)
    assert res.status == 500


def test_set_cookie_after_headers_went_out(tmp_path: Path) -> None:
    src = 'ngx.say("x") ngx.flush() ngx.say(tostring(mk.cookies.set_cookie{name="n", value="v"}))'
    assert run_script(tmp_path, src).body == b"x\nnil\n"


def test_config(tmp_path: Path) -> None:
    src = (
        "local c = mk.config mk.print(c.server_software .. ' ' .. c.workers .. ' ' .. c.transport)"
    )
    assert run_script(tmp_path, src).body.startswith(b"fcgi-lua/")


def test_mk_fields_are_per_request(tmp_path: Path) -> None:
    engine = LuaEngine()
    path = tmp_path / "t.lua"
    path.write_text(
        "local before = tostring(mk.mine)\n"
        "mk.mine = mk.request.query_string\n"
        "mk.config.workers = 99\n"
        "mk.print = nil\n"
        "ngx.sleep(0.01)\n"
        "ngx.say(before, ' ', mk.mine, ' ', tostring(mk.print))\n"
    )

    async def main() -> list[bytes]:
        sinks = [MemorySink() for _ in range(3)]
        await asyncio.gather(
            *(
                engine.run(FakeRequest(str(path), make_params(query=str(i).encode())), s)
                for i, s in enumerate(sinks)
            )
        )
        return [parse(s.chunks).body for s in sinks]

    assert asyncio.run(main()) == [f"nil {i} false\n".encode() for i in range(3)]
    res = run_script(tmp_path, "mk.print(tostring(mk.config.workers))", engine=engine)
    assert res.body == b"1"
