"""A request runs as far as it can once the loop iteration that read it is
done with its reads: one that never waits needs no task; one that waits
gets a task, and an abort that comes before that task's first step still
reaches the script's wait."""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path

from fcgi_lua.config import load
from fcgi_lua.lua import LuaEngine
from fcgi_lua.protocol import FastCGIProtocol
from fcgi_lua.server import Server
from tests.helpers.fastcgi import BEGIN, PARAMS, STDIN, pairs, record, stream
from tests.helpers.server import FakeTransport, stdin


def request(script: Path, method: bytes = b"GET", body: bytes = b"") -> bytes:
    params = pairs(
        (
            (b"SCRIPT_FILENAME", os.fsencode(script)),
            (b"REQUEST_METHOD", method),
            (b"CONTENT_LENGTH", str(len(body)).encode() if body else b""),
        )
    )
    begin = record(BEGIN, 1, struct.pack(">HB5x", 1, 1))  # keep_conn
    return begin + stream(PARAMS, 1, params) + stdin(body) + record(STDIN, 1)


def setup(tmp_path: Path, source: str) -> tuple[FastCGIProtocol, Server, FakeTransport, Path]:
    script = tmp_path / "t.lua"
    script.write_text(source)
    engine = LuaEngine()
    server = Server(load(None, {"root": str(tmp_path)}), engine)
    protocol = FastCGIProtocol(server)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, server, transport, script


def stdout_of(transport: FakeTransport) -> bytes:
    """The STDOUT records' content, and whether END_REQUEST came."""
    data, out = b"".join(transport.out), b""
    while data:
        _, rtype, _, length, padding = struct.unpack(">BBHHB", data[:7])
        if rtype == 6:
            out += data[8 : 8 + length]
        elif rtype == 3:
            out += b"<END>"
        data = data[8 + length + padding :]
    return out


def test_a_request_that_never_waits_runs_without_a_task(tmp_path: Path) -> None:
    protocol, server, transport, script = setup(tmp_path, "ngx.say('hi')")

    async def scenario() -> None:
        protocol.data_received(request(script))
        assert server.requests_served == 0  # not before the iteration's reads are done
        await asyncio.sleep(0)  # it runs, and its corked output is queued
        # over within that one callback: no task was ever made for it
        assert server.tasks == set()
        assert server.requests_served == 1
        await asyncio.sleep(0)  # the corked output leaves in one write

    asyncio.run(scenario())
    assert len(transport.out) == 1
    assert stdout_of(transport).endswith(b"\r\n\r\nhi\n<END>")


def test_a_body_that_came_with_the_params_is_read_without_waiting(tmp_path: Path) -> None:
    source = "ngx.req.read_body() ngx.print(ngx.req.get_body_data())"
    protocol, server, transport, script = setup(tmp_path, source)

    async def scenario() -> None:
        protocol.data_received(request(script, b"POST", b"x" * 5000))
        await asyncio.sleep(0)
        assert server.tasks == set()
        assert server.requests_served == 1
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert stdout_of(transport).endswith(b"\r\n\r\n" + b"x" * 5000 + b"<END>")


def test_a_request_that_waits_gets_a_task(tmp_path: Path) -> None:
    protocol, server, transport, script = setup(tmp_path, "ngx.sleep(0.01) ngx.say('late')")

    async def scenario() -> None:
        protocol.data_received(request(script))
        await asyncio.sleep(0)
        assert len(server.tasks) == 1
        await asyncio.wait(set(server.tasks))
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert server.requests_served == 1
    assert stdout_of(transport).endswith(b"\r\n\r\nlate\n<END>")


def test_an_abort_before_the_task_ran_reaches_the_scripts_wait(tmp_path: Path) -> None:
    # The script's first resume ran (it opened its wait) in data_received;
    # the front server went away before its task's first step.
    source = "ngx.on_abort(function() ngx.log(ngx.ERR, 'gone') ngx.exit(499) end) ngx.sleep(30)"
    protocol, server, _, script = setup(tmp_path, source)
    engine = server.engine
    assert isinstance(engine, LuaEngine)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        began = loop.time()
        protocol.data_received(request(script))
        await asyncio.sleep(0)  # its first resume ran: it waits, in a task
        (task,) = server.tasks
        protocol.connection_lost(None)
        await asyncio.wait({task}, timeout=5)
        assert task.done()
        return loop.time() - began

    elapsed = asyncio.run(scenario())
    assert elapsed < 1  # not the 30 s sleep: the abort cancelled the wait
    assert engine.running == {}  # the coroutine was let go of
    assert engine.requests_held == 0  # and its handle
    assert server.requests_served == 1


def test_a_request_aborted_before_it_started_never_runs(tmp_path: Path) -> None:
    # params and the connection's end in one loop iteration: the script
    # must not run for a front server that is gone
    marker = tmp_path / "ran"
    protocol, server, transport, script = setup(
        tmp_path, f"io.open('{marker}', 'w'):close() ngx.say('hi')"
    )

    async def scenario() -> None:
        protocol.data_received(request(script))
        protocol.connection_lost(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert not marker.exists()
    assert server.tasks == set()
    assert stdout_of(transport) == b""
