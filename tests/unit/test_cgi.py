"""CGI mode (fcgi_lua/lua/cgi.lua): marking, the header block parser
(Status, Location-only, repeated headers, LF vs CRLF, a missing blank
line), the request body on stdin, os.getenv/os.exit, and the shared io/os
never being touched."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fcgi_lua.lua import LuaEngine
from tests.unit.test_lua_support import (
    FakeRequest,
    MemorySink,
    Response,
    make_params,
    parse,
    run_script,
)

SHEBANG = "#!/usr/bin/env lua\n"


def cgi(tmp_path: Path, body_lua: str, **kwargs: object) -> Response:
    return run_script(tmp_path, SHEBANG + body_lua, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("output", "status", "headers", "body"),
    [
        (
            "Content-Type: text/html\n\n<p>x</p>",
            200,
            [(b"Content-Type", b"text/html")],
            b"<p>x</p>",
        ),
        ("Content-Type: text/html\r\n\r\nbody", 200, [(b"Content-Type", b"text/html")], b"body"),
        ("Content-Type: a/b\r\n\nmixed", 200, [(b"Content-Type", b"a/b")], b"mixed"),
        ("Status: 404 Not Found\nContent-Type: text/plain\n\nnope", 404, [], b"nope"),
        ("Status: 201\n\n", 201, [], b""),
        ("Location: /elsewhere\n\n", 302, [(b"Location", b"/elsewhere")], b""),
        (
            "Status: 301 Moved\r\nLocation: http://x/\r\n\r\n",
            301,
            [(b"Location", b"http://x/")],
            b"",
        ),
        (
            "Set-Cookie: a=1\nSet-Cookie: b=2\nContent-Type: t/p\n\n",
            200,
            [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")],
            b"",
        ),
        ("X-Folded: one\n  two\n\nb", 200, [(b"X-Folded", b"one two")], b"b"),
        ("\nbody only", 200, [], b"body only"),
        # a missing blank line: the whole output is the header block
        ("Status: 303\nLocation: /next", 303, [(b"Location", b"/next")], b""),
        ("Content-Type: text/plain\n", 200, [(b"Content-Type", b"text/plain")], b""),
    ],
)
def test_header_block(
    tmp_path: Path, output: str, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    res = cgi(tmp_path, _write(output))
    assert res.status == status, res.raw
    for name, value in headers:
        assert value in res.all(name), res.raw
    if name_count := [h for h in headers if h[0] == b"Set-Cookie"]:
        assert res.all(b"Set-Cookie") == [v for _, v in name_count]
    assert res.body == body


def _write(output: str) -> str:
    return "io.write(" + lua_string(output) + ")\n"


def lua_string(s: str) -> str:
    return (
        '"' + "".join(c if c.isalnum() or c in " /:;=<>.-_?,!" else f"\\{ord(c)}" for c in s) + '"'
    )


def test_header_block_written_in_pieces(tmp_path: Path) -> None:
    res = cgi(
        tmp_path,
        'io.write("Content-") io.write("Type: a/b\\r") io.write("\\n\\r\\nbo") print("dy")',
    )
    assert res.status == 200
    assert res.header(b"Content-Type") == b"a/b"
    assert res.body == b"body\n"


def test_no_default_content_type(tmp_path: Path) -> None:
    res = cgi(tmp_path, 'print("Status: 302")\nprint("Location: /x")\nprint()')
    assert res.status == 302
    assert res.header(b"Content-Type") is None


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ('print("hello")', b"malformed header line"),
        ('print("Status: abc")\nprint()', b"bad Status header"),
        ("local x = 1", b"produced no output"),
        ('io.write(string.rep("x", 70000))', b"larger than 65536"),
    ],
)
def test_malformed_output_is_a_500(tmp_path: Path, src: str, message: bytes) -> None:
    res = cgi(tmp_path, src, debug=True)
    assert res.status == 500
    assert message in res.body


def test_print_and_io_write_forms(tmp_path: Path) -> None:
    src = """
