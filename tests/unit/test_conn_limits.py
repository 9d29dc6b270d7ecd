"""max_conns fitted to the descriptor limit, and the warning when the
descriptors run out anyway (libuv then closes new connections silently)."""

from __future__ import annotations

import logging
import resource
from pathlib import Path

import pytest

from fcgi_lua import server as server_module
from fcgi_lua.config import load
from fcgi_lua.server import Server, connection_limit


def test_connection_limit_leaves_a_quarter_of_the_descriptors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def limit(soft: int) -> None:
        monkeypatch.setattr(resource, "getrlimit", lambda _: (soft, resource.RLIM_INFINITY))

    limit(1024)
    assert connection_limit(1024) == 768
    assert connection_limit(100) == 100
    limit(64)
    assert connection_limit(1024) == 32  # at least 32 kept back
    limit(resource.RLIM_INFINITY)
    assert connection_limit(5000) == 5000


def test_descriptors_running_out_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(load(None, {"root": str(tmp_path)}), engine=None)  # type: ignore[arg-type]
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        pytest.skip("no descriptor limit")
    monkeypatch.setattr(server_module, "open_descriptors", lambda: soft - 3)
    with caplog.at_level(logging.WARNING, logger="fcgi_lua.server"):
        server._check_descriptors()
    assert f"{soft - 3} of {soft} descriptors open (RLIMIT_NOFILE)" in caplog.text
    caplog.clear()
    monkeypatch.setattr(server_module, "open_descriptors", lambda: soft // 2)
    server._check_descriptors()
    assert not caplog.records
