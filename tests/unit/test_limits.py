"""Limits and sandbox (fcgi_lua/limits.py, lua/limits.lua, lua/sandbox.lua):
instruction budget, request timeout, Lua memory limit, sandbox, isolation
of concurrent requests, allowed_clients."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from fcgi_lua.config import ConfigError, load
from fcgi_lua.limits import ClientFilter, PathConfinement, package_dirs
from fcgi_lua.lua import DEFAULT_RUNTIME, LuaEngine
from tests.helpers.lua import FakeRequest, MemorySink, make_params, parse, write_script

# PUC Lua runs the hook per coroutine, LuaJIT VM-wide with its JIT off.
BUDGET_RUNTIMES = ["lua52", "lua54", "lua55", "luajit21", "lua51"]
# Every limit holds on these, the default among them (docs/runtimes.md).
# lua54's allocator-limited collections make its cases take seconds
MEMORY_RUNTIMES = [
    pytest.param(name, marks=pytest.mark.slow) if name == "lua54" else name
    for name in sorted({DEFAULT_RUNTIME, "lua52", "lua54", "lua55"})
]


def run_many(engine: LuaEngine, paths: list[str]) -> list[tuple[int, bytes]]:
    async def main() -> list[tuple[int, bytes]]:
        sinks = [MemorySink() for _ in paths]
        await asyncio.gather(
            *(
                engine.run(FakeRequest(p, make_params()), s)
                for p, s in zip(paths, sinks, strict=True)
            )
        )
        await asyncio.sleep(0)  # the collection after a memory kill
        return [(r.status, r.body) for r in (parse(s.chunks) for s in sinks)]

    return asyncio.run(main())


# -- instruction budget --------------------------------------------------------------


@pytest.mark.parametrize("runtime", BUDGET_RUNTIMES)
@pytest.mark.parametrize(
    "source",
    [
        "while true do end",
        # a pcall around the loop cannot swallow the kill
        "while true do pcall(function() while true do end end) end",
        "local f = coroutine.wrap(function() while true do end end) f()",
        "local function f(n) return f(n + 1) end return f(1)",  # a tail-call loop
    ],
)
def test_runaway_gets_500_and_others_keep_being_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, runtime: str, source: str
) -> None:
    engine = LuaEngine(runtime=runtime, max_instructions=2_000_000)
    runaway = write_script(tmp_path, source, "runaway.lua")
    sleeper = write_script(tmp_path, "ngx.sleep(0.01) ngx.say('fine')", "fine.lua")
    with caplog.at_level(logging.ERROR, "fcgi_lua.lua"):
        results = run_many(engine, [sleeper, runaway, sleeper])
    assert results[0] == (200, b"fine\n")
    assert results[1][0] == 500
    assert results[2] == (200, b"fine\n")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(runaway in m and "instruction budget" in m for m in errors), errors
    # the same engine serves the next request
    assert run_many(engine, [sleeper]) == [(200, b"fine\n")]


@pytest.mark.parametrize("runtime", [DEFAULT_RUNTIME, "lua54", "luajit21"])
def test_budget_counts_across_resumes(tmp_path: Path, runtime: str) -> None:
    # each resume stays under the budget, the request as a whole does not
    src = "for i = 1, 100 do for j = 1, 20000 do end ngx.sleep(0) end ngx.say('done')"
    engine = LuaEngine(runtime=runtime, max_instructions=1_000_000)
    path = write_script(tmp_path, src)
    assert run_many(engine, [path])[0][0] == 500
    generous = LuaEngine(runtime=runtime, max_instructions=100_000_000)
    assert run_many(generous, [path]) == [(200, b"done\n")]


def test_budget_cannot_be_lifted_by_the_script(tmp_path: Path) -> None:
    src = "local ok = pcall(debug.sethook) ngx.say(ok)"
    engine = LuaEngine(runtime="lua54", max_instructions=1_000_000)
    assert run_many(engine, [write_script(tmp_path, src)]) == [(200, b"false\n")]


def test_luajit_budget_turns_the_jit_off(tmp_path: Path) -> None:
    src = "ngx.say(jit.status(), ' ', pcall(jit.on))"
    on = LuaEngine(runtime="luajit21")
    off = LuaEngine(runtime="luajit21", max_instructions=1_000_000)
    path = write_script(tmp_path, src)
    assert run_many(on, [path])[0][1].startswith(b"true")
    assert run_many(off, [path])[0][1].startswith(b"false false")


def test_budget_zero_is_off(tmp_path: Path) -> None:
    src = "local n = 0 for i = 1, 3e6 do n = n + 1 end ngx.say(n)"
    engine = LuaEngine(runtime="lua54", max_instructions=0)
    assert run_many(engine, [write_script(tmp_path, src)]) == [(200, b"3000000\n")]


def test_budget_applies_to_timers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = "ngx.timer.at(0, function() while true do end end) ngx.say('queued')"
    engine = LuaEngine(runtime="lua54", max_instructions=1_000_000)
    path = write_script(tmp_path, src)

    async def main() -> bytes:
        sink = MemorySink()
        await engine.run(FakeRequest(path, make_params()), sink)
        await asyncio.sleep(0.2)
        return parse(sink.chunks).body

    with caplog.at_level(logging.ERROR, "fcgi_lua.lua"):
        assert asyncio.run(main()) == b"queued\n"
    assert any("instruction budget" in r.getMessage() for r in caplog.records)


# -- request timeout ---------------------------------------------------------------------


def test_timeout_gives_504_and_ends_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slow = write_script(
        tmp_path,
        "ngx.thread.spawn(function() ngx.sleep(10) end) ngx.sleep(10) ngx.say('late')",
        "slow.lua",
    )
    quick = write_script(tmp_path, "ngx.sleep(0.05) ngx.say('quick')", "quick.lua")
    engine = LuaEngine(runtime="lua54", request_timeout=0.3)
    with caplog.at_level(logging.ERROR, "fcgi_lua.lua"):
        results = run_many(engine, [slow, quick])
    assert results[0][0] == 504
    assert results[1] == (200, b"quick\n")
    assert any(
        slow in r.getMessage() and "request_timeout" in r.getMessage() for r in caplog.records
    )
    assert run_many(engine, [quick]) == [(200, b"quick\n")]


def test_timeout_after_headers_ends_the_response(tmp_path: Path) -> None:
    src = "ngx.say('first') ngx.flush() ngx.sleep(10) ngx.say('late')"
    engine = LuaEngine(runtime="lua54", request_timeout=0.2)
    status, body = run_many(engine, [write_script(tmp_path, src)])[0]
    assert (status, body) == (200, b"first\n")


def test_timeout_closes_sockets(tmp_path: Path) -> None:
    async def main() -> tuple[bytes, bytes]:
        closed = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # EOF: the responder closed its side
            closed.set()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        src = f"""
