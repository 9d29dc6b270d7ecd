"""init_script and init_worker_script (OpenResty's init_by_lua_file and
init_worker_by_lua_file) at the engine level: what requests inherit from
them, what each phase allows and refuses (with OpenResty's messages), the
timers init_worker_script starts, errors naming the file and line, and the
config keys and CLI around them."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fcgi_lua import worker
from fcgi_lua.config import ConfigError, load
from fcgi_lua.lua import RUNTIMES, LuaEngine, LuaInitError
from fcgi_lua.shdict import SharedDicts, prepare
from tests.helpers.lua import FakeRequest, MemorySink, Response, make_params, parse

INIT_WORKER_DISABLED = "API disabled in the context of init_worker_by_lua*"


def lua_file(tmp_path: Path, name: str, source: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return str(path)


async def serve(engine: LuaEngine, script: str) -> Response:
    sink = MemorySink()
    await engine.run(FakeRequest(script, make_params()), sink)
    return parse(sink.chunks)


def body_lines(resp: Response) -> list[str]:
    assert resp.status == 200, resp.body
    return resp.body.decode().splitlines()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SharedDicts]:
    path = str(tmp_path / "shdict")
    prepare(path, {"state": 1 << 20})
    opened = SharedDicts(path, {"state": 1 << 20})
    yield opened
    opened.close()


# -- what requests inherit ------------------------------------------------------


def test_init_globals_and_modules_are_shared_request_globals_are_not(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lua_file(lib, "shared_data.lua", "return { hits = 0, words = { 'a', 'b' } }\n")
    init = lua_file(
        tmp_path,
        "init.lua",
        """
        data = require "shared_data"   -- a global, and a module loaded once
        INIT_PHASE = ngx.get_phase()
        local hidden = "a local of the init script"
        """,
    )
    script = lua_file(
        tmp_path,
        "www/t.lua",
        """
        local data2 = require "shared_data"
        data.hits = data.hits + 1          -- a shared table: changed for all
        ngx.say(INIT_PHASE, " ", tostring(data == data2), " ", #data.words, " ", data.hits)
        ngx.say(tostring(leaked), " ", tostring(hidden), " ", tostring(_G.data == data))
        leaked = "set by a request"        -- this request's own global
        INIT_PHASE = "overwritten by a request"
        """,
    )
    engine = LuaEngine(lua_package_path=f"{lib}/?.lua;;")
    engine.run_init_script(init)

    async def main() -> list[list[str]]:
        return [body_lines(await serve(engine, script)) for _ in range(3)]

    first, second, third = asyncio.run(main())
    assert first == ["init true 2 1", "nil nil true"]
    # the shared table changed, the globals the requests assigned did not leak
    assert second == ["init true 2 2", "nil nil true"]
    assert third == ["init true 2 3", "nil nil true"]
    shared = engine._lua.globals()
    assert shared.INIT_PHASE == b"init" and shared.leaked is None


def test_init_worker_globals_are_shared_too(tmp_path: Path) -> None:
    init = lua_file(tmp_path, "init.lua", "list = { 'init' }\n")
    init_worker = lua_file(
        tmp_path,
        "init_worker.lua",
        "list[#list + 1] = 'init_worker'\nWORKER = ngx.worker.id() .. '/' .. ngx.worker.count()\n",
    )
    script = lua_file(tmp_path, "t.lua", "ngx.say(table.concat(list, ','), ' ', WORKER)\n")

    async def main() -> list[str]:
        engine = LuaEngine(worker_id=2, worker_count=3)
        engine.run_init_script(init)
        assert engine.run_init_worker_script(init_worker)
        return body_lines(await serve(engine, script))

    assert asyncio.run(main()) == ["init,init_worker 2/3"]


def test_a_shebang_line_is_skipped_and_lines_hold(tmp_path: Path) -> None:
    init = lua_file(tmp_path, "init.lua", "#!/usr/bin/env lua\nlocal x = nil\nx.y = 1\n")
    with pytest.raises(LuaInitError, match=r"init\.lua:3: attempt to index"):
        LuaEngine().run_init_script(init)


# -- phases and what they allow ---------------------------------------------------

PROBES = """
local results = {}
local function try(name, fn, ...)
    local ok, err = pcall(fn, ...)
    results[#results + 1] = name .. "=" .. (ok and "ok" or tostring(err))
end
try("say", ngx.say, "x")
try("sleep", ngx.sleep, 0.01)
try("tcp", ngx.socket.tcp)
try("udp", ngx.socket.udp)
try("headers", ngx.req.get_headers)
try("var", function() return ngx.var.uri end)
try("status", function() ngx.status = 201 end)
try("header", function() ngx.header["X-A"] = "1" end)
try("read_body", ngx.req.read_body)
try("flush", ngx.flush)
try("exit", ngx.exit, 200)
try("spawn", ngx.thread.spawn, function() end)
try("on_abort", ngx.on_abort, function() end)
try("timer", ngx.timer.at, 10, function() end)
try("count", ngx.timer.pending_count)
local sema = require("ngx.semaphore").new(1)
local waited, a, b = pcall(sema.wait, sema, 0)
results[#results + 1] = "wait=" .. (waited and tostring(a) .. "," .. tostring(b) or tostring(a))
try("log", ngx.log, ngx.NOTICE, "logged from ", ngx.get_phase())
try("md5", ngx.md5, "x")
try("re", ngx.re.match, "abc", "b")
results[#results + 1] = "phase=" .. ngx.get_phase()
results[#results + 1] = "worker=" .. ngx.worker.id() .. "/" .. ngx.worker.count()
results[#results + 1] = "now=" .. tostring(ngx.now() > 1e9)
RESULTS = RESULTS or {}
RESULTS[ngx.get_phase()] = results
"""


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_what_each_phase_allows_with_openresty_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, runtime: str
) -> None:
    probes = lua_file(tmp_path, "probes.lua", PROBES)

    async def main() -> dict[str, list[str]]:
        engine = LuaEngine(runtime=runtime)
        engine.run_init_script(probes)
        assert engine.run_init_worker_script(probes)
        results = engine._lua.globals().RESULTS
        return {
            phase.decode(): [v.decode() for v in results[phase].values()]
            for phase in (b"init", b"init_worker")
        }

    with caplog.at_level(logging.INFO):
        got = asyncio.run(main())
    # OpenResty's init_by_lua* has no request at all: "no request found"
    # (ngx.timer.at: "no request"); the messages carry the caller's line.
    refused_in_init = ["say", "sleep", "tcp", "udp", "headers", "var", "status", "header"]
    refused_in_init += ["read_body", "flush", "exit"]
    refused_in_init += ["spawn", "on_abort"]
    init = dict(item.split("=", 1) for item in got["init"])
    for name in refused_in_init:
        assert init[name].endswith("no request found"), (name, init[name])
    assert init["timer"].endswith("no request") and init["count"].endswith("no request")
    assert init["wait"].endswith("no request found")
    # init_worker_by_lua* runs in a fake request that refuses to wait
    worker = dict(item.split("=", 1) for item in got["init_worker"])
    for name in refused_in_init:
        assert worker[name].endswith(INIT_WORKER_DISABLED), (name, worker[name])
    assert worker["timer"] == "ok" and worker["count"] == "ok"
    assert worker["wait"] == f"nil,{INIT_WORKER_DISABLED}"
    for phase, results in (("init", init), ("init_worker", worker)):
        assert results["log"] == "ok" and results["md5"] == "ok" and results["re"] == "ok"
        assert results["phase"] == phase
        assert results["worker"] == "0/1"
        assert results["now"] == "true"
    logged = [r.getMessage() for r in caplog.records]
    assert any("logged from init" in m for m in logged), logged
    assert any("logged from init_worker" in m for m in logged), logged


def test_a_refusal_names_the_callers_line(tmp_path: Path) -> None:
    init = lua_file(tmp_path, "init.lua", "local x = 1\nngx.say('x')\n")
    with pytest.raises(LuaInitError, match=r"init\.lua:2: no request found"):
        LuaEngine().run_init_script(init)


def test_get_phase_in_every_context(tmp_path: Path) -> None:
    init = lua_file(tmp_path, "init.lua", "phases = { ngx.get_phase() }\n")
    init_worker = lua_file(
        tmp_path,
        "init_worker.lua",
        """
        phases[#phases + 1] = ngx.get_phase()
        ngx.timer.at(0, function() phases[#phases + 1] = ngx.get_phase() end)
        """,
    )
    script = lua_file(tmp_path, "t.lua", "ngx.say(table.concat(phases, ' '), ' ', ngx.get_phase())")

    async def main() -> list[str]:
        engine = LuaEngine()
        engine.run_init_script(init)
        engine.run_init_worker_script(init_worker)
        await asyncio.sleep(0.02)
        return body_lines(await serve(engine, script))

    assert asyncio.run(main()) == ["init init_worker timer content"]


# -- timers started by init_worker_script ---------------------------------------------


def test_init_worker_timers_may_sleep_use_cosockets_and_shared_dicts(
    tmp_path: Path, store: SharedDicts
) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        writer.write(b"echo " + line)
        await writer.drain()
        writer.close()

    init_worker_source = """
    local port = {port}
    local state = ngx.shared.state
    local function poll(premature)
        if premature then return end
        ngx.sleep(0.01)
        local sock = ngx.socket.tcp()
        local ok, err = sock:connect("127.0.0.1", port)
        if not ok then
            state:set("error", err)
            return
        end
        sock:send("ping from worker " .. ngx.worker.id() .. "\\n")
        state:set("reply", (sock:receive()))
        sock:close()
        state:incr("runs", 1, 0)
    end
    assert(ngx.timer.at(0, poll))
    assert(ngx.timer.every(0.01, function() state:incr("ticks", 1, 0) end))
    """
    script = lua_file(
        tmp_path,
        "t.lua",
        """
        local state = ngx.shared.state
        ngx.say(state:get("reply"), "|", state:get("runs"), "|", tostring(state:get("error")))
        ngx.say(state:get("ticks") >= 2)
        """,
    )

    async def main() -> list[str]:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        init_worker = lua_file(
            tmp_path, "init_worker.lua", init_worker_source.replace("{port}", str(port))
        )
        engine = LuaEngine(shared_dicts=store)
        assert engine.run_init_worker_script(init_worker)
        try:
            done = "(ngx.shared.state:get('runs') and (ngx.shared.state:get('ticks') or 0) >= 2)"
            for _ in range(200):
                await asyncio.sleep(0.01)
                if engine._lua.eval(done):
                    break
            return body_lines(await serve(engine, script))
        finally:
            await engine.shutdown(1.0)
            server.close()
            await server.wait_closed()

    assert asyncio.run(main()) == ["echo ping from worker 0|1|nil", "true"]


# -- errors ---------------------------------------------------------------------------


def test_init_runtime_error_names_file_line_and_traceback(tmp_path: Path) -> None:
    init = lua_file(
        tmp_path,
        "init.lua",
        "local function build()\n    local t = nil\n    return t.x\nend\nbuild()\n",
    )
    with pytest.raises(LuaInitError) as info:
        LuaEngine().run_init_script(init)
    message = str(info.value)
    assert message.startswith(f"init_script error: {init}:3: attempt to index")
    assert "stack traceback:" in message and f"{init}:5: in main chunk" in message
    assert "xpcall" not in message and "ngx.lua" not in message


def test_init_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    init = lua_file(tmp_path, "init.lua", "local a = 1\nlocal = 2\n")
    with pytest.raises(LuaInitError, match=rf"^init_script error: {init}:2: .*near '='"):
        LuaEngine().run_init_script(init)


def test_init_error_with_a_long_path_keeps_the_whole_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    init = lua_file(deep, "init.lua", "error('boom')\n")
    with pytest.raises(LuaInitError, match=rf"^init_script error: {init}:1: boom"):
        LuaEngine().run_init_script(init)


def test_init_error_object_that_is_not_a_string(tmp_path: Path) -> None:
    init = lua_file(tmp_path, "init.lua", "error({ code = 1 })\n")
    with pytest.raises(LuaInitError, match=r"^init_script error: table: "):
        LuaEngine().run_init_script(init)


def test_unreadable_init_script(tmp_path: Path) -> None:
    with pytest.raises(LuaInitError, match=r"init_script error: cannot open .*nope\.lua"):
        LuaEngine().run_init_script(str(tmp_path / "nope.lua"))


def test_init_worker_error_is_logged_and_the_worker_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    init_worker = lua_file(
        tmp_path,
        "init_worker.lua",
        "STARTED = ngx.timer.at(0, function() TIMER_RAN = true end)\nlocal x = nil\nx()\n",
    )
    script = lua_file(tmp_path, "t.lua", "ngx.say(STARTED, ' ', tostring(TIMER_RAN))\n")

    async def main() -> tuple[bool, list[str]]:
        engine = LuaEngine()
        ran = engine.run_init_worker_script(init_worker)
        await asyncio.sleep(0.02)
        return ran, body_lines(await serve(engine, script))

    ran, lines = asyncio.run(main())
    assert not ran
    assert lines == ["1 true"]  # the timer it started before the error runs
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].startswith(f"init_worker_script error: {init_worker}:3: ")


def test_a_failed_init_leaves_no_phase_behind(tmp_path: Path) -> None:
    init = lua_file(tmp_path, "init.lua", "error('boom')\n")
    script = lua_file(tmp_path, "t.lua", "ngx.say(ngx.get_phase())\n")
    engine = LuaEngine()
    with pytest.raises(LuaInitError):
        engine.run_init_script(init)
    assert body_lines(asyncio.run(serve(engine, script))) == ["content"]


# -- limits and sandbox ---------------------------------------------------------------


def test_init_is_not_under_the_instruction_budget(tmp_path: Path) -> None:
    loop = "local n = 0\nfor i = 1, 200000 do n = n + i end\nN = n\n"
    init = lua_file(tmp_path, "init.lua", loop)
    script = lua_file(tmp_path, "t.lua", "ngx.say(N)\n")
    engine = LuaEngine(max_instructions=10_000)
    engine.run_init_script(init)
    assert body_lines(asyncio.run(serve(engine, script))) == [str(200000 * 200001 // 2)]


def test_init_runs_sandboxed_with_the_sandbox(tmp_path: Path) -> None:
    root = tmp_path / "www"
    init = lua_file(tmp_path, "init.lua", "EXECUTE = tostring(os.execute)\n")
    script = lua_file(root, "t.lua", "ngx.say(EXECUTE)\n")
    engine = LuaEngine(sandbox=True, root=str(root))
    engine.run_init_script(init)
    assert body_lines(asyncio.run(serve(engine, script))) == ["nil"]


# -- config and command line ----------------------------------------------------------


def test_config_keys_must_name_readable_files(tmp_path: Path) -> None:
    good = lua_file(tmp_path, "init.lua", "x = 1\n")
    config = load(None, {"root": str(tmp_path), "init_script": good, "init_worker_script": good})
    assert config.init_script == good and config.init_worker_script == good
    assert load(None, {"root": str(tmp_path)}).init_script == ""
    for key in ("init_script", "init_worker_script"):
        with pytest.raises(ConfigError, match=rf"{key}: is not a file"):
            load(None, {"root": str(tmp_path), key: str(tmp_path / "missing.lua")})
        with pytest.raises(ConfigError, match=rf"{key}: is not a file"):
            load(None, {"root": str(tmp_path), key: str(tmp_path)})


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_config_refuses_an_unreadable_init_script(tmp_path: Path) -> None:
    path = Path(lua_file(tmp_path, "init.lua", "x = 1\n"))
    path.chmod(0)
    with pytest.raises(ConfigError, match=r"init_script: is not readable"):
        load(None, {"root": str(tmp_path), "init_script": str(path)})


def test_make_engine_runs_both_scripts(tmp_path: Path) -> None:
    init = lua_file(tmp_path, "init.lua", "ORDER = { 'init' }\n")
    init_worker = lua_file(tmp_path, "init_worker.lua", "ORDER[#ORDER + 1] = 'init_worker'\n")
    config = load(
        None, {"root": str(tmp_path), "init_script": init, "init_worker_script": init_worker}
    )

    async def main() -> Any:
        engine = worker.make_engine(config)
        return list(engine._lua.globals().ORDER.values())

    assert asyncio.run(main()) == [b"init", b"init_worker"]


def test_run_with_a_broken_init_script_exits_1(tmp_path: Path) -> None:
    # a process of its own: the command line sets up the package's logging
    init = lua_file(tmp_path, "init.lua", "local t\nt.x = 1\n")
    script = lua_file(tmp_path, "t.lua", "ngx.say('never')\n")
    result = subprocess.run(
        [sys.executable, "-m", "fcgi_lua", "run", script, "-o", f"init_script={init}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "never" not in result.stdout
    assert f"init_script error: {init}:2: attempt to index" in result.stderr
