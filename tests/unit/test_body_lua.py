"""The body API as scripts see it: ngx.req.read_body, get_body_data,
get_body_file, discard_body, get_post_args, and get_multipart."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from fcgi_lua.http import error_page
from fcgi_lua.lua import LuaEngine
from tests.helpers.forms import CTYPE, form, part
from tests.helpers.lua import FakeRequest, MemorySink, Response, make_params, parse, write_script

ENGINE = LuaEngine()


def post(
    tmp_path: Path,
    src: str,
    body: bytes,
    *,
    ctype: bytes = b"application/x-www-form-urlencoded",
    buffer: int = 64,
    limit: int = 10**8,
    params: Sequence[tuple[bytes, bytes]] | None = None,
) -> tuple[Response, FakeRequest]:
    path = write_script(tmp_path, src)
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    request = FakeRequest(
        path,
        params or make_params(method=b"POST", extra=[(b"CONTENT_TYPE", ctype)]),
        body,
        max_body_size=limit,
        body_buffer_size=buffer,
        body_temp_dir=str(temp),
    )
    sink = MemorySink()
    asyncio.run(ENGINE.run(request, sink))
    return parse(sink.chunks), request


def temp_files(tmp_path: Path) -> list[str]:
    return sorted(os.listdir(tmp_path / "tmp"))


def test_before_read_body_nothing_is_there(tmp_path: Path) -> None:
    src = """
ngx.say(tostring(ngx.req.get_body_data()), " ", tostring(ngx.req.get_body_file()))
ngx.say(ngx.req.get_post_args())
"""
    res, _ = post(tmp_path, src, b"a=1")
    assert res.body == b"nil nil\nnilrequest body not read yet\n"


def test_body_in_memory(tmp_path: Path) -> None:
    src = """
ngx.req.read_body()
ngx.say(ngx.req.get_body_data(), " ", tostring(ngx.req.get_body_file()))
ngx.say(ngx.req.get_body_data(3))
local args = ngx.req.get_post_args()
ngx.say(args.a, " ", args.b)
"""
    res, request = post(tmp_path, src, b"a=1&b=x+y")
    assert res.body == b"a=1&b=x+y nil\na=1\n1 x y\n"
    assert request.body_reads == 0  # all of it had come: read without a wait


def test_spooled_body_is_a_file(tmp_path: Path) -> None:
    data = b"a=" + b"x" * 100 + b"&b=2"
    src = """
