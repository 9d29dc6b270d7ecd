"""Light threads (ngx.thread.spawn/wait/kill) and ngx.on_abort, in-process:
ordering, results, errors isolated to their thread, ngx.exit killing every
thread, concurrency of their waits, and a client abort."""

from __future__ import annotations

import asyncio
import logging
import time
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


async def serve(engine: LuaEngine, tmp_path: Path, source: str, name: str = "t.lua") -> Response:
    sink = MemorySink()
    await engine.run(FakeRequest(write_script(tmp_path, source, name), make_params()), sink)
    return parse(sink.chunks)


SPAWN_WAIT = """
local function f(name, d)
    ngx.say("start ", name)
    ngx.sleep(d)
    ngx.say("end ", name)
    return name, d
end
local t1 = ngx.thread.spawn(f, "a", 0.04)
local t2 = ngx.thread.spawn(f, "b", 0.01)
ngx.say("spawned ", type(t1))
ngx.say(ngx.thread.wait(t1, t2))
ngx.say(ngx.thread.wait(t1))
ngx.say(ngx.thread.wait(t1))
local t3 = ngx.thread.spawn(function() return end)
ngx.say(select("#", ngx.thread.wait(t3)))
local t4 = ngx.thread.spawn(function() return 1, nil, 3 end)
ngx.say(select("#", ngx.thread.wait(t4)), " ", coroutine.status(t4))
"""


def test_spawn_runs_the_thread_first_and_wait_returns_the_first_to_end(tmp_path: Path) -> None:
    resp = run_script(tmp_path, SPAWN_WAIT)
    assert resp.status == 200
    assert resp.body == (
        b"start a\nstart b\nspawned thread\nend b\ntrueb0.01\nend a\ntruea0.04\n"
        b"nilalready waited or killed\n1\n4 dead\n"
    )


def test_an_error_in_a_light_thread_is_logged_and_the_others_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = """
    local bad = ngx.thread.spawn(function() ngx.sleep(0.01) error("boom") end)
    local good = ngx.thread.spawn(function() ngx.sleep(0.02) return "fine" end)
    ngx.say(ngx.thread.wait(bad))
    ngx.say(ngx.thread.wait(good))
    """
    with caplog.at_level(logging.ERROR, "fcgi_lua.lua"):
        resp = run_script(tmp_path, source)
    assert resp.status == 200
    # (long chunk names are shortened to "...tail", as in OpenResty)
    assert resp.body.startswith(b"false") and resp.body.endswith(b"t.lua:2: boom\ntruefine\n")
    [record] = [r for r in caplog.records if "user thread aborted" in r.getMessage()]
    assert "lua user thread aborted: runtime error: " in record.getMessage()
    assert "stack traceback" in record.getMessage()


def test_the_request_waits_for_its_light_threads(tmp_path: Path) -> None:
    source = """
    ngx.thread.spawn(function() ngx.sleep(0.02) ngx.say("late thread") end)
    ngx.say("entry done")
    """
    resp = run_script(tmp_path, source)
    assert resp.body == b"entry done\nlate thread\n"


def test_ngx_exit_in_a_light_thread_ends_every_thread(tmp_path: Path) -> None:
    source = """
    ngx.thread.spawn(function() ngx.sleep(0.01) ngx.exit(403) end)
    ngx.thread.spawn(function() ngx.sleep(0.5) ngx.say("never") end)
    ngx.sleep(0.5)
    ngx.say("never either")
    """
    began = time.monotonic()
    resp = run_script(tmp_path, source)
    assert time.monotonic() - began < 0.3
    assert resp.status == 403
    assert b"never" not in resp.body


def test_ngx_exit_in_the_entry_thread_kills_the_light_threads(tmp_path: Path) -> None:
    source = """
    ngx.thread.spawn(function() ngx.sleep(0.5) ngx.say("never") end)
    ngx.say("bye")
    ngx.exit(200)
    """
    began = time.monotonic()
    resp = run_script(tmp_path, source)
    assert time.monotonic() - began < 0.3
    assert resp.body == b"bye\n"


def test_ngx_exit_during_the_first_run_of_a_thread(tmp_path: Path) -> None:
    resp = run_script(tmp_path, 'ngx.thread.spawn(function() ngx.exit(404) end) ngx.say("no")')
    assert resp.status == 404


def test_an_entry_thread_error_kills_the_light_threads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = """
    ngx.thread.spawn(function() ngx.sleep(0.5) end)
    ngx.sleep(0.01)
    error("entry failed")
    """
    with caplog.at_level(logging.ERROR, "fcgi_lua.lua"):
        began = time.monotonic()
        resp = run_script(tmp_path, source)
    assert time.monotonic() - began < 0.3
    assert resp.status == 500
    assert any("entry failed" in r.getMessage() for r in caplog.records)


def test_waits_of_light_threads_overlap(tmp_path: Path) -> None:
    source = """
    local ts = {}
    for i = 1, 5 do ts[i] = ngx.thread.spawn(function() ngx.sleep(0.1) return i end) end
    for i = 1, 5 do ngx.print(select(2, ngx.thread.wait(ts[i]))) end
    """
    began = time.monotonic()
    resp = run_script(tmp_path, source)
    assert time.monotonic() - began < 0.3
    assert resp.body == b"12345"


