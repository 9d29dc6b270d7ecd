"""The real servers e2e tests talk to through cosockets (redis-server
with Debian's lua-resty-redis), and what OpenResty logs about them."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .e2e_stack import free_port, needs, peer_server

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)
RESTY_REDIS = Path("/usr/share/lua/5.1/nginx/redis.lua")  # Debian's lua-nginx-redis

# What OpenResty logs at error level for failures its scripts handle.
ORACLE_SOCKET_ERRORS = (
    r"lua tcp socket (read timed out|connect timed out)|connect\(\) failed"
    r"|attempt to (receive|send) data on a closed socket"
)


def redis_command(port: int, command: bytes) -> bytes:
    """One inline command on a fresh connection; its raw reply (or b"")."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(command + b"\r\n")
            time.sleep(0.02)
            return sock.recv(65536)
    except OSError:
        return b""


def run_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server on a free loopback port for as long as the generator
    runs (conftest.py's redis_port fixture); skipped where it is absent."""
    needs("redis-server", REDIS_SERVER is not None)
    needs("lua-nginx-redis", RESTY_REDIS.exists())
    assert REDIS_SERVER is not None
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--daemonize", "no", "--dir", str(workdir)]
    with peer_server("redis", argv, workdir, lambda: redis_command(port, b"PING") == b"+PONG\r\n"):
        yield port