local sock = ngx.socket.tcp()
assert(sock:connect("127.0.0.1", {port}))
sock:settimeout(10000)
sock:receive()
"""
        engine = LuaEngine(runtime="lua54", request_timeout=0.2)
        sink = MemorySink()
        await engine.run(FakeRequest(write_script(tmp_path, src), make_params()), sink)
        await asyncio.wait_for(closed.wait(), 2)
        server.close()
        return str(parse(sink.chunks).status).encode(), b"closed"

    assert asyncio.run(main()) == (b"504", b"closed")


# -- Lua memory limit --------------------------------------------------------------------


@pytest.mark.parametrize("runtime", MEMORY_RUNTIMES)
def test_memory_hog_gets_500_and_the_engine_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, runtime: str
) -> None:
    hog = write_script(
        tmp_path,
        "local t = {} while true do t[#t + 1] = string.rep('x', 1000) .. #t end",
        "hog.lua",
    )
    fine = write_script(tmp_path, "ngx.sleep(0.01) ngx.say(#string.rep('y', 100000))", "fine.lua")
    engine = LuaEngine(runtime=runtime, lua_memory_limit=32 << 20)
    exhausted: list[bool] = []
    engine.on_exhausted = lambda: exhausted.append(True)
    with caplog.at_level(logging.ERROR, "fcgi_lua.lua"):
        results = run_many(engine, [fine, hog, fine])
    assert results[0] == (200, b"100000\n")
    assert results[1][0] == 500
    assert results[2] == (200, b"100000\n")
    assert any(
        hog in r.getMessage() and "not enough memory" in r.getMessage() for r in caplog.records
    )
    assert run_many(engine, [fine]) == [(200, b"100000\n")]
    assert engine.lua_memory() < 8 << 20  # the hog's table was collected
    assert not exhausted


@pytest.mark.parametrize("runtime", MEMORY_RUNTIMES)
def test_memory_kept_in_shared_state_recycles_the_worker(tmp_path: Path, runtime: str) -> None:
    # kept in a module's table: shared by every request of the VM (the
    # shared globals themselves are read-only to a request)
    (tmp_path / "keep.lua").write_text("return {}")
    leak = "local t = require('keep') while true do t[#t + 1] = string.rep('x', 999) end"
    engine = LuaEngine(
        runtime=runtime, lua_memory_limit=32 << 20, lua_package_path=f"{tmp_path}/?.lua;;"
    )
    exhausted: list[bool] = []
    engine.on_exhausted = lambda: exhausted.append(True)
    assert run_many(engine, [write_script(tmp_path, leak)])[0][0] == 500
    assert exhausted == [True]


@pytest.mark.parametrize(
    "source",
    [
        "local s = string.rep('x', 600 * 1024 * 1024)",
        "local s = ('x'):rep(300 * 1024 * 1024, 'y')",
        "local t, s = {}, string.rep('x', 1 << 20) for i = 1, 200 do t[i] = s end "
        "return table.concat(t)",
        "local s = string.rep('x', 1 << 20) "
        "return string.format(string.rep('%s', 100), " + ", ".join(["s"] * 100) + ")",
    ],
)
def test_luajit_allocating_builtins_are_checked_before_the_call(
    tmp_path: Path, source: str
) -> None:
    # one C call where no hook runs: the size is checked against the soft limit first
    engine = LuaEngine(runtime="luajit21", lua_memory_limit=32 << 20)
    big = write_script(tmp_path, source, "big.lua")
    fine = write_script(tmp_path, "ngx.say(#string.rep('y', 100000))", "fine.lua")
    assert [s for s, _ in run_many(engine, [big, fine])] == [500, 200]
    assert engine.lua_memory() < 8 << 20


def test_luajit_soft_limit_is_catchable_once(tmp_path: Path) -> None:
    hog = "local t = {} while true do t[#t + 1] = string.rep('x', 1000) .. #t end"
    caught = write_script(
        tmp_path, f"local ok, err = pcall(function() {hog} end) ngx.say(ok, ' ', err)", "c.lua"
    )
    engine = LuaEngine(runtime="luajit21", lua_memory_limit=32 << 20)
    assert run_many(engine, [caught]) == [(200, b"false not enough memory\n")]
    # one that catches it and goes on allocating fails at the next check
    stubborn = write_script(tmp_path, f"while true do pcall(function() {hog} end) end", "s.lua")
    assert run_many(engine, [stubborn])[0][0] == 500
    assert engine.lua_memory() < 8 << 20


def test_luajit_soft_limit_keeps_the_jit_off_without_a_budget(tmp_path: Path) -> None:
    src = write_script(tmp_path, "ngx.say((jit.status()))")
    engine = LuaEngine(runtime="luajit21", max_instructions=0, lua_memory_limit=32 << 20)
    assert run_many(engine, [src]) == [(200, b"false\n")]
    free = LuaEngine(runtime="luajit21", max_instructions=0, lua_memory_limit=0)
    assert run_many(free, [src]) == [(200, b"true\n")]


# -- sandbox -------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", sorted({DEFAULT_RUNTIME, "lua54", "luajit21", "lua51"}))
def test_sandbox_removes_and_confines(tmp_path: Path, runtime: str) -> None:
    root = tmp_path / "www"
    lib = tmp_path / "lib"
    root.mkdir()
    lib.mkdir()
    (root / "data.txt").write_text("inside")
    (root / "helper.lua").write_text("return 'helped'")
    (lib / "mymod.lua").write_text("return { name = 'mymod' }")
    (tmp_path / "secret.lua").write_text("return 'secret'")
    (root / "escape.txt").symlink_to(tmp_path / "secret.lua")
    src = f"""