ngx.req.read_body()
local path = ngx.req.get_body_file()
ngx.say(tostring(ngx.req.get_body_data()))
local f = assert(io.open(path, "rb"))
local data = f:read("*a")
f:close()
ngx.say(#data, " ", ngx.md5(data))
ngx.say(ngx.req.get_post_args())  -- as OpenResty: read the file
ngx.say(path:match("fcgi%-lua%-body%-") and "named" or path)
"""
    res, request = post(tmp_path, src, data)
    assert res.body == (
        b"nil\n"
        + f"{len(data)} {__import__('hashlib').md5(data).hexdigest()}\n".encode()
        + b"nilrequest body in temp file not supported\nnamed\n"
    )
    assert len(temp_files(tmp_path)) == 1  # until the server closes the request
    request.close()
    assert temp_files(tmp_path) == []


def test_empty_body(tmp_path: Path) -> None:
    src = """
ngx.req.read_body()
ngx.say(tostring(ngx.req.get_body_data()), " ", tostring(ngx.req.get_body_file()))
ngx.say(next(ngx.req.get_post_args()) == nil)
"""
    res, _ = post(tmp_path, src, b"")
    assert res.body == b"nil nil\ntrue\n"


def test_post_args_semantics(tmp_path: Path) -> None:
    src = """
ngx.req.read_body()
local args, err = ngx.req.get_post_args()
local names = {}
for k in pairs(args) do names[#names + 1] = k end
table.sort(names)
for _, k in ipairs(names) do
    local v = args[k]
    if type(v) == "table" then v = "{" .. table.concat(v, ",") .. "}" end
    ngx.say(k, "=", tostring(v))
end
local few, err2 = ngx.req.get_post_args(2)
local n = 0
for _ in pairs(few) do n = n + 1 end
ngx.say(n, " ", err2)
"""
    res, _ = post(tmp_path, src, b"a=1&a=2&b&c=&=x&%zz=%4&d=%41%2B+")
    assert res.body == (
        b"%zz=%4\na={1,2}\nb=true\nc=\nd=A+ \n1 truncated\n"  # "a" twice: two args, one key
    )


def test_discard_body(tmp_path: Path) -> None:
    src = """
ngx.req.discard_body()
ngx.req.read_body()
ngx.say(tostring(ngx.req.get_body_data()), " ", tostring(ngx.req.get_body_file()))
ngx.say(next(ngx.req.get_post_args()) == nil)
ngx.say(ngx.req.get_multipart())
"""
    res, _ = post(tmp_path, src, b"x" * 500)
    assert res.body == b"nil nil\ntrue\nnilrequest body discarded\n"
    assert temp_files(tmp_path) == []


def test_discard_after_read_does_nothing(tmp_path: Path) -> None:
    src = "ngx.req.read_body() ngx.req.discard_body() ngx.say(ngx.req.get_body_data())"
    res, _ = post(tmp_path, src, b"kept")
    assert res.body == b"kept\n"


def test_body_too_large_ends_the_request_with_413(tmp_path: Path) -> None:
    src = "ngx.req.read_body() ngx.say('not reached')"
    res, _ = post(tmp_path, src, b"x" * 200, limit=100)
    assert (res.status, res.body) == (413, error_page(413))
    assert temp_files(tmp_path) == []


def test_short_body_ends_the_request_with_400(tmp_path: Path) -> None:
    path = write_script(tmp_path, "ngx.req.read_body() ngx.say('not reached')")
    request = FakeRequest(path, make_params(method=b"POST", extra=[(b"CONTENT_LENGTH", b"10")]))
    request.feed_body(b"abc")
    request.end_body()
    sink = MemorySink()
    asyncio.run(ENGINE.run(request, sink))
    assert parse(sink.chunks).status == 400


def test_read_body_waits_for_a_streamed_body(tmp_path: Path) -> None:
    path = write_script(tmp_path, "ngx.req.read_body() ngx.say(ngx.req.get_body_data())")
    request = FakeRequest(path, make_params(method=b"POST", extra=[(b"CONTENT_LENGTH", b"")]))
    sink = MemorySink()

    async def scenario() -> None:
        task = asyncio.ensure_future(ENGINE.run(request, sink))
        for piece in (b"chunk1 ", b"chunk2"):
            await asyncio.sleep(0.01)
            assert not task.done()
            request.feed_body(piece)
        request.end_body()
        await task

    asyncio.run(scenario())
    assert parse(sink.chunks).body == b"chunk1 chunk2\n"


MULTIPART_SCRIPT = """
local res, err = ngx.req.get_multipart()
if not res then
    ngx.status = 400
    ngx.say("error: ", err)
    return
end
local again = ngx.req.get_multipart()
ngx.say("same: ", tostring(again == res))
ngx.say("title: ", res.fields.title)
ngx.say("tags: ", table.concat(res.fields.tag, ","))
for i, f in ipairs(res.files) do
    local h = assert(io.open(f.path, "rb"))
    local data = h:read("*a")
    h:close()
    ngx.say(i, " ", f.name, " ", f.filename, " ", f.content_type, " ", f.size, " ",
            #data, " ", ngx.md5(data))
end
"""


def test_get_multipart(tmp_path: Path) -> None:
    blob = os.urandom(5000)
    data = form(
        part(b"title", b"Hello"),
        part(b"tag", b"a"),
        part(b"tag", b"b"),
        part(b"upload", blob, b"photo.jpg", b"image/jpeg"),
        part(b"upload", b"text", b"a.txt", b"text/plain"),
    )
    res, request = post(tmp_path, MULTIPART_SCRIPT, data, ctype=CTYPE)
    md5 = __import__("hashlib").md5
    assert res.body.decode() == (
        "same: true\ntitle: Hello\ntags: a,b\n"
        f"1 upload photo.jpg image/jpeg 5000 5000 {md5(blob).hexdigest()}\n"
        f"2 upload a.txt text/plain 4 4 {md5(b'text').hexdigest()}\n"
    )
    assert len(temp_files(tmp_path)) == 3  # the spooled body and two uploads
    request.close()
    assert temp_files(tmp_path) == []


def test_get_multipart_errors_and_truncation(tmp_path: Path) -> None:
    res, _ = post(tmp_path, MULTIPART_SCRIPT, b"a=1")
    assert (res.status, res.body) == (
        400,
        b"error: not a multipart/form-data body"
        b" (Content-Type: application/x-www-form-urlencoded)\n",
    )
    truncated = form(part(b"f", b"x" * 500, b"f.bin"))[:300]
    res, _ = post(tmp_path, MULTIPART_SCRIPT, truncated, ctype=CTYPE)
    assert res.body == b"error: truncated multipart body: no closing boundary\n"
    assert temp_files(tmp_path) == ["fcgi-lua-body-" + temp_files(tmp_path)[0][14:]]
    src = """
local res, err = ngx.req.get_multipart(1)
ngx.say(res.fields.a, " ", tostring(res.fields.b), " ", #res.files, " ", err)
"""
    res, _ = post(tmp_path, src, form(part(b"a", b"1"), part(b"b", b"2")), ctype=CTYPE)
    assert res.body == b"1 nil 0 truncated\n"


def test_get_multipart_body_too_large_is_413(tmp_path: Path) -> None:
    res, _ = post(tmp_path, MULTIPART_SCRIPT, form(part(b"a", b"1" * 300)), ctype=CTYPE, limit=100)
    assert res.status == 413


# -- the body the script sets: set_body_data, init/append/finish_body ----------


def test_set_body_data_replaces_a_spooled_body(tmp_path: Path) -> None:
    src = """
ngx.req.read_body()
local old = ngx.req.get_body_file()
ngx.req.set_body_data("a=1&b=x+y")
ngx.say(ngx.req.get_body_data(), " ", ngx.var.request_body, " ", tostring(ngx.req.get_body_file()))
ngx.say(ngx.var.http_content_length, " ", ngx.var.content_length, " ",
        ngx.req.get_headers()["content-length"])
local args = ngx.req.get_post_args()
ngx.say(args.a, " ", args.b, " ", io.open(old) and "old kept" or "old gone")
ngx.req.set_body_data("")
ngx.say(tostring(ngx.req.get_body_data()), " ", ngx.var.http_content_length)
"""
    res, request = post(tmp_path, src, b"z" * 200)
    assert res.status == 200, res.body
    assert res.body == b"a=1&b=x+y a=1&b=x+y nil\n9 9 9\n1 x y old kept\nnil 0\n"
    request.close()
    assert temp_files(tmp_path) == []


def test_init_append_finish_in_memory(tmp_path: Path) -> None:
    src = """
ngx.req.read_body()
ngx.req.init_body(4)
ngx.req.append_body("h")
ngx.req.append_body("ell")
ngx.req.finish_body()
ngx.say(ngx.var.http_content_length, " ", ngx.req.get_body_data(), " ",
        tostring(ngx.req.get_body_file()))
"""
    res, _ = post(tmp_path, src, b"old body")
    assert res.body == b"4 hell nil\n"
    assert temp_files(tmp_path) == []


def test_init_append_finish_past_the_buffer_goes_to_a_file(tmp_path: Path) -> None:
    src = """
ngx.req.read_body()
ngx.req.init_body(4)
ngx.req.append_body("h")
ngx.req.append_body("ell")
ngx.req.append_body("o, world")
ngx.req.finish_body()
local path = ngx.req.get_body_file()
local f = assert(io.open(path, "rb"))
ngx.say(ngx.var.http_content_length, " ", tostring(ngx.req.get_body_data()), " ", f:read("*a"))
f:close()
ngx.say(ngx.req.get_post_args())
ngx.req.init_body(0)  -- the built file is removed; every append goes to a new one
ngx.req.append_body("he")
ngx.req.append_body("llo")
ngx.req.finish_body()
f = assert(io.open(ngx.req.get_body_file(), "rb"))
ngx.say(ngx.var.http_content_length, " ", tostring(ngx.req.get_body_data()), " ", f:read("*a"),
        " ", io.open(path) and "first kept" or "first gone")
f:close()
"""
    res, request = post(tmp_path, src, b"", buffer=1024)
    assert res.status == 200, res.body
    assert res.body == (
        b"12 nil hello, world\nnilrequest body in temp file not supported\n5 nil hello first gone\n"
    )
    assert len(temp_files(tmp_path)) == 1
    request.close()
    assert temp_files(tmp_path) == []


def test_init_body_default_size_is_client_body_buffer_size(tmp_path: Path) -> None:
    src = """
ngx.req.read_body()
ngx.req.init_body()
ngx.req.append_body("hell")
ngx.req.finish_body()
ngx.say(tostring(ngx.req.get_body_data()), " ", tostring(ngx.req.get_body_file()))
ngx.req.init_body()
ngx.req.append_body("hello")
ngx.req.finish_body()
ngx.say(tostring(ngx.req.get_body_data()), " ", ngx.req.get_body_file() and "file")
"""
    res, _ = post(tmp_path, src, b"", buffer=4)
    assert res.body == b"hell nil\nnil file\n"


def test_body_building_errors(tmp_path: Path) -> None:
    src = """
local function try(f, ...)
    local ok, err = pcall(f, ...)
    ngx.say((tostring(err):gsub("^.-:%d+: ", "")))
end
try(ngx.req.init_body)
try(ngx.req.set_body_data, "x")
ngx.req.read_body()
try(ngx.req.append_body, "x")
try(ngx.req.finish_body)
try(ngx.req.init_body, -1)
try(ngx.req.init_body, 1, 2)
try(ngx.req.set_body_data)
try(ngx.req.set_body_data, {})
"""
    res, _ = post(tmp_path, src, b"abc")
    assert res.body == (
        b"request body not read yet\n"
        b"request body not read yet\n"
        b"request_body not initialized\n"
        b"request_body not initialized\n"
        b"bad size argument: -1\n"
        b"expecting 0 or 1 argument but seen 2\n"
        b"expecting 1 arguments but seen 0\n"
        b"bad argument #1 to 'set_body_data' (string expected, got table)\n"
    )
    src = """
ngx.req.discard_body()
local ok, err = pcall(ngx.req.init_body)
ngx.say(err)
"""
    res, _ = post(tmp_path, src, b"abc")
    assert res.body.endswith(b"request body already discarded asynchronously\n")


def test_req_socket_then_init_append_finish(tmp_path: Path) -> None:
    src = """
local sock = assert(ngx.req.socket())
ngx.req.init_body(100)
while true do
    local data, err = sock:receive(1)
    if not data then break end
    ngx.req.append_body(data)
end
ngx.req.finish_body()
ngx.say(ngx.var.http_content_length, " ", ngx.req.get_body_data())
"""
    res, _ = post(tmp_path, src, b"hello, my dear friend!")
    assert res.body == b"22 hello, my dear friend!\n"


def test_request_body_of_an_empty_built_body_is_empty_string(tmp_path: Path) -> None:
    # nginx has init_body's buffer then ($request_body ""); set_body_data("")
    # leaves none (nil), as OpenResty (tests/e2e/scripts/body_build.lua)
    src = """
ngx.req.read_body()
ngx.req.init_body(0)
ngx.req.finish_body()
ngx.say(type(ngx.var.request_body), " ", tostring(ngx.req.get_body_data()))
ngx.req.set_body_data("")
ngx.say(type(ngx.var.request_body))
"""
    res, _ = post(tmp_path, src, b"abc")
    assert res.body == b"string nil\nnil\n"
