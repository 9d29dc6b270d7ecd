"""The ngx API, function by function; expected values were checked against
OpenResty (lua-nginx-module 0.10.23) unless a test says otherwise."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import zlib
from pathlib import Path

import pytest

from fcgi_lua.http import error_page
from tests.helpers.lua import make_params, run_script

GET_QUERY = make_params(
    query=b"x=1&x=2&c&d=&e=%20+f&x=3&&=v&%41=%42",
    headers=[
        (b"HTTP_HOST", b"Example.com:8080"),
        (b"HTTP_X_FOO", b"a"),
        (b"HTTP_X_FOO", b"b"),
        (b"HTTP_COOKIE", b"a=1; b=2"),
        (b"HTTP_COOKIE", b"c=3"),
    ],
    extra=[(b"CONTENT_TYPE", b""), (b"CONTENT_LENGTH", b"")],
)

DUMP = """
local function dump(t)
  local keys = {}
  for k in pairs(t) do keys[#keys+1] = tostring(k) end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    if type(v) == "table" then
      local vs = {}
      for i, x in ipairs(v) do vs[i] = type(x) .. ":" .. tostring(x) end
      v = "{" .. table.concat(vs, ",") .. "}"
    else v = type(v) .. ":" .. tostring(v) end
    out[#out+1] = "[" .. k .. "]=" .. v
  end
  return table.concat(out, " ")
end
"""


def body(tmp_path: Path, src: str, **kw: object) -> bytes:
    return run_script(tmp_path, src, **kw).body  # type: ignore[arg-type]


def test_var_read_by_name_then_after_set_header(tmp_path: Path) -> None:
    # ngx.var reads names one at a time until a header changes; then the
    # changed params rule, as nginx's variables follow headers_in
    src = """
    local a, b, c = ngx.var.http_x_foo, ngx.var.nope, ngx.var.NOPE
    ngx.req.set_header("X-Foo", "new")
    ngx.say(a, " ", tostring(b), " ", tostring(c), " ", ngx.var.http_x_foo, " ",
            ngx.var.request_uri, " ", ngx.var.arg_x, " ", tostring(ngx.var.nope))
    """
    out = body(tmp_path, src, params=GET_QUERY)
    assert out == b"a nil nil new /t.lua?x=1&x=2&c&d=&e=%20+f&x=3&&=v&%41=%42 1 nil\n"


# -- output --------------------------------------------------------------


def test_say_and_print_values(tmp_path: Path) -> None:
    src = 'ngx.say("hi ", 1.0, " ", 1.5, nil, true, false, ngx.null, {"a", {"b", 2}})'
    assert body(tmp_path, src) == b"hi 1 1.5niltruefalsenullab2\n"


def test_number_formatting_like_luajit(tmp_path: Path) -> None:
    src = "ngx.print(12.0, ' ', 1e100, ' ', -0.0, ' ', 2^53, ' ', 1/0, ' ', -1/0)"
    assert body(tmp_path, src) == b"12 1e+100 0 9.007199254741e+15 inf -inf"


def test_say_returns_one_and_default_headers(tmp_path: Path) -> None:
    res = run_script(tmp_path, "local r = ngx.say() ngx.print(r, ngx.print())")
    assert res.raw == (
        b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n\n11"
    )


def test_say_bad_arguments(tmp_path: Path) -> None:
    src = """
ngx.header.a = select(2, pcall(ngx.say, print))
ngx.header.b = select(2, pcall(ngx.say, {a = 1}))
ngx.header.c = select(2, pcall(ngx.print, "x", {1, {}, {2, print}}))
ngx.header.d = tostring(ngx.headers_sent)
"""
    res = run_script(tmp_path, src)
    assert res.header(b"a") == (
        b"bad argument #1 to 'say' (string, number, boolean, nil, ngx.null, "
        b"or array table expected, but got function)"
    )
    assert res.header(b"b") == b"bad argument #1 to 'say' (non-array table found)"
    assert res.header(b"c").endswith(b"but got function)")  # type: ignore[union-attr]
    assert res.header(b"c").startswith(b"bad argument #2 to 'print'")  # type: ignore[union-attr]
    assert res.header(b"d") == b"false"
    assert res.body == b""


def test_flush_streams_with_accel_buffering_off(tmp_path: Path) -> None:
    res = run_script(tmp_path, "ngx.say('a') ngx.flush(true) ngx.say('b') ngx.flush() ngx.say('c')")
    assert res.chunks == [
        b"Status: 200 OK\r\nContent-Type: text/plain\r\nX-Accel-Buffering: no\r\n\r\na\n",
        b"b\n",
        b"c\n",
    ]


def test_flush_keeps_script_accel_header(tmp_path: Path) -> None:
    res = run_script(tmp_path, "ngx.header['X-Accel-Buffering'] = 'yes' ngx.say('a') ngx.flush()")
    assert res.all(b"X-Accel-Buffering") == [b"yes"]


def test_eof(tmp_path: Path) -> None:
    src = "ngx.say('a') ngx.eof() local ok, err = ngx.say('b') ngx.log(ngx.ERR, tostring(err))"
    res = run_script(tmp_path, src)
    assert res.body == b"a\n"
    assert res.header(b"Content-Length") == b"2"


# -- status, exit, redirect --------------------------------------------


def test_status_get_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = """
ngx.header.before = ngx.status
ngx.status = 201
ngx.say(ngx.status, " ", tostring(ngx.headers_sent))
ngx.status = 500
ngx.say(ngx.status, " ", tostring(ngx.headers_sent))
"""
    res = run_script(tmp_path, src)
    assert res.status == 201
    assert res.reason == b"Created"
    assert res.header(b"before") == b"0"
    assert res.body == b"201 false\n201 true\n"  # arguments are evaluated before the say
    assert "attempt to set ngx.status after sending out response headers" in caplog.text


def test_status_after_say_is_200(tmp_path: Path) -> None:
    assert body(tmp_path, "ngx.say('x') ngx.say(ngx.status)") == b"x\n200\n"


def test_exit_error_status_keeps_headers(tmp_path: Path) -> None:
    src = """
ngx.header["X-Foo"] = "bar"
ngx.header.set_cookie = {"a=1", "b=2"}
ngx.header.content_length = 0
ngx.exit(403)
"""
    res = run_script(tmp_path, src)
    page = error_page(403)
    assert res.status == 403
    assert res.header(b"Content-Type") == b"text/html"
    assert res.header(b"Content-Length") == str(len(page)).encode()
    assert res.header(b"X-Foo") == b"bar"
    assert res.all(b"set-cookie") == [b"a=1", b"b=2"]
    assert res.body == page


def test_exit_200_keeps_status_set_before(tmp_path: Path) -> None:
    res = run_script(tmp_path, "ngx.status = 404 ngx.exit(200)")
    assert res.status == 404
    assert res.body == b""


def test_exit_2xx_sets_status(tmp_path: Path) -> None:
    res = run_script(tmp_path, "ngx.print('made') ngx.exit(201)")
    assert (res.status, res.body) == (200, b"made")  # headers went with the print
    res = run_script(tmp_path, "ngx.exit(201)")
    assert (res.status, res.body) == (201, b"")


def test_exit_0_ends_with_output(tmp_path: Path) -> None:
    res = run_script(tmp_path, "ngx.say('a') ngx.exit(ngx.OK) ngx.say('b')")
    assert res.body == b"a\n"


def test_exit_after_headers_sent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    res = run_script(tmp_path, "ngx.say('x') ngx.exit(500)")
    assert (res.status, res.body) == (200, b"x\n")
    assert (
        "attempt to set status 500 via ngx.exit after sending out the response status 200"
        in caplog.text
    )


def test_exit_204_has_no_body(tmp_path: Path) -> None:
    res = run_script(tmp_path, "ngx.header.x = 1 ngx.exit(204)")
    assert res.raw == b"Status: 204 No Content\r\nx: 1\r\n\r\n"


def test_exit_error_is_500(tmp_path: Path) -> None:
    assert run_script(tmp_path, "ngx.exit(ngx.ERROR)").status == 500


def test_exit_bad_arguments(tmp_path: Path) -> None:
    src = """
ngx.say(select(2, pcall(ngx.exit, ngx.AGAIN)))
ngx.say(select(2, pcall(ngx.exit, "abc")))
"""
    assert body(tmp_path, src) == (
        b"bad argument to 'ngx.exit': does not accept NGX_AGAIN or NGX_DONE\n"
        b"bad argument #1 to 'exit' (number expected, got string)\n"
    )


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect(tmp_path: Path, status: int) -> None:
    res = run_script(tmp_path, f"ngx.redirect('/there?a=1', {status}) ngx.say('no')")
    assert res.status == status
    assert res.header(b"Location") == b"/there?a=1"
    assert res.body == error_page(status)


def test_redirect_default_and_errors(tmp_path: Path) -> None:
    src = """
ngx.header.a = select(2, pcall(ngx.redirect, "/x", 200))
ngx.header.b = select(2, pcall(ngx.redirect, "/foo\\r\\nbar"))
ngx.redirect("/x")
"""
    res = run_script(tmp_path, src)
    assert res.status == 302
    assert res.header(b"a") == (
        b"only ngx.HTTP_MOVED_TEMPORARILY, ngx.HTTP_MOVED_PERMANENTLY, "
        b"ngx.HTTP_PERMANENT_REDIRECT, ngx.HTTP_SEE_OTHER, and "
        b"ngx.HTTP_TEMPORARY_REDIRECT are allowed"
    )
    assert res.header(b"b").endswith(  # type: ignore[union-attr]
        b'unsafe byte "0x0d" in redirect uri "/foo\\x0D\\x0Abar"'
    )


def test_redirect_from_a_thread_with_a_number_uri(tmp_path: Path) -> None:
    # t/096-uthread-redirect.t TEST 2: luaL_checklstring takes a number
    src = """
ngx.thread.spawn(function() ngx.sleep(0.01) ngx.redirect(301) end)
ngx.sleep(1)
ngx.say("end")
"""
    res = run_script(tmp_path, src)
    assert res.status == 302
    assert res.header(b"Location") == b"301"


def test_redirect_after_headers(tmp_path: Path) -> None:
    src = "ngx.say('x') ngx.say(select(2, pcall(ngx.redirect, '/x')))"
    assert body(tmp_path, src) == b"x\nattempt to call ngx.redirect after sending out the headers\n"


# -- headers -------------------------------------------------------------


def test_header_set_get_clear(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = """
ngx.header.content_type = "text/html"
ngx.header["X-A"] = "1"; ngx.header.x_a = nil
ngx.header["X-B"] = {}
ngx.header["X-N"] = 12
ngx.header.last_modified = ngx.http_time(0)
ngx.header.set_cookie = {"a=1", "b=2"}
ngx.header["X-Multi"] = {"1", "2"}
ngx.header.x_multi = "3"
ngx.header["Foo"] = "x\\r\\ny"
local c = ngx.header.set_cookie
ngx.header["X-C"] = type(c) .. #c .. tostring(ngx.header["Set-Cookie"] == nil)
  .. tostring(ngx.header["X-B"])
ngx.header["X-D"] = ngx.header.x_n .. type(ngx.header.x_n) .. ngx.header.CONTENT_TYPE
ngx.header.content_type = {"a", "b"}
ngx.say("body")
ngx.header.late = "x"
"""
    res = run_script(tmp_path, src)
    assert res.headers == [
        (b"Content-Type", b"b"),
        (b"Content-Length", b"5"),
        (b"X-N", b"12"),
        (b"last-modified", b"Thu, 01 Jan 1970 00:00:00 GMT"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"X-Multi", b"3"),
        (b"Foo", b"x%0D%0Ay"),
        (b"X-C", b"table2falsenil"),
        (b"X-D", b"12stringtext/html"),
    ]
    assert "attempt to set ngx.header.HEADER after sending out response headers" in caplog.text


def test_unsafe_header_names_are_escaped_whole(tmp_path: Path) -> None:
    # as OpenResty 0.10.23 (016-resp-header.t TEST 89-92; the rest checked
    # against it): a name's separators and control bytes are escaped, so it
    # stays one header, found again only by its escaped name; a value's
    # control bytes (not tab) are escaped
    src = r"""
ngx.header["header: value\rfoo:bar\nbar:foo"] = "xx"
ngx.header["\nheader: value"] = "yy"
ngx.header["a b?c"] = "v\1w\tx\127y\200"
ngx.header["\1z"] = "2"
ngx.say(tostring(ngx.header["a b?c"]), "|", ngx.header["a%20b%3Fc"])
"""
    res = run_script(tmp_path, src)
    assert res.body == b"nil|v%01w\tx%7Fy\xc8\n"
    assert res.raw.split(b"\r\n\r\n")[0].split(b"\r\n")[3:] == [
        b"header%3A%20value%0Dfoo%3Abar%0Abar%3Afoo: xx",
        b"%0Aheader%3A%20value: yy",
        b"a%20b%3Fc: v%01w\tx%7Fy\xc8",
        b"%01z: 2",
    ]


def test_header_own_content_length(tmp_path: Path) -> None:
    res = run_script(tmp_path, "ngx.header.content_length = 2 ngx.print('ab')")
    assert res.all(b"Content-Length") == [b"2"]


def test_default_type_is_configurable(tmp_path: Path) -> None:
    res = run_script(tmp_path, "ngx.print('x')", default_type=b"application/octet-stream")
    assert res.header(b"Content-Type") == b"application/octet-stream"


def test_resp_get_headers(tmp_path: Path) -> None:
    src = (
        DUMP
        + """
ngx.header["X-A"] = {"1", "2"}
ngx.header.content_type = "text/x"
ngx.say(dump(ngx.resp.get_headers()))
"""
    )
    assert body(tmp_path, src) == b"[content-type]=string:text/x [x-a]={string:1,string:2}\n"


# -- request ------------------------------------------------------------


def test_get_uri_args(tmp_path: Path) -> None:
    src = (
        DUMP
        + """
local a, e = ngx.req.get_uri_args()
ngx.say(dump(a), " ", tostring(e))
a, e = ngx.req.get_uri_args(2)
ngx.say(dump(a), " ", tostring(e))
a, e = ngx.req.get_uri_args(0)
ngx.say(dump(a), " ", tostring(e))
"""
    )
    all_args = (
        b"[A]=string:B [c]=boolean:true [d]=string: [e]=string:  f [x]={string:1,string:2,string:3}"
    )
    assert body(tmp_path, src, params=GET_QUERY) == (
        all_args + b" nil\n[x]={string:1,string:2} truncated\n" + all_args + b" nil\n"
    )


def test_get_uri_args_default_limit(tmp_path: Path) -> None:
    query = b"&".join(b"k%d=v" % i for i in range(101))
    src = (
        "local a, e = ngx.req.get_uri_args() local n = 0 "
        "for _ in pairs(a) do n = n + 1 end ngx.say(n, e)"
    )
    assert body(tmp_path, src, params=make_params(query=query)) == b"100truncated\n"


def test_decode_args(tmp_path: Path) -> None:
    src = (
        DUMP
        + """
ngx.say(dump(ngx.decode_args("x=1&x=2&&=3&y&z=&%41=%42+c", 0)))
local t, e = ngx.decode_args("a=1&b", 1)
ngx.say(dump(t), " ", e)
ngx.say(select(2, pcall(ngx.decode_args, nil)))
"""
    )
    assert body(tmp_path, src) == (
        b"[A]=string:B c [x]={string:1,string:2} [y]=boolean:true [z]=string:\n"
        b"[a]=string:1 truncated\n"
        b"bad argument #1 to '?' (string expected, got nil)\n"  # pcall called it
    )


def test_args_limit_counts_pieces_with_empty_keys(tmp_path: Path) -> None:
    # Checked against OpenResty 0.10.23: decode_args / get_post_args (the C
    # parser) say "truncated" at the max-th "&"; get_uri_args (resty.core's
    # FFI) when there are more than max "&"-separated pieces, empty ones
    # included, and keeps the first max that have a key.
    src = """
local function dump(t)
  local keys = {}
  for k in pairs(t) do keys[#keys+1] = tostring(k) end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out+1] = k .. "=" .. tostring(t[k]) end
  return table.concat(out, " ")
end
local function show(t, e) ngx.say(dump(t), " ", tostring(e)) end
for _, q in ipairs({"foo=3&=hello&=world", "a=1&&&b", "a=1&b=2", "a=1&b=2&", "&&a", "a&=&b&c"}) do
  show(ngx.decode_args(q, 2))
end
show(ngx.req.get_uri_args(2))
"""
    for query, uri_args in [
        (b"foo=3&=hello&=world", b"foo=3 truncated\n"),
        (b"a=1&&&b", b"a=1 b=true truncated\n"),
        (b"a=1&b=2&", b"a=1 b=2 truncated\n"),
        (b"&&a", b"a=true truncated\n"),
        (b"a&=&b&c", b"a=true b=true truncated\n"),
        (b"a=1&b=2", b"a=1 b=2 nil\n"),
    ]:
        assert body(tmp_path, src, params=make_params(query=query)) == (
            b"foo=3 truncated\na=1 truncated\na=1 b=2 nil\na=1 b=2 truncated\n"
            b" truncated\na=true truncated\n" + uri_args
        ), query


def test_c_function_argument_errors_under_pcall_name_no_function(tmp_path: Path) -> None:
    # OpenResty's encode_args / decode_args are C functions: luaL_argerror
    # names them as their caller did, "?" when pcall called them directly
    src = """
ngx.say(select(2, pcall(ngx.encode_args, true)))
ngx.say(select(2, pcall(function() ngx.encode_args(true) end)))
ngx.say(select(2, pcall(ngx.decode_args, {})))
ngx.say(select(2, pcall(function() local x = ngx.decode_args({}) return x end)))
ngx.say(ngx.decode_args(12)["12"])
"""
    out = body(tmp_path, src).decode()
    assert re.sub(r"(?m)^\S*t\.lua:", "t.lua:", out) == (
        "bad argument #1 to '?' (table expected, got boolean)\n"
        "t.lua:3: bad argument #1 to 'encode_args' (table expected, got boolean)\n"
        "bad argument #1 to '?' (string expected, got table)\n"
        "t.lua:5: bad argument #1 to 'decode_args' (string expected, got table)\n"
        "true\n"
    )


def test_set_uri_without_jump(tmp_path: Path) -> None:
    # messages checked against OpenResty 0.10.23 (content_by_lua_file)
    src = r"""
ngx.req.set_uri("\0foo", false, true)
ngx.say(ngx.var.uri == "\0foo", " ", ngx.var.document_uri == "\0foo")
ngx.say(select(2, pcall(ngx.req.set_uri, "/a\tb\"\\\200\1x")))
ngx.say(select(2, pcall(ngx.req.set_uri, "/a\127")))
ngx.say(select(2, pcall(ngx.req.set_uri, {})))
ngx.say(select(2, pcall(ngx.req.set_uri, "/a", 1)))
ngx.say(select(2, pcall(ngx.req.set_uri, "/a", true)))
ngx.say(select(2, pcall(ngx.req.set_uri, "")))
ngx.say(select(2, pcall(ngx.req.set_uri)))
ngx.req.set_uri("/x y")
ngx.say(ngx.var.uri)
"""
    assert body(tmp_path, src) == (
        b"true true\n"
        b'unsafe byte "0x01" in uri "/a\\x09b\\x22\\x5C\\xC8\\x01x"'
        b" (maybe you want to set the 'binary' argument?)\n"
        b'unsafe byte "0x7f" in uri "/a\\x7F" (maybe you want to set the \'binary\' argument?)\n'
        b"bad argument #1 to '?' (string expected, got table)\n"
        b"bad argument #2 to '?' (boolean expected, got number)\n"
        b"API disabled in the context of content_by_lua*\n"
        b"attempt to use zero-length uri\n"
        b"expecting 1, 2 or 3 arguments but seen 0\n"
        b"/x y\n"
    )


def test_get_headers(tmp_path: Path) -> None:
    src = (
        DUMP
        + """
local h, e = ngx.req.get_headers()
ngx.say(dump(h), " ", tostring(e), " ", h.X_Foo[2], " ", h["X-FOO"][1], " ", h.host)
h, e = ngx.req.get_headers(2, true)
ngx.say(dump(h), " ", tostring(e), " ", tostring(h.x_foo))
"""
    )
    assert body(tmp_path, src, params=GET_QUERY) == (
        b"[cookie]={string:a=1; b=2,string:c=3} [host]=string:Example.com:8080 "
        b"[x-foo]={string:a,string:b} nil b a Example.com:8080\n"
        b"[Host]=string:Example.com:8080 [X-Foo]=string:a truncated nil\n"
    )


def test_get_headers_content_type_from_cgi(tmp_path: Path) -> None:
    params = make_params(extra=[(b"CONTENT_TYPE", b"text/x"), (b"CONTENT_LENGTH", b"3")])
    src = "local h = ngx.req.get_headers() ngx.say(h.content_type, h['Content-Length'])"
    assert body(tmp_path, src, params=params) == b"text/x3\n"


def test_method_version_raw_header(tmp_path: Path) -> None:
    src = (
        "ngx.say(ngx.req.get_method(), ' ', ngx.req.http_version()) ngx.print(ngx.req.raw_header())"
    )
    assert body(tmp_path, src, params=GET_QUERY) == (
        b"GET 1.1\nGET /t.lua?x=1&x=2&c&d=&e=%20+f&x=3&&=v&%41=%42 HTTP/1.1\r\n"
        b"Host: Example.com:8080\r\nX-Foo: a\r\nX-Foo: b\r\nCookie: a=1; b=2\r\n"
        b"Cookie: c=3\r\n\r\n"
    )


def test_var(tmp_path: Path) -> None:
    src = """
local v = ngx.var
ngx.say(v.request_method, " ", v.request_uri, " ", v.args, " ", v.arg_x, " ",
  tostring(v.arg_y), " ", tostring(v.arg_c), " ", v.http_x_foo, " ", v.cookie_a, " ",
  v.cookie_b, " ", v.cookie_c, " ", tostring(v.nonexist), " ", v.uri, " ", v.is_args, " ",
  v.remote_addr, " ", v.server_port, " ", v.host, " ", v.scheme, " ", v.REQUEST_METHOD,
  " ", tostring(v[1]))
"""
    assert body(tmp_path, src, params=GET_QUERY) == (
        b"GET /t.lua?x=1&x=2&c&d=&e=%20+f&x=3&&=v&%41=%42 x=1&x=2&c&d=&e=%20+f&x=3&&=v&%41=%42 "
        b"1 nil nil a 1 2 3 nil /t.lua ? 127.0.0.1 8080 example.com http GET nil\n"
    )


def test_var_assignment(tmp_path: Path) -> None:
    src = """
ngx.say(select(2, pcall(function() ngx.var.nonexist = 1 end)))
ngx.say(select(2, pcall(function() ngx.var.request_uri = 1 end)))
ngx.var.args = "q=1"
ngx.say(ngx.var.args, " ", ngx.req.get_uri_args().q, " ", ngx.var.arg_q)
"""
    out = re.sub(rb"(?m)^[^\n]*t\.lua:\d+: ", b"", body(tmp_path, src))
    assert out == (
        b'variable "nonexist" not found for writing; maybe it is a built-in variable that '
        b"is not changeable or you forgot to use \"set $nonexist '';\" in the config file to "
        b"define it first\n"
        b'variable "request_uri" not changeable\nq=1 1 1\n'
    )


def test_ctx(tmp_path: Path) -> None:
    src = """
ngx.ctx.a = 1
local first = ngx.ctx
ngx.ctx = {b = 2}
ngx.say(first.a, " ", tostring(ngx.ctx.a), " ", ngx.ctx.b)
"""
    assert body(tmp_path, src) == b"1 nil 2\n"


# -- logging -------------------------------------------------------------


def test_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "fcgi_lua.lua")
    src = """
local function f()
  ngx.log(ngx.ERR, "hello ", nil, " ", true, " ", ngx.null, 1.5,
          setmetatable({}, {__tostring = function() return "TS" end}))
end
f()
ngx.log(ngx.DEBUG, "dbg")
ngx.say(select(2, pcall(ngx.log, 99, "x")))
ngx.say(select(2, pcall(ngx.log, "x", "x")))
ngx.say(select(2, pcall(ngx.log, ngx.ERR, {})))
"""
    assert body(tmp_path, src) == (
        b"bad argument #1 to 'log' (bad log level: 99)\n"
        b"bad argument #1 to 'log' (number expected, got string)\n"
        b"bad argument #2 to 'log' (expected table to have __tostring metamethod)\n"
    )
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    # each line ends with the request, as OpenResty's
    context = ', client: 127.0.0.1, request: "GET /t.lua HTTP/1.1"'
    assert (logging.ERROR, "[lua] t.lua:3: f(): hello nil true null1.5TS" + context) in records
    assert (logging.DEBUG, "[lua] t.lua:7: dbg" + context) in records


# -- time ----------------------------------------------------------------


def test_time_functions(tmp_path: Path) -> None:
    src = """
ngx.say(ngx.http_time(1290079655))
ngx.say(ngx.cookie_time(0), " ", ngx.cookie_time(2^31 + 10^9))
ngx.say(ngx.parse_http_time("Thu, 18 Nov 2010 11:27:35 GMT"), " ",
        ngx.parse_http_time("Thursday, 18-Nov-10 11:27:35 GMT"), " ",
        ngx.parse_http_time("Thu Nov 18 11:27:35 2010"), " ",
        tostring(ngx.parse_http_time("junk")))
local now = ngx.now()
ngx.update_time()
ngx.say(ngx.time() == math.floor(now), " ", ngx.now() >= now, " ", now > 1.7e9)
ngx.say(#ngx.localtime(), " ", #ngx.utctime(), " ", #ngx.today(), " ",
  ngx.req.start_time() <= ngx.now())
ngx.say(select(2, pcall(ngx.http_time, "x")))
"""
    assert body(tmp_path, src) == (
        b"Thu, 18 Nov 2010 11:27:35 GMT\n"
        b"Thu, 01-Jan-70 00:00:00 GMT Fri, 27-Sep-2069 05:00:48 GMT\n"
        b"1290079655 1290079655 1290079655 nil\n"
        b"true true true\n19 19 10 true\n"
        b"bad argument #1 to 'http_time' (number expected, got string)\n"
    )


def test_sleep_arguments(tmp_path: Path) -> None:
    src = """
ngx.say(select(2, pcall(ngx.sleep, -1)))
ngx.say(select(2, pcall(ngx.sleep, "x")))
ngx.sleep(0)
ngx.say(ngx.sleep(0.001))
"""
    assert body(tmp_path, src) == (
        b'invalid sleep duration "-1000"\n'
        b"bad argument #1 to 'sleep' (number expected, got string)\n\n"
    )


# -- strings -------------------------------------------------------------


def test_escape_uri(tmp_path: Path) -> None:
    src = r"""
ngx.say(ngx.escape_uri("a b/c?d=é~!*'()"), "|", ngx.escape_uri(nil), "|", ngx.escape_uri(12))
ngx.say(ngx.escape_uri("a b/c?#%+", 0), "|", ngx.escape_uri("a b/c?#%+", 1))
ngx.say(ngx.escape_uri("a b%\"'\1", 5))
ngx.say(select(2, pcall(ngx.escape_uri, "x", 7)))
"""
    out = re.sub(rb"(?m)^[^\n]*t\.lua:\d+: ", b"", body(tmp_path, src))
    assert out == (
        b"a%20b%2Fc%3Fd%3D%C3%A9~!*'()||12\n"
        b"a%20b/c%3F%23%25+|a%20b/c%3F%23%25%2B\n"
        b"a%20b%25\"'%01\n"
        b'"type" 7 out of range\n'
    )


def test_unescape_uri(tmp_path: Path) -> None:
    src = (
        'ngx.print(ngx.unescape_uri("a+b%20c%zz%4%41%e4%B8"), "|", '
        'ngx.unescape_uri(nil), "|", ngx.unescape_uri("%"))'
    )
    assert body(tmp_path, src) == b"a b c%zz%4A\xe4\xb8||%"


def test_encode_args(tmp_path: Path) -> None:
    src = """
ngx.say(ngx.encode_args({a=1}), " ", ngx.encode_args({b=true}), " ", ngx.encode_args({c=false}),
  " ", ngx.encode_args({["a b"]={"x y", "z"}}), "|", ngx.encode_args({}), "|",
  ngx.encode_args({a={}}), "|", ngx.encode_args({a={true, false}}))
ngx.say(select(2, pcall(ngx.encode_args, {a=print})))
ngx.say(select(2, pcall(ngx.encode_args, {[1]=2})))
ngx.say(select(2, pcall(ngx.encode_args, "x")))
"""
    assert body(tmp_path, src) == (
        b"a=1 b  a%20b=x%20y&a%20b=z|||a\n"
        b"attempt to use function as query arg value\n"
        b'attempt to use a non-string key in the "args" option table\n'
        b"bad argument #1 to '?' (table expected, got string)\n"  # pcall called it
    )


def test_hashes_and_base64(tmp_path: Path) -> None:
    src = r"""
ngx.say(ngx.md5(""), " ", ngx.md5(nil), " ", ngx.md5(12))
ngx.say(ngx.md5_bin("x") == ngx.decode_base64(ngx.encode_base64(ngx.md5_bin("x"))))
ngx.say(ngx.encode_base64(ngx.sha1_bin("abc")), " ", ngx.crc32_short("hello"), " ",
  ngx.crc32_long("hello"))
ngx.say(ngx.encode_base64("ab", true), ngx.encode_base64("ab"), ngx.encode_base64(""))
ngx.say(ngx.decode_base64("YWI"), tostring(ngx.decode_base64("!!")), ngx.decode_base64("YW=="),
        tostring(ngx.decode_base64("YWJj\nZA==")), "|", ngx.decode_base64(""))
ngx.say(select(2, pcall(ngx.decode_base64, nil)), " ", select(2, pcall(ngx.encode_base64, "x", 1)))
"""
    sha = base64.b64encode(hashlib.sha1(b"abc").digest())
    crc = str(zlib.crc32(b"hello")).encode()
    assert body(tmp_path, src) == (
        hashlib.md5(b"").hexdigest().encode() * 2
        + b" "
        + hashlib.md5(b"12").hexdigest().encode()
        + b"\n".join(
            [
                b"",
                b"true",
                sha + b" " + crc + b" " + crc,
                b"YWIYWI=",
                b"abnilanil|",
                b"string argument only bad no_padding: boolean expected, got number",
                b"",
            ]
        )
    ).replace(
        hashlib.md5(b"").hexdigest().encode() * 2,
        hashlib.md5(b"").hexdigest().encode() + b" " + hashlib.md5(b"").hexdigest().encode(),
    )


# -- constants, config, worker, FastCGI limits --------------------------


def test_constants(tmp_path: Path) -> None:
    src = """
ngx.say(ngx.OK, ngx.ERROR, ngx.AGAIN, ngx.DONE, ngx.DECLINED, " ",
  ngx.STDERR, ngx.EMERG, ngx.ALERT, ngx.CRIT, ngx.ERR, ngx.WARN, ngx.NOTICE, ngx.INFO,
  ngx.DEBUG, " ",
  ngx.HTTP_GET, " ", ngx.HTTP_TRACE, " ", ngx.HTTP_OK, " ", ngx.HTTP_NOT_FOUND, " ",
  ngx.HTTP_ILLEGAL, " ", ngx.HTTP_INSUFFICIENT_STORAGE)
ngx.say(ngx.config.subsystem, ngx.config.ngx_lua_version, tostring(ngx.config.debug),
  tostring(ngx.is_subrequest), ngx.worker.id(), ngx.worker.count(), type(ngx.worker.pid()),
  type(ngx.null), tostring(ngx.null), ngx.get_phase())
"""
    assert body(tmp_path, src) == (
        b"0-1-2-4-5 012345678 2 32768 200 404 451 507\n"
        b"http10023falsefalse01numberuserdatauserdata: NULLcontent\n"
    )


@pytest.mark.parametrize(
    "call",
    [
        "ngx.req.socket(true)",
        "ngx.location.capture('/x')",
        "ngx.location.capture_multi({})",
    ],
)
def test_unavailable_over_fastcgi(tmp_path: Path, call: str) -> None:
    src = f"local ok, err = pcall(function() return {call} end) ngx.print(err)"
    out = body(tmp_path, src)
    assert b"is not available in fcgi-lua: over FastCGI" in out


def test_var_uri_and_request_filename_behind_other_fronts(tmp_path: Path) -> None:
    # lighttpd and Apache send no DOCUMENT_URI (nginx's $uri is decoded);
    # Apache's default SCRIPT_FILENAME carries a "proxy:fcgi://HOST" prefix.
    src = "ngx.say(ngx.var.uri, '|', ngx.var.request_filename, '|', ngx.var.args)"
    params = [
        (b"REQUEST_METHOD", b"GET"),
        (b"QUERY_STRING", b"q=%41+b"),
        (b"REQUEST_URI", b"/sub/x%20y+z.lua/a%2Fb?q=%41+b"),
        (b"SCRIPT_NAME", b"/sub/x y+z.lua"),
        (b"PATH_INFO", b"/a/b"),
        (b"SCRIPT_FILENAME", b"proxy:fcgi://localhost/srv/www/sub/x y+z.lua"),
    ]
    assert body(tmp_path, src, params=params) == (
        b"/sub/x y+z.lua/a/b|/srv/www/sub/x y+z.lua|q=%41+b\n"
    )
    balancer = [*params[:-1], (b"SCRIPT_FILENAME", b"proxy:balancer://pool/srv/t.lua")]
    assert body(tmp_path, src, params=balancer).startswith(b"/sub/x y+z.lua/a/b|/srv/t.lua|")
    plain = [*params[:-1], (b"SCRIPT_FILENAME", b"/srv/www/t.lua"), (b"DOCUMENT_URI", b"/d")]
    assert body(tmp_path, src, params=plain) == b"/d|/srv/www/t.lua|q=%41+b\n"


def test_var_sent_http(tmp_path: Path) -> None:
    # lua-nginx-module t/016-resp-header.t TEST 30-38: $sent_http_NAME is
    # the response header as set so far
    src = """
ngx.header.cache_control = "private"
local out = { ngx.var.sent_http_cache_control }
ngx.header["Link"] = {"</a.jpg>", "</b.css>"}
out[2] = ngx.var.sent_http_link
ngx.header.cache_control = nil
out[3] = tostring(ngx.var.sent_http_cache_control) .. " " .. tostring(ngx.var.sent_http_x_none)
ngx.say(table.concat(out, "\\n"))
"""
    assert body(tmp_path, src) == b"private\n</a.jpg>, </b.css>\nnil nil\n"


def test_resp_get_headers_lookup_and_limit(tmp_path: Path) -> None:
    # t/016-resp-header.t TEST 63, 75-78: any spelling finds a header, and
    # the default limit of 100 counts them all
    src = """
ngx.header["Foo"] = "bar"
ngx.header["X_Under"] = "u"
local h = ngx.resp.get_headers()
local out = { h.Foo .. " " .. h.foo .. " " .. h["FOO"] .. " " .. h.x_under .. " " .. h["X-Under"] }
local function count(...)
    local all, err = ngx.resp.get_headers(...)
    local n = 0
    for _ in pairs(all) do n = n + 1 end
    out[#out + 1] = n .. " " .. tostring(err)
end
for i = 1, 97 do ngx.header["H" .. i] = "v" end
count()  -- 99 set + the default Content-Type
ngx.header["H98"] = "v"
count()
count(3)
ngx.header.content_type = "text/x"
count(0)
ngx.say(table.concat(out, "\\n"))
"""
    assert body(tmp_path, src) == (
        b"bar bar bar u u\n100 nil\n100 truncated\n3 truncated\n101 nil\n"
    )


def test_status_takes_the_integer_part(tmp_path: Path) -> None:
    # t/015-status.t TEST 7-8: nginx reads ngx.status as an integer
    # (lua_tointeger): "201.7" is 201; "abc" raises
    res = run_script(tmp_path, 'ngx.status = "201.7" ngx.say(ngx.status)')
    assert (res.status, res.body) == (201, b"201\n")
    res = run_script(tmp_path, "ngx.status = 404.9 ngx.say(ngx.status)")
    assert (res.status, res.body) == (404, b"404\n")
    res = run_script(tmp_path, 'ngx.say(pcall(function() ngx.status = "abc" end))')
    assert res.body.startswith(b"false")
    assert res.body.endswith(b"bad argument #1 to 'status' (number expected, got string)\n")


CONDITIONAL = """
ngx.header["ETag"] = "123456789"
ngx.header.last_modified = "Thu, 10 May 2012 07:50:59 GMT"
ngx.say("hello")
ngx.say("world")
"""
LAST_MODIFIED = b"Thu, 10 May 2012 07:50:59 GMT"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"HTTP_IF_MODIFIED_SINCE", LAST_MODIFIED)], 304),
        ([(b"HTTP_IF_MODIFIED_SINCE", b"Thu, 10 May 2012 07:50:58 GMT")], 200),
        ([(b"HTTP_IF_NONE_MATCH", b"123456789")], 304),
        ([(b"HTTP_IF_NONE_MATCH", b'"x", W/123456789')], 304),
        ([(b"HTTP_IF_NONE_MATCH", b"*")], 304),
        ([(b"HTTP_IF_NONE_MATCH", b"123456780"), (b"HTTP_IF_MODIFIED_SINCE", LAST_MODIFIED)], 200),
        ([(b"HTTP_IF_NONE_MATCH", b"123456789"), (b"HTTP_IF_MODIFIED_SINCE", LAST_MODIFIED)], 304),
        ([], 200),
    ],
)
def test_conditional_get(tmp_path: Path, headers: list[tuple[bytes, bytes]], status: int) -> None:
    # t/072-conditional-get.t, t/110-etag.t: nginx's not_modified filter
    # answers 304, without the body, when the script's Last-Modified (exact)
    # or ETag match the request's validators
    res = run_script(tmp_path, CONDITIONAL, params=make_params(headers=headers))
    assert res.status == status
    assert res.body == (b"" if status == 304 else b"hello\nworld\n")


def test_conditional_get_needs_the_validator_set(tmp_path: Path) -> None:
    params = make_params(headers=[(b"HTTP_IF_MODIFIED_SINCE", LAST_MODIFIED)])
    assert run_script(tmp_path, 'ngx.say("x")', params=params).status == 200
    src = 'ngx.header["ETag"] = "1" ngx.header["ETag"] = nil ngx.say("x")'
    params = make_params(headers=[(b"HTTP_IF_NONE_MATCH", b"1")])
    assert run_script(tmp_path, src, params=params).status == 200
    src = 'ngx.status = 201 ngx.header["ETag"] = "1" ngx.say("x")'
    assert run_script(tmp_path, src, params=params).status == 201


def test_var_bad_names_and_query_string(tmp_path: Path) -> None:
    # t/045-ngx-var.t TEST 9-11: a name that is not a string raises "bad
    # variable name"; $query_string is not changeable ($args is)
    src = """
ngx.say(select(2, pcall(function() return ngx.var[true] end)))
ngx.say(select(2, pcall(function() ngx.var[true] = 56 end)))
ngx.say(select(2, pcall(function() ngx.var.query_string = 56 end)))
ngx.say(tostring(ngx.var[1]))
"""
    out = re.sub(rb"(?m)^[^\n]*t\.lua:\d+: ", b"", body(tmp_path, src))
    assert out == (
        b'bad variable name\nbad variable name\nvariable "query_string" not changeable\nnil\n'
    )


def test_header_number_name_and_bad_content_length(tmp_path: Path) -> None:
    # t/016-resp-header.t TEST 2, 61: a number is a header name; a
    # Content-Length that is not a number fails the request
    res = run_script(tmp_path, 'ngx.header[32] = "private" ngx.say(ngx.header[32])')
    assert (res.header(b"32"), res.body) == (b"private", b"private\n")
    res = run_script(tmp_path, 'ngx.header.content_length = "text/my-plain" ngx.say("Hi")')
    assert res.status == 500
    res = run_script(tmp_path, 'ngx.header.content_length = 2 ngx.print("Hi")')
    assert (res.status, res.body) == (200, b"Hi")


def test_flush_with_nothing_to_flush_leaves_the_status_open(tmp_path: Path) -> None:
    # t/056-flush.t TEST 14: ngx_http_lua_ngx_flush returns "nothing to
    # flush" before the headers, and before any body bytes unless it waits
    src = """
local a, b = ngx.flush()
ngx.status = 404
ngx.print("")
local c, d = ngx.flush()
ngx.say(tostring(a), " ", b, " ", tostring(c), " ", d)
ngx.say(ngx.flush())
"""
    res = run_script(tmp_path, src)
    assert res.status == 404
    assert res.body == b"nil nothing to flush nil nothing to flush\n1\n"


def test_http10_flush_buffers_for_a_content_length(tmp_path: Path) -> None:
    # t/056-flush.t TEST 5, 6, 11, 12: lua_http10_buffering (on by default)
    # makes ngx.flush a no-op for an HTTP/1.0 request, so the whole
    # response gets a Content-Length
    src = 'ngx.say("hello, world") ngx.flush(true) ngx.say("hiya") ngx.flush() ngx.say("blah")'
    params = make_params(extra=[(b"SERVER_PROTOCOL", b"HTTP/1.0")])
    params = [p for p in params if p != (b"SERVER_PROTOCOL", b"HTTP/1.1")]
    res = run_script(tmp_path, src, params=params)
    assert res.body == b"hello, world\nhiya\nblah\n"
    assert res.header(b"Content-Length") == b"23"
    res = run_script(tmp_path, src)  # HTTP/1.1: streamed
    assert res.header(b"Content-Length") is None


def test_var_request_body(tmp_path: Path) -> None:
    # t/010-request_body.t TEST 1, 4, 5: $request_body is the body once it
    # has been read into memory
    src = """
local before = tostring(ngx.var.request_body)
ngx.req.read_body()
ngx.say(before, " ", ngx.var.request_body)
"""
    res = run_script(tmp_path, src, params=make_params(method=b"POST"), body=b"a=1&b=2")
    assert res.body == b"nil a=1&b=2\n"


def test_var_pid(tmp_path: Path) -> None:
    # t/122-worker.t TEST 2: $pid is the process running the script
    src = "ngx.say(tostring(tonumber(ngx.var.pid) == ngx.worker.pid()), ' ', type(ngx.var.pid))"
    assert body(tmp_path, src) == b"true string\n"
