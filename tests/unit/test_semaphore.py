"""ngx.semaphore (lua-resty-core's API) in-process: counts, timeouts, FIFO
handoff between requests and between light threads, and resources not
lost when a waiter dies."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from tests.helpers.lua import (
    FakeRequest,
    MemorySink,
    engine_with_probe,
    items,
    make_params,
    parse,
    run_script,
    write_script,
)


def test_wait_post_count(tmp_path: Path) -> None:
    source = """
    local semaphore = require "ngx.semaphore"
    local sema = semaphore.new()
    ngx.say(sema:count(), " ", tostring(sema:wait(0)), " ", select(2, sema:wait(0)))
    ngx.say(sema:post(2), " ", sema:count())
    ngx.say(sema:wait(0), " ", sema:wait(0.1), " ", sema:count())
    local began = ngx.now()
    ngx.say(sema:wait(0.05))
    ngx.say(sema:count())
    local s3 = semaphore.new(3)
    ngx.say(s3:count(), " ", s3:wait(1))
    """
    resp = run_script(tmp_path, source)
    assert resp.body == b"0 nil timeout\ntrue 2\ntrue true 0\nfalsetimeout\n0\n3 true\n"


def test_errors(tmp_path: Path) -> None:
    source = """
    local semaphore = require "ngx.semaphore"
    local sema = semaphore.new(1)
    local function try(...) ngx.say((select(2, pcall(...)):gsub("^.-:%d+: ", ""))) end
    try(semaphore.new, -1)
    try(sema.wait, sema, -1)
    try(sema.post, sema, 0)
    try(sema.wait, {}, 1)
    try(sema.count, nil)
    """
    assert run_script(tmp_path, source).body.decode().splitlines() == [
        "no negative number",
        "no negative number",
        "positive number required",
        "not a semaphore instance",
        "not a semaphore instance",
    ]


HANDOFF = """
local sema = package.loaded.probe.sema
if not sema then
    sema = require("ngx.semaphore").new(0)
    package.loaded.probe.sema = sema
end
if ngx.var.arg_role == "wait" then
    local began = ngx.now()
    local ok, err = sema:wait(2)
    ngx.say("waited ", tostring(ok), " ", tostring(err))
else
    ngx.sleep(0.05)
    ngx.say("posted ", tostring(sema:post(1)))
end
"""


def test_handoff_between_two_requests(tmp_path: Path) -> None:
    engine, _ = engine_with_probe()
    path = write_script(tmp_path, HANDOFF)

    async def one(role: str) -> bytes:
        sink = MemorySink()
        request = FakeRequest(path, make_params(query=f"role={role}".encode()))
        await engine.run(request, sink)
        return parse(sink.chunks).body

    async def main() -> list[bytes]:
        return list(await asyncio.gather(one("wait"), one("post")))

    began = time.monotonic()
    assert asyncio.run(main()) == [b"waited true nil\n", b"posted true\n"]
    assert time.monotonic() - began < 0.5


def test_producer_and_consumers_in_light_threads(tmp_path: Path) -> None:
    source = """
    local sema = require("ngx.semaphore").new()
    local got = {}
    local function consumer(name)
        for i = 1, 2 do
            local ok, err = sema:wait(1)
            got[#got + 1] = name .. tostring(ok)
        end
    end
    local a = ngx.thread.spawn(consumer, "a")
    local b = ngx.thread.spawn(consumer, "b")
    for i = 1, 4 do ngx.sleep(0.005) sema:post() end
    ngx.thread.wait(a) ngx.thread.wait(b)
    ngx.say(table.concat(got, " "), " ", sema:count())
    """
    resp = run_script(tmp_path, source)
    assert resp.body == b"atrue btrue atrue btrue 0\n"


def test_a_killed_waiter_leaves_the_queue(tmp_path: Path) -> None:
    source = """
    local sema = require("ngx.semaphore").new()
    local t = ngx.thread.spawn(function() return sema:wait(1) end)
    ngx.say(sema:count())
    ngx.thread.kill(t)
    ngx.say(sema:count())
    sema:post()
    ngx.say(sema:count(), " ", sema:wait(0))
    """
    assert run_script(tmp_path, source).body == b"-1\n0\n1 true\n"


def test_a_resource_handed_to_a_dying_waiter_goes_back(tmp_path: Path) -> None:
    # The waiter is woken by post(), then killed before it could run: the
    # resource returns to the semaphore.
    source = """
    local sema = require("ngx.semaphore").new()
    local t = ngx.thread.spawn(function() sema:wait(1) ngx.say("never") end)
    sema:post()
    ngx.thread.kill(t)
    ngx.say(sema:count(), " ", sema:wait(0))
    """
    assert run_script(tmp_path, source).body == b"1 true\n"


def test_an_aborted_request_gives_back_what_it_was_handed(tmp_path: Path) -> None:
    engine, probe = engine_with_probe()
    waiter = write_script(tmp_path, "package.loaded.probe.sema:wait(5)", "w.lua")
    poster = write_script(
        tmp_path,
        """
        local sema = package.loaded.probe.sema
        sema:post()
        ngx.say(sema:count())
        """,
        "p.lua",
    )

    async def main() -> bytes:
        engine._lua.execute(b"package.loaded.probe.sema = require('ngx.semaphore').new()")
        task = asyncio.ensure_future(engine.run(FakeRequest(waiter, make_params()), MemorySink()))
        await asyncio.sleep(0.01)
        task.cancel()  # the client went away while it waited
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sink = MemorySink()
        await engine.run(FakeRequest(poster, make_params()), sink)
        return parse(sink.chunks).body

    assert asyncio.run(main()) == b"1\n"
    assert items(probe) == []
