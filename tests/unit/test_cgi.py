"""CGI mode (fcgi_lua/lua/cgi.lua): marking, the header block parser
(Status, Location-only, repeated headers, LF vs CRLF, a missing blank
line), the request body on stdin, os.getenv/os.exit, the shared io/os
never being touched, and an application of several files: the script's
directory as the working directory, modules and chunks that see the
request's globals and load fresh, package changes kept in the request,
os.exit from a module, and os.exit outside CGI mode."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fcgi_lua.lua import LuaEngine
from tests.helpers.lua import (
    FakeRequest,
    MemorySink,
    Response,
    make_params,
    parse,
    run_script,
    write_script,
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


@pytest.mark.parametrize(
    ("output", "status_line"),
    [
        ("Status: 404\n\n", b"Status: 404"),
        ("Status: 404 Nope\r\n\r\n", b"Status: 404 Nope"),
        ("Status:   503 Service Unavailable  \n\n", b"Status: 503 Service Unavailable"),
        ("Location: /x\n\n", b"Status: 302 Moved Temporarily"),
        ("Content-Type: text/plain\n\n", b"Status: 200 OK"),
    ],
)
def test_status_line_is_the_scripts(tmp_path: Path, output: str, status_line: bytes) -> None:
    # what nginx makes its status line of, as from fcgiwrap: the script's
    # Status value as written, or nginx's own text for a CGI response
    res = cgi(tmp_path, _write(output))
    assert res.raw.split(b"\r\n")[0] == status_line


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


# -- an application of several files (issue 14) ------------------------------


def app_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(textwrap.dedent(text).encode())


def run_file(engine: LuaEngine, path: Path, *, query: bytes = b"", body: bytes = b"") -> Response:
    sink = MemorySink()
    params = make_params(query=query, extra=[(b"SCRIPT_FILENAME", os.fsencode(path))])
    asyncio.run(engine.run(FakeRequest(str(path), params, body), sink))
    return parse(sink.chunks)


def test_relative_paths_resolve_against_the_script_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the worker's own directory is elsewhere; the script's is app/
    monkeypatch.chdir(tmp_path)
    app_files(
        tmp_path / "app",
        {
            "page.lua": """\
                #!/usr/bin/env lua
                package.path = "lib/?.lua;?.lua"
                local m = require "mod"
                print("Content-Type: text/plain\\n")
                print(m.name, dofile("conf.lua"), loadfile("conf.lua")())
                for line in io.lines("data/in.txt") do print("line", line) end
                io.input("data/in.txt") print("input", io.read())
                local f = assert(io.open("data/new.tmp", "w")) f:write("x") f:close()
                print("rename", os.rename("data/new.tmp", "data/new.txt"))
                print("read", io.open("data/new.txt"):read("*a"))
                print("remove", os.remove("data/new.txt"))
                print("missing", select(2, io.open("data/new.txt")))
                print("popen", io.popen("cat data/in.txt"):read("*l"))
                print("searchpath", package.searchpath("mod", package.path))
            """,
            "lib/mod.lua": 'return { name = "mod from lib" }\n',
            "conf.lua": 'return "conf"\n',
            "data/in.txt": "one\ntwo\n",
        },
    )
    res = run_file(LuaEngine(), tmp_path / "app" / "page.lua")
    assert res.status == 200, res.raw
    assert res.body.decode().splitlines() == [
        "mod from lib\tconf\tconf",
        "line\tone",
        "line\ttwo",
        "input\tone",
        "rename\ttrue",
        "read\tx",
        "remove\ttrue",
        "missing\tdata/new.txt: No such file or directory\t2",
        "popen\tone",
        "searchpath\tlib/mod.lua",
    ]
    assert not (tmp_path / "data").exists()


def test_concurrent_requests_each_have_their_own_directory(tmp_path: Path) -> None:
    script = SHEBANG + (
        'local first = io.open("name.txt"):read("*a")\n'
        "ngx.sleep(0.01)\n"
        'print("Content-Type: text/plain\\n")\n'
        'print(first, io.open("name.txt"):read("*a"), require("here").name)\n'
    )
    for name in ("a", "b"):
        app_files(
            tmp_path / name,
            {"s.lua": script, "name.txt": name, "here.lua": f"return {{ name = {name!r} }}\n"},
        )
    engine = LuaEngine()

    async def main() -> list[bytes]:
        sinks = [MemorySink() for _ in range(4)]
        paths = [tmp_path / name / "s.lua" for name in ("a", "b", "a", "b")]
        await asyncio.gather(
            *(
                engine.run(FakeRequest(str(p), make_params()), sink)
                for p, sink in zip(paths, sinks, strict=True)
            )
        )
        return [parse(sink.chunks).body for sink in sinks]

    assert asyncio.run(main()) == [b"a\ta\ta\n", b"b\tb\tb\n", b"a\ta\ta\n", b"b\tb\tb\n"]


def test_modules_and_chunks_see_the_request_os_io_print_arg(tmp_path: Path) -> None:
    # absolute paths: only what the loaded code sees is tested here
    lib = tmp_path / "lib"
    app_files(
        tmp_path,
        {
            "lib/helper.lua": """\
                local M = {}
                function M.show()
                    print("module print", os.getenv("REQUEST_METHOD"), arg[0] ~= nil)
                    io.write("module io.write ", os.getenv("QUERY_STRING"), "\\n")
                end
                return M
            """,
            "lib/chunk.lua": 'print("dofile", os.getenv("QUERY_STRING"))\nreturn 7\n',
        },
    )
    script = SHEBANG + textwrap.dedent(
        f"""\
        package.path = "{lib}/?.lua"
        print("Content-Type: text/plain\\n")
        require("helper").show()
        print("returned", dofile("{lib}/chunk.lua"))
        loadfile("{lib}/chunk.lua")()
        loadstring('print("loadstring", os.getenv("REQUEST_METHOD"))')()
        print("require os", require("os").getenv("REQUEST_METHOD"), require("io") == io)
        """
    )
    res = run_script(tmp_path, script, params=make_params(query=b"q=1"))
    assert res.status == 200, res.raw
    assert res.body.decode().splitlines() == [
        "module print\tGET\ttrue",
        "module io.write q=1",
        "dofile\tq=1",
        "returned\t7",
        "dofile\tq=1",
        "loadstring\tGET",
        "require os\tGET\ttrue",
    ]


def test_modules_load_fresh_for_each_request(tmp_path: Path) -> None:
    app_files(
        tmp_path,
        {
            "counter.lua": "local n = 0\nreturn function() n = n + 1 return n end\n",
            "old.lua": 'module("old", package.seeall)\n'
            'function hello() return os.getenv("QUERY_STRING") end\n',
        },
    )
    script = SHEBANG + (
        f'package.path = "{tmp_path}/?.lua"\n'
        'local count = require "counter"\n'
        'count() print("Content-Type: text/plain\\n")\n'
        'print(count(), require("counter") == count, require("old").hello(), old.hello())\n'
    )
    path = write_script(tmp_path, script)
    engine = LuaEngine()
    bodies = [run_file(engine, Path(path), query=str(i).encode()).body for i in range(2)]
    assert bodies == [b"2\ttrue\t0\t0\n", b"2\ttrue\t1\t1\n"]
    # an edited module is read again
    (tmp_path / "counter.lua").write_text("return function() return 42 end\n")
    assert run_file(engine, Path(path), query=b"x").body == b"42\ttrue\tx\tx\n"


PROBE = (
    "ngx.say(package.path, '|', package.cpath, '|', tostring(package.loaded.leaked), '|',"
    " tostring(package.loaded.counted), '|', tostring(package.preload.leaked), '|',"
    " #(package.loaders or package.searchers), '|', tostring(counted))"
)


def test_package_changes_stay_in_the_request(tmp_path: Path) -> None:
    engine = LuaEngine()
    (tmp_path / "counted.lua").write_text("counted = true\nreturn {}\n")
    before = run_script(tmp_path, PROBE, engine=engine).body
    script = SHEBANG + (
        f'package.path = "{tmp_path}/?.lua"\n'
        'package.cpath = "nowhere/?.so"\n'
        "package.loaded.leaked = true\n"
        "package.preload.leaked = function() return 1 end\n"
        "table.insert(package.loaders or package.searchers, function() end)\n"
        'require "counted"\n'
        'print("Content-Type: text/plain\\n")\n'
    )
    path = write_script(tmp_path, script, "cgi.lua")
    assert run_file(engine, Path(path)).status == 200
    after = run_script(tmp_path, PROBE, engine=engine).body
    assert after == before
    assert b"|nil|nil|nil|" in after
    # what failed once: an ngx script's require of a library on the path
    res = run_script(tmp_path, 'ngx.say(require("resty.string").to_hex("A"))', engine=engine)
    assert res.body == b"41\n"


def test_require_errors_name_the_files_as_written(tmp_path: Path) -> None:
    (tmp_path / "loop.lua").write_text('return require "loop"\n')
    script = (
        'package.path = "lib/?.lua;?.lua"\n'
        'local ok, err = pcall(require, "nothere")\n'
        'local ok2, err2 = pcall(require, "loop")\n'
        'print("Content-Type: text/plain\\n")\n'
        "print(err)\nprint(err2)\n"
    )
    res = cgi(tmp_path, script)
    assert b"module 'nothere' not found:" in res.body
    assert b"no file 'lib/nothere.lua'" in res.body
    assert b"no file 'nothere.lua'" in res.body
    assert b"loop or previous error loading module 'loop'" in res.body


def test_crlf_script_and_module_run(tmp_path: Path) -> None:
    # fcgiwrap refuses a "#!/usr/bin/env lua\r" line; fcgi-lua runs it
    app_files(tmp_path, {"crlf_mod.lua": "local M = {}\r\nM.v = 'crlf'\r\nreturn M\r\n"})
    script = (
        "#!/usr/bin/env lua\r\n"
        'print("Content-Type: text/plain")\r\n'
        'print("")\r\n'
        'print(require("crlf_mod").v)\r\n'
    )
    path = write_script(tmp_path, script)
    res = run_file(LuaEngine(), Path(path))
    assert (res.status, res.body) == (200, b"crlf\n")


def test_sandbox_confines_what_a_cgi_request_loads(tmp_path: Path) -> None:
    root = tmp_path / "root"
    app_files(
        root,
        {
            "lib/ok.lua": "return 'inside'\n",
            "s.lua": SHEBANG
            + 'package.path = "lib/?.lua;../?.lua"\n'
            + 'print("Content-Type: text/plain\\n")\n'
            + "print(require 'ok', pcall(require, 'secret'), pcall(dofile, '../secret.lua'))\n"
            + "print(pcall(io.lines, '../secret.lua'))\n"
            + "print(pcall(io.input, '../secret.lua'))\n",
        },
    )
    (tmp_path / "secret.lua").write_text("return 'SECRET'\n")
    res = run_file(LuaEngine(sandbox=True, root=str(root)), root / "s.lua")
    assert res.status == 200, res.raw
    assert b"SECRET" not in res.body.replace(b"secret.lua", b"")
    lines = res.body.splitlines()
    assert lines[0].startswith(b"inside\tfalse\t")
    assert lines[1].startswith(b"false\t") and b"outside the sandbox" in lines[1]
    assert lines[2].startswith(b"false\t") and b"outside the sandbox" in lines[2]


def run_in_child(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh Python process: on the bugs these tests catch,
    os.exit would end the test run itself."""
    prelude = textwrap.dedent(
        """\
        import asyncio, logging, os, sys
        from pathlib import Path
        from fcgi_lua.lua import LuaEngine
        from tests.helpers.lua import FakeRequest, MemorySink, make_params
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        def run(engine, path):
            sink = MemorySink()
            params = make_params(extra=[(b"SCRIPT_FILENAME", os.fsencode(path))])
            asyncio.run(engine.run(FakeRequest(str(path), params), sink))
            return b"".join(sink.chunks)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_os_exit_in_a_module_ends_the_request_not_the_worker(tmp_path: Path) -> None:
    app_files(
        tmp_path / "app",
        {
            "page.lua": """\
                local M = {}
                function M.fail(status)
                    io.write("Status: ", status, "\\r\\n\\r\\n")
                    print("failed")
                    os.exit(0)
                    print("never printed")
                end
                return M
            """,
            "s.lua": SHEBANG + 'require("page").fail(404)\nprint("never printed")\n',
            "c.lua": SHEBANG + 'dofile("chunk.lua")\n',
            "chunk.lua": 'print("Status: 410\\n")\nos.exit(3)\n',
        },
    )
    child = run_in_child(
        tmp_path,
        """\
        engine = LuaEngine()
        app = Path("app").resolve()
        for _ in range(2):
            print(run(engine, app / "s.lua"))
            print(run(engine, app / "c.lua"))
        print("still serving")
        """,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.count("Status: 404\\r\\n") == 2, child.stdout
    assert child.stdout.count("Status: 410\\r\\n") == 2, child.stdout
    assert "failed\\n" in child.stdout
    assert "never printed" not in child.stdout
    assert child.stdout.endswith("still serving\n")


def test_os_exit_outside_cgi_mode_ends_the_worker_naming_the_script(tmp_path: Path) -> None:
    (tmp_path / "quit.lua").write_text('ngx.say("bye")\nos.exit(0)\n')
    child = run_in_child(
        tmp_path,
        """\
        run(LuaEngine(), Path("quit.lua").resolve())
        print("not reached")
        """,
    )
    script = str((tmp_path / "quit.lua").resolve())
    assert child.returncode == 70, (child.returncode, child.stderr)  # workers.SCRIPT_EXIT_STATUS
    assert f"os.exit(0) in {script} at {script}:2: the worker process exits" in child.stderr
    assert "not reached" not in child.stdout


def test_the_exit_status_is_the_one_the_master_knows() -> None:
    from fcgi_lua import workers

    res = asyncio.run(_eval('ngx.say(require("fcgi_lua.cgi").SCRIPT_EXIT_STATUS)'))
    assert res == f"{workers.SCRIPT_EXIT_STATUS}\n".encode()


async def _eval(src: str) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.lua"
        path.write_text(src)
        sink = MemorySink()
        await LuaEngine().run(FakeRequest(str(path), make_params()), sink)
        return parse(sink.chunks).body


def test_fcgi_lua_and_c_modules_are_the_workers(tmp_path: Path) -> None:
    names = ["resty.core.base", "ngx.re", "table.new", "cjson"]
    probe = "".join(f"ngx.say(tostring(require({n!r})))\n" for n in names)
    engine = LuaEngine()
    workers = run_script(tmp_path, probe, engine=engine).body
    src = 'print("Content-Type: text/plain\\n")\n' + "".join(
        f"print(tostring(require({n!r})))\n" for n in names
    )
    for _ in range(2):
        assert run_script(tmp_path, SHEBANG + src, engine=engine).body == workers


def test_io_lines_error_names_the_file_as_written(tmp_path: Path) -> None:
    res = cgi(
        tmp_path,
        'print("Content-Type: text/plain\\n")\nprint(pcall(io.lines, "data/none.txt"))\n',
    )
    assert b"data/none.txt: No such file or directory" in res.body
    assert str(tmp_path).encode() not in res.body


def test_module_under_a_shared_global_stays_in_the_request(tmp_path: Path) -> None:
    (tmp_path / "string").mkdir()
    (tmp_path / "string" / "ext.lua").write_text(
        'module("string.ext", package.seeall)\nfunction shout(s) return s:upper() end\n'
    )
    engine = LuaEngine()
    script = SHEBANG + (
        f'package.path = "{tmp_path}/?.lua"\n'
        'require "string.ext"\n'
        'print("Content-Type: text/plain\\n")\n'
        'print(string.ext.shout("a"), string.rep("b", 2))\n'
    )
    assert run_script(tmp_path, script, engine=engine).body == b"A\tbb\n"
    res = run_script(tmp_path, "ngx.say(tostring(string.ext))", engine=engine)
    assert res.body == b"nil\n"