local function show(v) return tostring(v) end
ngx.say(show(os.execute), " ", show(io.popen), " ", show(debug), " ", show(os.exit))
ngx.say(io.open("{root}/data.txt"):read("*a"))
ngx.say(show(io.open("/etc/passwd")), " ", show(io.open("{root}/escape.txt")))
ngx.say(dofile("{root}/helper.lua"), " ", show(loadfile("{tmp_path}/secret.lua")))
ngx.say(pcall(dofile, "{tmp_path}/secret.lua"))
ngx.say(require("mymod").name)
ngx.say((pcall(function() package.path = "{tmp_path}/?.lua;" .. package.path end)),
        " ", (pcall(require, "secret")))
ngx.say(show(string.dump))
ngx.say(show(os.remove("{tmp_path}/secret.lua")))
"""
    path = write_script(root, src, "t.lua")
    engine = LuaEngine(
        runtime=runtime, root=str(root), sandbox=True, lua_package_path=f"{lib}/?.lua;;"
    )
    status, body = run_many(engine, [path])[0]
    lines = body.decode().splitlines()
    assert status == 200, body
    assert lines[0] == "nil nil nil nil"
    assert lines[1] == "inside"
    assert lines[2] == "nil nil"
    assert lines[3] == "helped nil"
    assert lines[4].startswith("false") and "outside the sandbox" in lines[4]
    assert lines[5] == "mymod"
    assert lines[6] == "false false"
    assert lines[7] == "nil"
    assert lines[8] == "nil"
    assert (tmp_path / "secret.lua").exists()


def test_sandbox_keeps_the_api_working(tmp_path: Path) -> None:
    src = """