print("Content-Type: text/plain")
print()
print("a", 1, nil, true)
io.write("b", 2.5, "\\n")
io.stdout:write("c"):write("d\\n")
io.output():write("e\\n")
local f = io.stdout
f:setvbuf("no")
f:flush()
print(io.type(io.stdout), io.type(io.stdin), tostring(io.stdout))
"""
    res = cgi(tmp_path, src)
    assert res.body == b"a\t1\tnil\ttrue\nb2.5\ncd\ne\nfile\tfile\tfile (cgi stdout)\n"


def test_getenv_returns_the_request_variables(tmp_path: Path) -> None:
    src = """
print("Content-Type: text/plain\\n")
print(os.getenv("QUERY_STRING"), os.getenv("REQUEST_METHOD"), os.getenv("HTTP_X_A"),
      tostring(os.getenv("PATH")), arg[0] ~= nil)
"""
    params = make_params(
        query=b"q=1", headers=[(b"HTTP_X_A", b"v")], extra=[(b"SCRIPT_FILENAME", b"/t.lua")]
    )
    res = cgi(tmp_path, src, params=params)
    assert res.body == b"q=1\tGET\tv\tnil\ttrue\n"


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        ('io.read("*a")', b"line1\nline2\n42 rest"),
        ('io.read("a")', b"line1\nline2\n42 rest"),
        ("io.read()", b"line1"),
        ('io.read("*l", "*l", "*n", 3)', b"line1|line2|42| re"),
        ('io.read("L")', b"line1\n"),
        ("io.read(5)", b"line1"),
        ('io.stdin:read("*a")', b"line1\nline2\n42 rest"),
        (
            "(function() local t = {} for l in io.lines() do t[#t+1] = l end"
            ' return table.concat(t, "|") end)()',
            b"line1|line2|42 rest",
        ),
        (
            "(function() local t = {} for l in io.stdin:lines() do t[#t+1] = l end"
            " return #t end)()",
            b"3",
        ),
    ],
)
def test_stdin_reads_the_body(tmp_path: Path, read: str, expected: bytes) -> None:
    src = f"""
local v = {{ {read} }}
for i = 1, #v do v[i] = tostring(v[i]) end
io.write("Content-Type: text/plain\\n\\n", table.concat(v, "|"))
"""
    res = cgi(tmp_path, src, body=b"line1\nline2\n42 rest")
    assert res.body == expected


def test_read_at_end_and_empty_body(tmp_path: Path) -> None:
    src = """
local all = io.read("*a")
io.write("Content-Type: text/plain\\n\\n", "[", all, "] ", tostring(io.read()), " ",
         tostring(io.read(1)))
"""
    res = cgi(tmp_path, src, body=b"")
    assert res.body == b"[] nil nil"


def test_os_exit_ends_the_request(tmp_path: Path) -> None:
    engine = LuaEngine()
    src = 'print("Status: 204")\nprint()\nos.exit(1)\nerror("not reached")'
    res = run_script(tmp_path, SHEBANG + src, engine=engine)
    assert res.status == 204
    # the worker (the engine) still serves
    assert run_script(tmp_path, "ngx.say('alive')", engine=engine).body == b"alive\n"


def test_os_exit_inside_pcall_and_coroutine(tmp_path: Path) -> None:
    src = """
