"""The responder in-process (real server, real Lua engine) on loopback.

The server runs on its own uvloop event loop in a background thread, so
tests can drive it with blocking clients that are not ours: Debian's
``cgi-fcgi`` (the reference libfcgi) and flup6's record class.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fcgi_lua.config import load
from fcgi_lua.server import Server
from tests.helpers.net import free_port
from tests.helpers.server import serve_in_thread, stop_in_thread

SCRIPTS = {
    "hello.lua": 'ngx.say("hello from ", ngx.var.request_method)',
    "sleep.lua": 'ngx.sleep(tonumber(ngx.var.arg_t) or 0.1) ngx.say("slept ", ngx.var.arg_id)',
    "big.lua": 'ngx.print(string.rep("x", 200000))',
    "error.lua": "local t = nil\nreturn t.field",
    "flood.lua": 'for i = 1, 300 do ngx.print(string.rep("x", 65536)) ngx.flush(true) end',
    "forever.lua": "ngx.print('tick') ngx.flush() ngx.sleep(30) ngx.say('late')",
}


@dataclass
class Responder:
    root: Path
    port: int
    unix_path: str
    server: Server
    loop: asyncio.AbstractEventLoop

    def script(self, name: str) -> str:
        return str(self.root / name)


@pytest.fixture(scope="module")
def responder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Responder]:
    base = tmp_path_factory.mktemp("responder")
    root = base / "www"
    root.mkdir()
    for name, text in SCRIPTS.items():
        (root / name).write_text(text)
    port = free_port()
    unix_path = str(base / "fcgi.sock")
    config = load(None, {"root": str(root), "listen": [f"127.0.0.1:{port}", f"unix:{unix_path}"]})
    server, loop, thread = serve_in_thread(config)
    try:
        yield Responder(root, port, unix_path, server, loop)
    finally:
        stop_in_thread(server, loop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="session")
def cgi_fcgi() -> str:
    path = shutil.which("cgi-fcgi")
    if path is None:
        pytest.fail("cgi-fcgi not installed (Debian package libfcgi-bin; scripts/test installs it)")
    return path
