"""An in-memory front server for server-level tests: raw FastCGI records
as nginx sends them, and a transport that keeps what the server writes."""

from __future__ import annotations

import asyncio
import os
import struct
import threading
from pathlib import Path
from typing import Any

import uvloop

from fcgi_lua.config import load
from fcgi_lua.lua import LuaEngine
from fcgi_lua.protocol import FastCGIProtocol
from fcgi_lua.server import Server
from tests.helpers.fastcgi import BEGIN, PARAMS, STDIN, pairs, record, stream


def request_start(script: Path, length: int, ctype: bytes = b"") -> bytes:
    """FCGI_BEGIN_REQUEST (keep_conn) and the params of a POST of ``length``
    bytes, as nginx sends them; the body follows with stdin()."""
    params = pairs(
        (
            (b"SCRIPT_FILENAME", os.fsencode(script)),
            (b"REQUEST_METHOD", b"POST"),
            (b"CONTENT_LENGTH", str(length).encode()),
            (b"CONTENT_TYPE", ctype),
        )
    )
    return record(BEGIN, 1, struct.pack(">HB5x", 1, 1)) + stream(PARAMS, 1, params)


def stdin(data: bytes) -> bytes:
    """FCGI_STDIN records of ``data``, without the empty one that ends it."""
    return b"".join(record(STDIN, 1, data[i : i + 60000]) for i in range(0, len(data), 60000))


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return None

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def serve_in_thread(config: Any) -> tuple[Any, asyncio.AbstractEventLoop, threading.Thread]:
    """A real Server (its engine from ``config``) listening on its own
    uvloop in a daemon thread; returns once it listens."""
    from fcgi_lua.server import Server
    from fcgi_lua.worker import make_engine

    loop = uvloop.new_event_loop()
    server = Server(config, make_engine(config))
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "responder did not start"
    return server, loop, thread


def stop_in_thread(server: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Stop what serve_in_thread started."""
    asyncio.run_coroutine_threadsafe(server.stop(timeout=2), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)


def setup(tmp_path: Path, source: str) -> tuple[FastCGIProtocol, Path, Path]:
    """A server on a FakeTransport, its script (``source``) under
    tmp_path/www, and its body temp dir: (protocol, script, temp)."""
    root = tmp_path / "www"
    temp = tmp_path / "tmp"
    root.mkdir()
    temp.mkdir()
    script = root / "t.lua"
    script.write_text(source)
    config = load(None, {"root": str(root), "client_body_temp_path": str(temp)})
    protocol = FastCGIProtocol(Server(config, LuaEngine()))
    protocol.connection_made(FakeTransport())  # type: ignore[arg-type]
    return protocol, script, temp


async def settle() -> None:
    """Let the loop run what the last data_received started."""
    for _ in range(5):
        await asyncio.sleep(0)