io.write("Content-Type: text/plain\\n\\nbefore\\n")
coroutine.wrap(function() pcall(os.exit, 0) end)()
io.write("after\\n")
"""
    res = cgi(tmp_path, src)
    assert res.body == b"before\n"


def test_shared_io_and_os_are_never_touched(tmp_path: Path) -> None:
    engine = LuaEngine()
    before = run_script(
        tmp_path, "ngx.say(tostring(io.write), tostring(os.getenv), tostring(print))", engine=engine
    ).body
    assert run_script(tmp_path, SHEBANG + 'print("Status: 200\\n")', engine=engine).status == 200
    after = run_script(
        tmp_path, "ngx.say(tostring(io.write), tostring(os.getenv), tostring(print))", engine=engine
    ).body
    assert before == after
    # and a non-CGI script's os.getenv is the process's own
    res = run_script(tmp_path, 'ngx.say(tostring(os.getenv("QUERY_STRING")))', engine=engine)
    assert res.body == b"nil\n"


def test_concurrent_cgi_requests_keep_their_own_streams(tmp_path: Path) -> None:
    engine = LuaEngine()
    path = tmp_path / "c.lua"
    path.write_text(
        SHEBANG
        + 'local b = io.read("*a")\nngx.sleep(0.01)\n'
        + 'io.write("Content-Type: text/plain\\n\\n", os.getenv("QUERY_STRING"), ":", b)\n'
    )

    async def main() -> list[bytes]:
        sinks = [MemorySink() for _ in range(5)]
        await asyncio.gather(
            *(
                engine.run(
                    FakeRequest(str(path), make_params(query=str(i).encode()), f"body{i}".encode()),
                    s,
                )
                for i, s in enumerate(sinks)
            )
        )
        return [parse(s.chunks).body for s in sinks]

    assert asyncio.run(main()) == [f"{i}:body{i}".encode() for i in range(5)]


@pytest.mark.parametrize(
    ("line", "marked"),
    [
        ("#!/usr/bin/lua", True),
        ("#!/usr/bin/lua5.1", True),
        ("#!/usr/bin/env lua", True),
        ("#! /usr/local/bin/luajit -joff", True),
        ("#!/usr/bin/env -S lua5.4 -W", True),
        ("#!/usr/bin/env resty", False),
        ("#!/usr/bin/env fcgi-lua run", False),
        ("#!/bin/sh", False),
    ],
)
def test_shebang_marker(tmp_path: Path, line: str, marked: bool) -> None:
    res = run_script(tmp_path, line + '\nprint("Status: 202\\n")\nngx.say("ngx")')
    assert res.status == (202 if marked else 200)


def test_shebang_marker_can_be_turned_off(tmp_path: Path) -> None:
    res = run_script(tmp_path, SHEBANG + 'ngx.say("plain")', cgi_shebang=False)
    assert res.body == b"plain\n"


def test_pattern_marker(tmp_path: Path) -> None:
    engine = LuaEngine(root=str(tmp_path), cgi_patterns=["cgi-bin/*", "*.cgi.lua"])
    (tmp_path / "cgi-bin").mkdir()
    for name in ("cgi-bin/a.lua", "x.cgi.lua", "plain.lua"):
        (tmp_path / name).write_text('io.write("Status: 203\\n\\n")\n')
    results = {}
    for name in ("cgi-bin/a.lua", "x.cgi.lua", "plain.lua"):
        sink = MemorySink()
        asyncio.run(engine.run(FakeRequest(str(tmp_path / name), make_params()), sink))
        results[name] = parse(sink.chunks).status
    # plain.lua is an ngx script: io.write goes to the worker's stdout
    assert results == {"cgi-bin/a.lua": 203, "x.cgi.lua": 203, "plain.lua": 200}


def test_parse_header_block_from_lua(tmp_path: Path) -> None:
    src = """
local cgi = require "fcgi_lua.cgi"
local status, headers = cgi.parse_header_block("Location: /a\\r\\nX: 1\\r\\n")
local bad, why = cgi.parse_header_block("oops\\n")
ngx.say(status, " ", #headers, " ", headers[1][1], "=", headers[1][2], " ", tostring(bad), " ", why)
ngx.say(cgi.find_blank_line("A: b\\r\\n\\r\\nbody"), " ", tostring(cgi.find_blank_line("A: b\\n")))
"""
    res = run_script(tmp_path, src)
    assert res.body == b'302 2 Location=/a nil malformed header line "oops"\n6 nil\n'