def test_kill(tmp_path: Path) -> None:
    source = """
    local t = ngx.thread.spawn(function() ngx.sleep(1) ngx.say("never") end)
    ngx.say(ngx.thread.kill(t))
    ngx.say(ngx.thread.kill(t))
    ngx.say(ngx.thread.wait(t))
    local z = ngx.thread.spawn(function() return 1 end)
    ngx.say(ngx.thread.kill(z))
    ngx.say(ngx.thread.kill(coroutine.create(print)))
    local child
    local parent = ngx.thread.spawn(function()
        child = ngx.thread.spawn(function() ngx.sleep(0.01) end)
    end)
    ngx.sleep(0.001) -- parent is posted behind this thread: let it go on
    ngx.say(ngx.thread.kill(child))
    ngx.say(pcall(ngx.thread.wait, child))
    """
    began = time.monotonic()
    resp = run_script(tmp_path, source)
    assert time.monotonic() - began < 0.5
    assert resp.body.startswith(
        b"1\nnilalready waited or killed\nnilalready waited or killed\n"
        b"nilalready terminated\nnilnot user thread\nnilkiller not parent\n"
        b"false"
    )
    assert resp.body.endswith(b"falseonly the parent coroutine can wait on the thread\n")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("ngx.thread.wait()", "at least one coroutine should be specified"),
        ("ngx.thread.wait(1)", "bad argument #1 to 'wait' (lua thread expected)"),
        (
            "ngx.thread.wait(coroutine.create(print))",
            "attempt to wait on a coroutine that is not a user thread",
        ),
        ("ngx.thread.spawn(print)", "bad argument #1 to 'spawn' (Lua function expected)"),
        ("ngx.thread.kill(1)", "bad argument #1 to 'kill' (lua thread expected)"),
    ],
)
def test_argument_errors(tmp_path: Path, call: str, message: str) -> None:
    resp = run_script(tmp_path, f"ngx.say(select(2, pcall(function() {call} end)))")
    assert resp.body.decode().endswith(message + "\n"), resp.body


def test_a_thread_of_another_request(tmp_path: Path) -> None:
    engine = LuaEngine()
    engine._lua.execute(b"package.loaded.stash = {}")  # a table requests share
    first = """
    package.loaded.stash.thread = ngx.thread.spawn(function() end)
    """
    second = """
    ngx.say(select(2, pcall(ngx.thread.wait, package.loaded.stash.thread)))
    """

    async def main() -> Response:
        await serve(engine, tmp_path, first, "a.lua")
        return await serve(engine, tmp_path, second, "b.lua")

    resp = asyncio.run(main())
    assert resp.body.endswith(b"no co ctx found\n")


def test_threads_in_a_user_coroutine_and_pcall(tmp_path: Path) -> None:
    source = """
    local co = coroutine.wrap(function()
        local t = ngx.thread.spawn(function() ngx.sleep(0.01) return "inner" end)
        return select(3, pcall(ngx.thread.wait, t))
    end)
    ngx.say(co())
    """
    assert run_script(tmp_path, source).body == b"inner\n"


def test_output_of_threads_interleaves_with_flushes(tmp_path: Path) -> None:
    source = """
    local t = ngx.thread.spawn(function()
        for i = 1, 3 do ngx.say("t", i) ngx.flush() ngx.sleep(0.01) end
    end)
    ngx.thread.wait(t)
    ngx.say("end")
    """
    resp = run_script(tmp_path, source)
    assert resp.body == b"t1\nt2\nt3\nend\n"
    assert len(resp.chunks) >= 3


# -- ngx.on_abort ---------------------------------------------------------------------


ABORTABLE = """
local probe = package.loaded.abort_probe
local ok, err = ngx.on_abort(function()
    probe[#probe + 1] = "handler"
    ngx.sleep(0.01)
    probe[#probe + 1] = "cleaned"
    {exit}
end)
probe[#probe + 1] = tostring(ok)
probe[#probe + 1] = tostring(select(2, ngx.on_abort(function() end)))
ngx.sleep(0.2)
probe[#probe + 1] = "entry went on"
"""


async def _abort_midway(engine: LuaEngine, path: str) -> None:
    sink = MemorySink()
    task = asyncio.ensure_future(engine.run(FakeRequest(path, make_params()), sink))
    await asyncio.sleep(0.05)
    task.cancel()
    await task  # with a handler, the request is not cancelled


@pytest.mark.parametrize(("exit_call", "went_on"), [("", True), ("ngx.exit(499)", False)])
def test_on_abort_runs_the_handler_and_lets_it_decide(
    tmp_path: Path, exit_call: str, went_on: bool
) -> None:
    engine = LuaEngine()
    probe = engine._lua.table()
    engine._lua.globals().package.loaded[b"abort_probe"] = probe
    path = write_script(tmp_path, ABORTABLE.replace("{exit}", exit_call))
    asyncio.run(_abort_midway(engine, path))
    got = [probe[i] for i in range(1, len(probe) + 1)]
    expected = [b"1", b"duplicate call", b"handler", b"cleaned"]
    assert got == ([*expected, b"entry went on"] if went_on else expected)


