"""The server removes a request's temp files however the request ends:
finished, aborted by the front server, or cancelled before it ever ran."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fcgi_lua.fastcgi import Connection
from tests.helpers.fastcgi import ABORT, STDIN, ExplodingLimits, record
from tests.helpers.server import FakeTransport, request_start, settle, setup, stdin


def test_abort_mid_upload_removes_the_spool(tmp_path: Path) -> None:
    protocol, script, temp = setup(tmp_path, "ngx.req.read_body() ngx.say('done')")

    async def scenario() -> None:
        protocol.data_received(request_start(script, 200000))
        await settle()
        protocol.data_received(stdin(b"x" * 100000))
        await settle()
        assert len(os.listdir(temp)) == 1
        protocol.connection_lost(None)  # nginx closed: the client went away
        await settle()

    asyncio.run(scenario())
    assert os.listdir(temp) == []


def test_cancelled_before_it_ran_removes_the_spool(tmp_path: Path) -> None:
    protocol, script, temp = setup(tmp_path, "ngx.req.read_body() ngx.say('done')")

    async def scenario() -> None:
        # Params and half a body in one read, then the connection dies in
        # the same loop iteration: the task is cancelled before it starts.
        protocol.data_received(request_start(script, 200000) + stdin(b"x" * 100000))
        assert len(os.listdir(temp)) == 1
        protocol.connection_lost(None)
        await settle()

    asyncio.run(scenario())
    assert os.listdir(temp) == []


def test_script_ending_without_reading_removes_the_spool(tmp_path: Path) -> None:
    protocol, script, temp = setup(tmp_path, "ngx.sleep(0.01) ngx.say('not reading')")

    async def scenario() -> None:
        protocol.data_received(request_start(script, 200000) + stdin(b"x" * 100000))
        assert len(os.listdir(temp)) == 1
        await asyncio.sleep(0.05)
        assert os.listdir(temp) == []
        protocol.data_received(stdin(b"x" * 100000) + record(STDIN, 1))  # the rest: dropped
        await settle()
        assert os.listdir(temp) == []
        assert b"not reading" in b"".join(protocol.transport.out)  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_abort_request_record_removes_uploads(tmp_path: Path) -> None:
    source = "local res = ngx.req.get_multipart() ngx.sleep(10)"
    protocol, script, temp = setup(tmp_path, source)
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n'
        + b"y" * 50000
        + b"\r\n--b0undary--\r\n"
    )
    start = request_start(script, len(body), b"multipart/form-data; boundary=b0undary")

    async def scenario() -> None:
        protocol.data_received(start + stdin(body))
        await asyncio.sleep(0.05)
        assert len(os.listdir(temp)) == 2  # the spooled body and the upload
        protocol.data_received(record(ABORT, 1))
        await settle()

    asyncio.run(scenario())
    assert os.listdir(temp) == []


def test_an_internal_codec_error_closes_only_that_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    protocol, script, _ = setup(tmp_path, "ngx.say('hi')")
    protocol.codec = Connection(limits=ExplodingLimits())
    ExplodingLimits.armed = True
    try:
        protocol.data_received(request_start(script, 0))  # nothing escapes
    finally:
        ExplodingLimits.armed = False
    transport = protocol.transport
    assert isinstance(transport, FakeTransport) and transport.closed
    assert "internal error decoding FastCGI" in caplog.text
    assert "RuntimeError: boom" in caplog.text