ngx.req.read_body()
local f = io.open(ngx.req.get_body_file(), "rb")
ngx.say(#f:read("*a"))
local ok, err = pcall(error, "boom")
ngx.say(err)
"""
    engine = LuaEngine(runtime="lua54", root=str(tmp_path), sandbox=True)
    sink = MemorySink()
    path = write_script(tmp_path, src)
    request = FakeRequest(path, make_params(), b"b" * 100_000, body_buffer_size=1024)
    asyncio.run(engine.run(request, sink))
    assert parse(sink.chunks).body == b"100000\nboom\n"


def test_sandbox_error_page_still_has_a_traceback(tmp_path: Path) -> None:
    engine = LuaEngine(runtime="lua54", root=str(tmp_path), sandbox=True, debug=True)
    status, body = run_many(engine, [write_script(tmp_path, "local x = nil\nreturn x.y")])[0]
    assert status == 500
    assert b"stack traceback" in body


# -- isolation ---------------------------------------------------------------------------


@pytest.mark.parametrize("sandbox", [False, True])
def test_a_request_cannot_read_another_requests_data(tmp_path: Path, sandbox: bool) -> None:
    owner = """
secret_global = "s3cret"
ngx.ctx.secret = "s3cret"
ngx.req.read_body()
ngx.sleep(0.1)
ngx.say(secret_global, " ", ngx.ctx.secret, " ", ngx.req.get_body_data())
"""
    snoop = """
ngx.sleep(0.02)
local found = {}
local function look(v) if v ~= nil then found[#found + 1] = tostring(v) end end
look(secret_global)
look(rawget(_G, "secret_global"))
look(ngx.ctx.secret)
ngx.req.read_body()
look(ngx.req.get_body_data())
local shared = getmetatable(_G) and getmetatable(_G).__index
if type(shared) == "table" then look(rawget(shared, "secret_global")) end
ngx.say("found:", table.concat(found, ","))
"""
    engine = LuaEngine(runtime="lua54", root=str(tmp_path), sandbox=sandbox)
    owner_path = write_script(tmp_path, owner, "owner.lua")
    snoop_path = write_script(tmp_path, snoop, "snoop.lua")

    async def main() -> list[bytes]:
        sinks = [MemorySink(), MemorySink()]
        await asyncio.gather(
            engine.run(FakeRequest(owner_path, make_params(), b"private body"), sinks[0]),
            engine.run(FakeRequest(snoop_path, make_params()), sinks[1]),
        )
        return [parse(s.chunks).body for s in sinks]

    assert asyncio.run(main()) == [b"s3cret s3cret private body\n", b"found:\n"]


# -- configuration and allowed_clients -------------------------------------------------------


def test_config_keys(tmp_path: Path) -> None:
    config = load(
        None,
        {
            "root": str(tmp_path),
            "max_instructions": 5000,
            "request_timeout": 2,
            "lua_memory_limit": "64m",
            "lua_runtime": "lua54",
            "sandbox": True,
            "allowed_clients": ["10.0.0.0/8", "::1"],
            "socket_owner": "root",
            "socket_group": "0",
        },
    )
    assert config.lua_memory_limit == 64 << 20
    assert config.request_timeout == 2.0
    with pytest.raises(ConfigError, match="allowed_clients"):
        load(None, {"root": str(tmp_path), "allowed_clients": ["nonsense"]})
    with pytest.raises(ConfigError, match="lua_memory_limit"):
        load(None, {"root": str(tmp_path), "lua_memory_limit": "1k"})
    luajit = load(
        None, {"root": str(tmp_path), "lua_memory_limit": "64m", "lua_runtime": "luajit21"}
    )
    assert luajit.lua_memory_limit == 64 << 20  # the soft limit
    with pytest.raises(ConfigError, match="worker_memory_limit: must be 0 or more than"):
        load(None, {"root": str(tmp_path), "lua_memory_limit": "64m", "worker_memory_limit": "32m"})
    assert load(None, {"root": str(tmp_path), "worker_memory_limit": 0}).worker_memory_limit == 0
    with pytest.raises(ConfigError, match="max_instructions"):
        load(None, {"root": str(tmp_path), "max_instructions": -1})


def test_client_filter() -> None:
    clients = ClientFilter(["127.0.0.1", "10.1.0.0/16", "2001:db8::/32"])
    assert clients.allows("127.0.0.1")
    assert clients.allows("10.1.200.3")
    assert clients.allows("::ffff:10.1.0.9")  # IPv4-mapped on a dual-stack socket
    assert clients.allows("2001:db8::1")
    assert not clients.allows("10.2.0.1")
    assert not clients.allows("::1")
    assert not clients.allows("garbage")
    assert not ClientFilter([])


def test_path_confinement(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    os.symlink("/etc", tmp_path / "root" / "etc")
    confined = PathConfinement([str(tmp_path / "root") + "/"])
    assert confined(str(tmp_path / "root" / "a.lua").encode())
    assert not confined(str(tmp_path / "root" / ".." / "x").encode())
    assert not confined(str(tmp_path / "root" / "etc" / "passwd").encode())
    assert not confined(b"/etc/passwd")
    assert package_dirs("/srv/lib/?.lua;/srv/lib/?/init.lua;./?.lua;;") == ["/srv/lib/"]