def test_without_on_abort_an_abort_stops_the_request(tmp_path: Path) -> None:
    engine = LuaEngine()
    path = write_script(tmp_path, "ngx.thread.spawn(ngx.sleep, 1) ngx.sleep(1)")

    async def main() -> None:
        task = asyncio.ensure_future(engine.run(FakeRequest(path, make_params()), MemorySink()))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_on_abort_in_a_timer_is_refused(tmp_path: Path) -> None:
    engine = LuaEngine()
    probe = engine._lua.table()
    engine._lua.globals().package.loaded[b"abort_probe"] = probe
    source = """
    ngx.timer.at(0, function()
        package.loaded.abort_probe[1] = select(2, pcall(ngx.on_abort, print))
    end)
    """

    async def main() -> None:
        await serve(engine, tmp_path, source)
        await asyncio.sleep(0.02)

    asyncio.run(main())
    assert probe[1].endswith(b"API disabled in the current context")


# OpenResty's coroutine statuses and resume (lua-nginx-module t/091, t/093,
# t/098, t/127): a thread waiting on I/O is "running", one that resumed a
# coroutine still waiting is "normal", an ended thread not yet waited for a
# "zombie"; resuming a non-suspended coroutine says its status.
COROUTINE_STATUS = """
local co, co3
local function f()
    co = coroutine.running()
    ngx.sleep(0.01)
end
local function g()
    co3 = coroutine.running()
    local co2 = coroutine.create(function() ngx.sleep(0.01) end)
    coroutine.resume(co2)
end
local t1 = ngx.thread.spawn(f)
ngx.say("waiting: ", coroutine.status(co), " ", coroutine.status(t1))
local t2 = ngx.thread.spawn(function() end)
ngx.say("ended: ", coroutine.status(t2))
ngx.thread.wait(t2)
ngx.say("waited: ", coroutine.status(t2))
ngx.thread.spawn(g)
ngx.say("resumed one that waits: ", coroutine.status(co3))
ngx.say("killed: ", tostring(ngx.thread.kill(t1)), " ", coroutine.status(t1))
local t3 = ngx.thread.spawn(function() coroutine.yield() ngx.sleep(0.01) end)
ngx.say("yielded: ", coroutine.status(t3))
local c1, c2
c1 = coroutine.create(function() ngx.say(coroutine.resume(c2)) end)
c2 = coroutine.create(function()
    ngx.say(coroutine.resume(c1))
    ngx.say(coroutine.resume(coroutine.running()))
end)
ngx.say(coroutine.resume(c1))
ngx.say(select("#", coroutine.resume(coroutine.create(function() end))))
"""


def test_coroutine_status_and_resume_as_openresty_reports_them(tmp_path: Path) -> None:
    resp = run_script(tmp_path, COROUTINE_STATUS)
    assert resp.status == 200, resp.body
    assert resp.body == (
        b"waiting: running running\n"
        b"ended: zombie\n"
        b"waited: dead\n"
        b"resumed one that waits: normal\n"
        b"killed: 1 dead\n"
        b"yielded: suspended\n"
        b"falsecannot resume normal coroutine\n"
        b"falsecannot resume running coroutine\n"
        b"true\n"
        b"true\n"
        b"1\n"
    )


# lua-nginx-module's posted threads (t/093 TEST 10, 11, 17): a spawner
# goes on after the threads posted before it, not at once.
SPAWN_ORDER = """
local g
local function f()
    ngx.say("before g")
    ngx.thread.spawn(g)
    ngx.say("after g")
end
function g()
    ngx.say("hello in g()")
end
ngx.say("before f")
ngx.thread.spawn(f)
ngx.say("after f")
ngx.sleep(0.001)
local function slice(name)
    return function()
        for i = 1, 3 do
            ngx.say(name, " ", i)
            if i < 3 then coroutine.yield(coroutine.running()) end
        end
    end
end
ngx.thread.spawn(slice("f"))
ngx.thread.spawn(slice("g"))
ngx.say("done")
"""


def test_a_spawner_goes_on_after_the_threads_posted_before_it(tmp_path: Path) -> None:
    resp = run_script(tmp_path, SPAWN_ORDER)
    assert resp.status == 200, resp.body
    assert resp.body == (
        b"before f\nbefore g\nhello in g()\nafter f\nafter g\nf 1\ng 1\nf 2\ndone\ng 2\nf 3\ng 3\n"
    )


def test_resume_of_a_function_raises(tmp_path: Path) -> None:
    # t/091-coroutine.t TEST 10: coroutine.resume(f) raises, through the
    # coroutine.wrap of its caller, up to the entry thread
    src = """
local l1 = coroutine.wrap(function(cr) coroutine.resume(cr) end)
l1(coroutine.wrap(function() end))
ngx.say("hello")
"""
    resp = run_script(tmp_path, src)
    assert resp.status == 500
    assert b"hello" not in resp.body
