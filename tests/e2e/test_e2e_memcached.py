"""Cosockets end to end with unmodified lua-resty-memcached (Debian's
lua-nginx-memcached) against a real memcached on loopback, through real
nginx, on fcgi-lua and on OpenResty (the oracle) with the same scripts and
the same expected bodies."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from .e2e_clients import http_request
from .e2e_stack import Logs, Stack, free_port, needs, peer_server

pytestmark = pytest.mark.e2e

MEMCACHED = shutil.which("memcached") or (
    "/usr/bin/memcached" if Path("/usr/bin/memcached").exists() else None
)
RESTY_MEMCACHED = Path("/usr/share/lua/5.1/nginx/memcached.lua")

ROUTES = ["unix", "tcp", "oracle"]


def _version(port: int) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"version\r\n")
            return sock.recv(1024)
    except OSError:
        return b""


@pytest.fixture(scope="module")
def memcached_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    needs("memcached", MEMCACHED is not None)
    needs("lua-nginx-memcached", RESTY_MEMCACHED.exists())
    assert MEMCACHED is not None
    workdir = tmp_path_factory.mktemp("memcached")
    port = free_port()
    # -U 0: no UDP listener; -u: memcached refuses to run as root without it
    argv = [MEMCACHED, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16", "-u", "nobody"]
    with peer_server("memcached", argv, workdir, lambda: _version(port).startswith(b"VERSION")):
        yield port


def get(e2e: Stack, route: str, path: str) -> str:
    resp = http_request(e2e.urls[route], path)
    assert resp.status == 200, resp.text
    return resp.text


BASIC = """\
set: 1
get: 320
set flags: 1
get flags: meow 123
get missing: nilnilnil
add existing: nilNOT_STORED
replace: 1
append: 1
get: hound!0
set table: 1
get table: ab30
set counter: 1
incr: 15
decr: 0
incr not a number: nilCLIENT_ERROR cannot increment or decrement non-numeric value
multi-get: hound! meow/123 nil
escaped key: 1 x0
gets: hound! 0 string
cas: 1
cas stale: nilEXISTS
delete: 1
delete again: nilNOT_FOUND
get deleted: nilnilnil
big value: 1 100000
version: string
close: 1
"""


@pytest.mark.parametrize("run", [1, 2])
@pytest.mark.parametrize("route", ROUTES)
def test_memcached_commands(
    e2e: Stack, logs: Logs, memcached_port: int, route: str, run: int
) -> None:
    body = get(e2e, route, f"/memcached_basic.lua?port={memcached_port}&key=basic-{route}-{run}")
    assert body == BASIC


@pytest.mark.parametrize("route", ROUTES)
def test_memcached_keepalive_reuse(e2e: Stack, logs: Logs, memcached_port: int, route: str) -> None:
    path = f"/memcached_keepalive.lua?port={memcached_port}&pool=mc-{route}"
    rest = "set: 1\nkeepalive: 1\nafter keepalive: closed\n"
    assert get(e2e, route, path) == "reused: 0\n" + rest
    assert get(e2e, route, path) == "reused: 1\n" + rest
    assert get(e2e, route, path) == "reused: 2\n" + rest
