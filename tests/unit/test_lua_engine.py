"""The engine: code cache, per-request globals, the resume loop, errors,
cancellation, runtimes."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fcgi_lua.http import error_page
from fcgi_lua.lua import DEFAULT_RUNTIME, RUNTIMES, LuaEngine, UnknownRuntimeError
from tests.helpers.lua import (
    FakeRequest,
    MemorySink,
    make_params,
    parse,
    run_script,
    write_script,
)


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_every_runtime_runs_the_api(tmp_path: Path, runtime: str) -> None:
    src = """
local t = {}
t[#t + 1] = ngx.var.arg_a
ngx.sleep(0)
local co = coroutine.wrap(function() ngx.sleep(0); coroutine.yield("y"); return "z" end)
t[#t + 1] = co()
t[#t + 1] = co()
local ok = pcall(function() ngx.sleep(0) end)
ngx.header["X-Ok"] = tostring(ok)
ngx.say(table.concat(t, ","), " ", 1.0, " ", ngx.md5("x"))
"""
    res = run_script(tmp_path, src, runtime=runtime, params=make_params(query=b"a=1"))
    assert res.status == 200
    assert res.body == b"1,y,z 1 9dd4e461268c8034f5c8564e155c67a6\n"
    # PUC Lua 5.1 cannot yield across pcall
    assert res.header(b"X-Ok") == (b"false" if runtime == "lua51" else b"true")


def test_default_runtime_is_known() -> None:
    assert DEFAULT_RUNTIME in RUNTIMES


def test_unknown_runtime() -> None:
    with pytest.raises(UnknownRuntimeError, match="lua99"):
        LuaEngine(runtime="lua99")


def test_python_bridge_is_not_reachable(tmp_path: Path) -> None:
    src = """
ngx.say(tostring(python), " ", tostring(package.loaded.python))
local ok = pcall(function() return ngx.md5.__globals__ end)
ngx.say(ok)
"""
    res = run_script(tmp_path, src)
    assert res.body == b"nil nil\nfalse\n"


def test_globals_are_per_request(tmp_path: Path) -> None:
    engine = LuaEngine()
    src = """
local before = tostring(counter)
counter = (counter or 0) + 1
_G.viaG = true
ngx.sleep(0.01)
ngx.say(before, " ", counter, " ", tostring(rawget(_G, "viaG")), " ", type(string.format))
"""
    path = write_script(tmp_path, src)

    async def main() -> list[bytes]:
        sinks = [MemorySink() for _ in range(3)]
        await asyncio.gather(*(engine.run(FakeRequest(path, make_params()), s) for s in sinks))
        sink = MemorySink()
        await engine.run(FakeRequest(path, make_params()), sink)
        return [parse(s.chunks).body for s in [*sinks, sink]]

    bodies = asyncio.run(main())
    assert bodies == [b"nil 1 true function\n"] * 4


def test_functions_defined_by_script_see_request_globals(tmp_path: Path) -> None:
    src = """
function helper() return secret end
secret = ngx.var.arg_s
ngx.sleep(0)
ngx.say(helper())
"""
    path = write_script(tmp_path, src)
    engine = LuaEngine()

    async def main() -> list[bytes]:
        sinks = [MemorySink(), MemorySink()]
        await asyncio.gather(
            engine.run(FakeRequest(path, make_params(query=b"s=one")), sinks[0]),
            engine.run(FakeRequest(path, make_params(query=b"s=two")), sinks[1]),
        )
        return [parse(s.chunks).body for s in sinks]

    assert asyncio.run(main()) == [b"one\n", b"two\n"]


def test_params_first_read_after_a_wait_are_the_requests_own(tmp_path: Path) -> None:
    # The params reach Lua when a script first reads one, which may be in a
    # later resume (or a light thread's), after other requests have run.
    slow = write_script(tmp_path, "ngx.sleep(0.05) ngx.say(ngx.var.arg_s)", "slow.lua")
    fast = write_script(
        tmp_path,
        "local t = ngx.thread.spawn(function() ngx.sleep(0.01) return ngx.var.arg_s end)\n"
        "ngx.say(select(2, ngx.thread.wait(t)), ' ', ngx.req.get_method())",
        "fast.lua",
    )
    engine = LuaEngine()

    async def main() -> list[bytes]:
        sinks = [MemorySink(), MemorySink()]
        await asyncio.gather(
            engine.run(FakeRequest(slow, make_params(query=b"s=slow")), sinks[0]),
            engine.run(FakeRequest(fast, make_params(query=b"s=fast")), sinks[1]),
        )
        return [parse(s.chunks).body for s in sinks]

    assert asyncio.run(main()) == [b"slow\n", b"fast GET\n"]


def test_each_requests_log_lines_go_to_its_own_stderr_and_its_handle_is_let_go(
    tmp_path: Path,
) -> None:
    # The request carries its handle into Lua: a line logged after a wait,
    # while other requests ran, still reaches that request's FCGI_STDERR;
    # whatever way a request ends, the engine holds nothing of it after.
    scripts = {
        "quick": "ngx.log(ngx.ERR, 'quick ', ngx.var.arg_n) ngx.say('q')",
        "waits": "ngx.sleep(0.02) ngx.log(ngx.ERR, 'waits ', ngx.var.arg_n) ngx.say('w')",
        "threads": "local t = ngx.thread.spawn(function() ngx.sleep(0.01)"
        " ngx.log(ngx.ERR, 'thread ', ngx.var.arg_n) end) ngx.thread.wait(t) ngx.say('t')",
        "fails": "ngx.sleep(0.01) ngx.log(ngx.ERR, 'fails ', ngx.var.arg_n) error('boom')",
        "syntax": "ngx.say(",
    }
    paths = {name: write_script(tmp_path, src, f"{name}.lua") for name, src in scripts.items()}
    engine = LuaEngine(log_to_stderr=True)

    async def main() -> dict[str, MemorySink]:
        sinks = {name: MemorySink() for name in scripts}
        await asyncio.gather(
            *(
                engine.run(FakeRequest(paths[name], make_params(query=b"n=" + name.encode())), sink)
                for name, sink in sinks.items()
            )
        )
        return sinks

    sinks = asyncio.run(main())
    assert [b"".join(sinks["quick"].errors)] == [b"[error] [lua] quick.lua:1: quick quick\n"]
    assert b"waits waits\n" in b"".join(sinks["waits"].errors)
    assert b"thread threads\n" in b"".join(sinks["threads"].errors)
    assert b"fails fails\n" in b"".join(sinks["fails"].errors)
    for name, sink in sinks.items():  # no line went to another request
        others = [n for n in scripts if n != name]
        assert not any(f"{n} {n}".encode() in b"".join(sink.errors) for n in others)
    assert parse(sinks["fails"].chunks).status == 500
    assert parse(sinks["syntax"].chunks).status == 500
    assert engine.requests_held == 0


def test_sleeps_interleave(tmp_path: Path) -> None:
    engine = LuaEngine()
    order: list[str] = []
    src = """
local name = ngx.var.arg_name
ngx.log(ngx.INFO, "start ", name)
ngx.sleep(tonumber(ngx.var.arg_d))
ngx.log(ngx.INFO, "end ", name)
ngx.say(name)
"""
    path = write_script(tmp_path, src)

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            order.append(record.getMessage().split(", client: ")[0].rsplit(": ", 1)[-1])

    handler = Recorder()
    logger = logging.getLogger("fcgi_lua.lua")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:

        async def main() -> None:
            await asyncio.gather(
                engine.run(FakeRequest(path, make_params(query=b"name=a&d=0.05")), MemorySink()),
                engine.run(FakeRequest(path, make_params(query=b"name=b&d=0.01")), MemorySink()),
            )

        asyncio.run(main())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert order == ["start a", "start b", "end b", "end a"]


def test_exit_inside_pcall_is_not_caught(tmp_path: Path) -> None:
    src = """
local ok, err = pcall(ngx.exit, 404)
ngx.say("after ", tostring(ok), tostring(err))
"""
    res = run_script(tmp_path, src)
    assert res.status == 404
    assert res.body == error_page(404)


def test_exit_inside_user_coroutine_ends_request(tmp_path: Path) -> None:
    src = """
local co = coroutine.create(function() ngx.print("in"); ngx.exit(ngx.OK) end)
coroutine.resume(co)
ngx.say("not reached")
"""
    res = run_script(tmp_path, src)
    assert res.body == b"in"


def test_syntax_error_gives_500(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    res = run_script(tmp_path, "ngx.say('x')\nif x then\n")
    assert res.status == 500
    assert res.body == error_page(500)
    path = str(tmp_path / "t.lua")
    assert f"{path}:3: 'end' expected" in caplog.text


def test_runtime_error_gives_500_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    res = run_script(tmp_path, "ngx.header.x_a = 1\nlocal x = nil\nerror('boom')\n")
    assert res.status == 500
    assert res.header(b"Content-Type") == b"text/html"
    assert res.header(b"x-a") is None
    assert res.body == error_page(500)
    path = str(tmp_path / "t.lua")
    record = next(r for r in caplog.records if r.name == "fcgi_lua.lua")
    assert record.levelno == logging.ERROR
    assert f"runtime error: {path}:3: boom\nstack traceback:" in record.getMessage()


def test_runtime_error_debug_sends_traceback(tmp_path: Path) -> None:
    res = run_script(tmp_path, "local function f()\n  error('boom')\nend\nf()\n", debug=True)
    assert res.status == 500
    assert res.header(b"Content-Type") == b"text/plain"
    assert res.header(b"Content-Length") == str(len(res.body)).encode()
    path = str(tmp_path / "t.lua")
    assert res.body.startswith(f"{path}:2: boom\nstack traceback:".encode())
    assert f"{path}:4: in ".encode() in res.body


def test_error_after_print_before_flush_still_gives_500(tmp_path: Path) -> None:
    # OpenResty would close the connection with nothing sent; nothing has
    # left fcgi-lua yet, so a clean 500 is better.
    res = run_script(tmp_path, "ngx.say('partial')\nerror('boom')\n")
    assert res.status == 500
    assert b"partial" not in res.raw


def test_error_after_flush_just_ends(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    res = run_script(tmp_path, "ngx.say('a')\nngx.flush()\nngx.say('b')\nerror('boom')\n")
    assert res.status == 200
    assert res.body == b"a\n"
    assert len(res.chunks) == 1
    assert "boom" in caplog.text


def test_error_object_not_a_string(tmp_path: Path) -> None:
    res = run_script(tmp_path, "error({})", debug=True)
    assert res.status == 500
    assert res.body.startswith(b"table: ")


def test_worker_survives_errors(tmp_path: Path) -> None:
    engine = LuaEngine()
    assert run_script(tmp_path, "error('x')", engine=engine).status == 500
    assert run_script(tmp_path, "ngx.say('fine')", engine=engine).body == b"fine\n"


def test_shebang_line_is_stripped_and_lines_hold(tmp_path: Path) -> None:
    res = run_script(tmp_path, "#!/usr/bin/env lua\nerror('here')\n", debug=True)
    assert f"{tmp_path / 't.lua'}:2: here".encode() in res.body


def test_script_can_return_early(tmp_path: Path) -> None:
    res = run_script(tmp_path, "ngx.say('a')\nif true then return end\nngx.say('b')\n")
    assert res.body == b"a\n"


def test_varargs_at_top_level(tmp_path: Path) -> None:
    assert run_script(tmp_path, "ngx.say(select('#', ...))").body == b"0\n"


def _bump_mtime(path: str) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_recompile_mtime(tmp_path: Path) -> None:
    engine = LuaEngine(recompile="mtime")
    path = write_script(tmp_path, "ngx.say('one')")

    def body() -> bytes:
        sink = MemorySink()
        asyncio.run(engine.run(FakeRequest(path, make_params()), sink))
        return parse(sink.chunks).body

    assert body() == b"one\n"
    assert body() == b"one\n"
    assert engine.cache.compilations == 1
    Path(path).write_text("ngx.say('two')")
    _bump_mtime(path)
    assert body() == b"two\n"
    assert engine.cache.compilations == 2


def test_recompile_interval_spares_the_stat_until_it_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = LuaEngine(recompile="mtime", recompile_interval=60.0)
    path = write_script(tmp_path, "ngx.say('one')")
    clock = [1000.0]
    monkeypatch.setattr("fcgi_lua.lua.engine.time.monotonic", lambda: clock[0])
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if target == path:
            stats.append(target)
        return real_stat(target, *args, **kwargs)

    monkeypatch.setattr("fcgi_lua.lua.engine.os.stat", counting_stat)

    def body() -> bytes:
        sink = MemorySink()
        asyncio.run(engine.run(FakeRequest(path, make_params()), sink))
        return parse(sink.chunks).body

    assert body() == b"one\n"
    Path(path).write_text("ngx.say('two')")
    _bump_mtime(path)
    stats.clear()
    clock[0] += 59.0
    assert body() == b"one\n"  # within the interval: the cached copy, no stat
    assert stats == []
    clock[0] += 2.0
    assert body() == b"two\n"  # past it: looked at again, recompiled
    assert stats == [path]
    assert engine.cache.compilations == 2


def test_recompile_never_and_always(tmp_path: Path) -> None:
    never = LuaEngine(recompile="never")
    always = LuaEngine(recompile="always")
    path = write_script(tmp_path, "ngx.say('one')")

    def body(engine: LuaEngine) -> bytes:
        sink = MemorySink()
        asyncio.run(engine.run(FakeRequest(path, make_params()), sink))
        return parse(sink.chunks).body

    assert body(never) == body(always) == b"one\n"
    Path(path).write_text("ngx.say('two!')")
    _bump_mtime(path)
    assert body(never) == b"one\n"
    assert body(always) == b"two!\n"
    assert body(always) == b"two!\n"
    assert always.cache.compilations == 3
    assert never.cache.compilations == 1


def test_bad_recompile_mode() -> None:
    with pytest.raises(ValueError, match="recompile"):
        LuaEngine(recompile="sometimes")  # type: ignore[arg-type]


def test_missing_script_gives_500(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink()
    missing = str(tmp_path / "nope.lua")
    asyncio.run(LuaEngine().run(FakeRequest(missing, make_params()), sink))
    assert parse(sink.chunks).status == 500
    assert "cannot open" in caplog.text


def test_cancellation_drops_the_coroutine(tmp_path: Path) -> None:
    engine = LuaEngine()
    path = write_script(tmp_path, "ngx.say('a') ngx.flush() ngx.sleep(10) ngx.say('never')")
    sink = MemorySink()

    async def main() -> None:
        task = asyncio.create_task(engine.run(FakeRequest(path, make_params()), sink))
        while not sink.chunks:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert parse(sink.chunks).body == b"a\n"
    # the VM still serves
    assert run_script(tmp_path, "ngx.say('ok')", engine=engine).body == b"ok\n"


def test_write_failure_propagates_and_vm_survives(tmp_path: Path) -> None:
    class BrokenSink(MemorySink):
        async def write(self, data: bytes) -> None:
            raise ConnectionResetError("gone")

    engine = LuaEngine()
    path = write_script(tmp_path, "ngx.say('a') ngx.flush() ngx.say('b')")
    with pytest.raises(ConnectionResetError):
        asyncio.run(engine.run(FakeRequest(path, make_params()), BrokenSink()))
    assert run_script(tmp_path, "ngx.say('ok')", engine=engine).body == b"ok\n"


def test_head_request_gets_headers_only(tmp_path: Path) -> None:
    res = run_script(tmp_path, "ngx.say('hello')", params=make_params(method=b"HEAD"))
    assert res.status == 200
    assert res.body == b""
    assert res.header(b"Content-Length") == b"6"


def test_head_error_page_has_no_body(tmp_path: Path) -> None:
    res = run_script(tmp_path, "ngx.exit(404)", params=make_params(method=b"HEAD"))
    assert res.status == 404
    assert res.body == b""
    assert res.header(b"Content-Length") == str(len(error_page(404))).encode()


def test_head_flush(tmp_path: Path) -> None:
    res = run_script(
        tmp_path, "ngx.say('a') ngx.flush() ngx.say('b')", params=make_params(method=b"HEAD")
    )
    assert res.body == b""
    assert res.header(b"X-Accel-Buffering") == b"no"


def test_bare_yield_in_request_is_a_pause(tmp_path: Path) -> None:
    res = run_script(tmp_path, "coroutine.yield() ngx.say('back')")
    assert res.body == b"back\n"


def test_body_read(tmp_path: Path) -> None:
    src = """
ngx.say(tostring(ngx.req.get_body_data()))
ngx.req.read_body()
ngx.req.read_body()
ngx.say(ngx.req.get_body_data())
local args = ngx.req.get_post_args()
ngx.say(args.a, " ", args.b)
"""
    path = write_script(tmp_path, src)
    request = FakeRequest(path, make_params(method=b"POST"), b"a=1&b=x+y")
    sink = MemorySink()
    asyncio.run(LuaEngine().run(request, sink))
    assert parse(sink.chunks).body == b"nil\na=1&b=x+y\n1 x y\n"
    assert request.body_reads == 0  # all of it had come: read without a wait


def test_log_to_stderr(tmp_path: Path) -> None:
    sink = MemorySink()
    run_script(tmp_path, "ngx.log(ngx.WARN, 'careful ', 1)", sink=sink, log_to_stderr=True)
    assert sink.errors == [b"[warn] [lua] t.lua:1: careful 1\n"]


def test_ngx_outside_request_errors() -> None:
    engine = LuaEngine()
    with pytest.raises(Exception, match="no request found"):
        engine._lua.execute(b"ngx.say('x')")


def test_worker_pids_without_a_master_is_this_process(tmp_path: Path) -> None:
    src = "local p = ngx.worker.pids() ngx.say(#p, ' ', p[1] == ngx.worker.pid())"
    res = run_script(tmp_path, src)
    assert res.body == b"1 true\n"


def test_worker_pids_are_the_masters_children() -> None:
    # this test process plays the master: a worker's list holds itself and
    # its sibling, read from /proc
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        code = (
            "import os; from fcgi_lua.lua.engine import worker_pids; "
            "print(os.getpid(), *worker_pids(2))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, check=True, text=True
        ).stdout.split()
        own, pids = int(out[0]), [int(p) for p in out[1:]]
        assert own in pids
        assert sibling.pid in pids
        assert pids == sorted(pids)
    finally:
        sibling.kill()
        sibling.wait()


def test_prefix_is_the_start_directory_and_expands_in_the_package_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "html").mkdir()
    (tmp_path / "html" / "foo.lua").write_text("return {name = 'foo'}")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "bar.lua").write_text("return {name = 'bar'}")
    monkeypatch.chdir(tmp_path)
    # both spellings OpenResty expands ("$prefix/" gives "//": harmless)
    engine = LuaEngine(lua_package_path="${prefix}html/?.lua;$prefix/lib/?.lua;;")
    src = "ngx.say(ngx.config.prefix(), ' ', require('foo').name, ' ', require('bar').name)"
    res = run_script(tmp_path, src, engine=engine)
    assert res.body == f"{tmp_path}/ foo bar\n".encode()
