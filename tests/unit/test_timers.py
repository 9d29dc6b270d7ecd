"""ngx.timer.at / every in-process: callbacks run after the response in a
context with no request, get premature = true at shutdown, are bounded by
the pending and running limits, may use cosockets and light threads, and
their errors are logged without harming the worker."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from fcgi_lua.lua import LuaEngine
from tests.helpers.lua import (
    FakeRequest,
    MemorySink,
    Response,
    engine_with_probe,
    items,
    make_params,
    parse,
    write_script,
)


async def serve(engine: LuaEngine, tmp_path: Path, source: str) -> Response:
    sink = MemorySink()
    await engine.run(FakeRequest(write_script(tmp_path, source), make_params()), sink)
    return parse(sink.chunks)


def run(engine: LuaEngine, tmp_path: Path, source: str, then: float = 0.05) -> Response:
    async def main() -> Response:
        resp = await serve(engine, tmp_path, source)
        await asyncio.sleep(then)
        return resp

    return asyncio.run(main())


def test_a_timer_runs_after_the_response_without_a_request(tmp_path: Path) -> None:
    engine, probe = engine_with_probe()
    source = """
    local probe = package.loaded.probe
    local ok, err = ngx.timer.at(0.01, function(premature, a, b)
        probe[#probe + 1] = "fired " .. tostring(premature) .. " " .. a .. " " .. tostring(b)
        probe[#probe + 1] = ngx.get_phase()
        probe[#probe + 1] = select(2, pcall(ngx.say, "x"))
        probe[#probe + 1] = select(2, pcall(function() return ngx.var.uri end))
        ngx.ctx.n = 1
        probe[#probe + 1] = ngx.ctx.n
        ngx.sleep(0.001)
        probe[#probe + 1] = "slept"
        ngx.exit(0)
        probe[#probe + 1] = "never"
    end, "a", nil)
    ngx.say(ok, err)
    probe[#probe + 1] = "request"
    """
    resp = run(engine, tmp_path, source)
    assert resp.body == b"1nil\n"
    got = items(probe)
    assert got[:3] == [b"request", b"fired false a nil", b"timer"]
    assert got[3].endswith(b"API disabled in the context of ngx.timer")
    assert got[4].endswith(b"API disabled in the context of ngx.timer")
    assert got[5:] == [1, b"slept"]


def test_every_repeats_and_the_counts(tmp_path: Path) -> None:
    engine, probe = engine_with_probe()
    source = """
    local probe = package.loaded.probe
    ngx.timer.every(0.01, function(premature)
        probe[#probe + 1] = ngx.timer.running_count()
    end)
    ngx.timer.at(10, function() end)
    ngx.say(ngx.timer.pending_count(), " ", ngx.timer.running_count())
    """
    resp = run(engine, tmp_path, source, then=0.1)
    assert resp.body == b"2 0\n"
    assert len(probe) >= 3
    assert set(items(probe)) == {1}


def test_argument_errors(tmp_path: Path) -> None:
    engine, _ = engine_with_probe()
    source = """
    local function try(...) ngx.say((select(2, pcall(...)):gsub("^.-:%d+: ", ""))) end
    try(ngx.timer.at, 1)
    try(ngx.timer.at, "x", print)
    try(ngx.timer.at, 1, print)
    try(ngx.timer.at, 1, 2)
    try(ngx.timer.every, 0, function() end)
    try(ngx.timer.every, 0.0001, function() end)
    """
    resp = run(engine, tmp_path, source)
    assert resp.body.decode().splitlines() == [
        "expecting at least 2 arguments but got 1",
        "bad argument #1 to 'at' (number expected, got string)",
        "bad argument #2 to 'at' (Lua function expected)",
        "bad argument #2 to 'at' (Lua function expected)",
        "delay cannot be zero",
        "delay cannot be zero",
    ]


def test_too_many_pending_timers(tmp_path: Path) -> None:
    engine, _ = engine_with_probe(max_pending_timers=2)
    source = """
    for i = 1, 3 do ngx.say(ngx.timer.at(0.01, function() end)) end
    """
    assert run(engine, tmp_path, source).body == b"1\n1\nniltoo many pending timers\n"


def test_too_many_running_timers_drops_the_callback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine, probe = engine_with_probe(max_running_timers=1)
    source = """
    local probe = package.loaded.probe
    ngx.timer.at(0, function() ngx.sleep(0.05) probe[#probe + 1] = "first" end)
    ngx.timer.at(0.01, function() probe[#probe + 1] = "second" end)
    """
    with caplog.at_level(logging.CRITICAL, "fcgi_lua.lua"):
        run(engine, tmp_path, source, then=0.1)
    assert items(probe) == [b"first"]
    assert any(
        "1 lua_max_running_timers are not enough" in r.getMessage()
        and "function defined at @" in r.getMessage()
        for r in caplog.records
    )


def test_300_timers_expiring_in_one_tick_all_run(tmp_path: Path) -> None:
    # OpenResty runs all 300 (measured: content_by_lua, nginx 1.22 +
    # libnginx-mod-http-lua): none of them waits, so none counts against
    # lua_max_running_timers when the next one starts
    engine, probe = engine_with_probe()
    source = """
    local probe = package.loaded.probe
    local function f() probe.n = (probe.n or 0) + 1 end
    local accepted = 0
    for i = 1, 300 do if ngx.timer.at(0, f) then accepted = accepted + 1 end end
    ngx.say(accepted)
    """
    assert run(engine, tmp_path, source).body == b"300\n"
    assert probe.n == 300


def test_the_running_limit_counts_timers_that_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # OpenResty, 300 zero-delay timers that sleep: 256 start, 44 alerts
    # "256 lua_max_running_timers are not enough"; with a limit of 2 here,
    # two waiting timers fill it, and one that never waits still runs
    engine, probe = engine_with_probe(max_running_timers=2)
    source = """
    local probe = package.loaded.probe
    local function count(name) probe[name] = (probe[name] or 0) + 1 end
    for i = 1, 3 do ngx.timer.at(0, function() count("quick") end) end
    for i = 1, 3 do ngx.timer.at(0, function() count("slow") ngx.sleep(0.02) end) end
    """
    with caplog.at_level(logging.CRITICAL, "fcgi_lua.lua"):
        run(engine, tmp_path, source, then=0.1)
    assert (probe.quick, probe.slow) == (3, 2)
    dropped = [r for r in caplog.records if "lua_max_running_timers" in r.getMessage()]
    assert len(dropped) == 1


def test_shutdown_runs_every_pending_timer(tmp_path: Path) -> None:
    # OpenResty, at worker exit: 300 pending timers that do not wait all
    # run with premature = true
    engine, probe = engine_with_probe()
    source = """
    local probe = package.loaded.probe
    for i = 1, 300 do
        ngx.timer.at(60, function(premature)
            if premature then probe.n = (probe.n or 0) + 1 end
        end)
    end
    """

    async def main() -> None:
        await serve(engine, tmp_path, source)
        await engine.shutdown(1.0)

    asyncio.run(main())
    assert probe.n == 300


def test_premature_at_shutdown(tmp_path: Path) -> None:
    engine, probe = engine_with_probe()
    source = """
    local probe = package.loaded.probe
    ngx.timer.at(60, function(premature)
        probe[#probe + 1] = "premature " .. tostring(premature)
        probe[#probe + 1] = tostring(ngx.worker.exiting())
        probe[#probe + 1] = select(2, ngx.timer.at(1, function() end))
        ngx.sleep(0.01)
        probe[#probe + 1] = "done"
    end)
    ngx.timer.every(60, function(premature) probe[#probe + 1] = "every " .. tostring(premature) end)
    """

    async def main() -> None:
        await serve(engine, tmp_path, source)
        assert engine.timers.pending
        await engine.shutdown(1.0)
        assert not engine.timers.pending and not engine.timers.tasks

    asyncio.run(main())
    assert sorted(items(probe)) == sorted(
        [b"premature true", b"true", b"process exiting", b"every true", b"done"]
    )


def test_shutdown_cancels_timers_that_run_too_long(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine, _ = engine_with_probe()

    async def main() -> None:
        await serve(engine, tmp_path, "ngx.timer.at(0, function() ngx.sleep(60) end)")
        await asyncio.sleep(0.01)
        assert engine.timers.running == 1
        await engine.shutdown(0.05)
        assert engine.timers.running == 0

    with caplog.at_level(logging.WARNING, "fcgi_lua.lua"):
        asyncio.run(main())
    assert any("cancelled 1 timer(s)" in r.getMessage() for r in caplog.records)


def test_an_error_in_a_timer_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine, probe = engine_with_probe()
    source = """
    ngx.timer.at(0, function() error("timer boom") end)
    ngx.timer.at(0.01, function() package.loaded.probe[1] = "still fine" end)
    """
    with caplog.at_level(logging.ERROR, "fcgi_lua.lua"):
        run(engine, tmp_path, source)
    assert items(probe) == [b"still fine"]
    [record] = [r for r in caplog.records if "timer boom" in r.getMessage()]
    assert record.getMessage().startswith("lua entry thread aborted: runtime error: ")
    assert record.getMessage().endswith(", context: ngx.timer")


def test_light_threads_and_cosockets_in_a_timer(tmp_path: Path) -> None:
    engine, probe = engine_with_probe()

    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        source = f"""
        ngx.timer.at(0, function()
            local probe = package.loaded.probe
            local t = ngx.thread.spawn(function()
                local sock = ngx.socket.tcp()
                assert(sock:connect("127.0.0.1", {port}))
                sock:send("ping\\n")
                return sock:receive()
            end)
            probe[1] = select(2, ngx.thread.wait(t))
        end)
        """
        await serve(engine, tmp_path, source)
        await asyncio.sleep(0.1)
        server.close()

    asyncio.run(main())
    assert items(probe) == [b"ping"]
