"""Limits through real nginx: a runaway script is stopped by the
instruction budget (500) and a memory hog by the Lua memory limit (500)
while other requests are served, both with the default configuration of
the default runtime; a script past request_timeout gets a 504 (the debug
route's fcgi-lua runs with request_timeout = 2)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .e2e_clients import http_request
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e

RUNS = [1, 2]


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("route", ["unix", "tcp"])
def test_runaway_gets_500_while_others_are_served(
    e2e: Stack, logs: Logs, route: str, run: int
) -> None:
    logs.allow("fcgi-lua", r"runaway\.lua|instruction budget|stack traceback|ERROR")
    with ThreadPoolExecutor(4) as pool:
        runaway = pool.submit(http_request, e2e.urls[route], "/runaway.lua")
        hellos = [pool.submit(http_request, e2e.urls[route], "/hello.lua") for _ in range(6)]
        assert runaway.result().status == 500
        assert all(h.result().status == 200 for h in hellos)
    logs.wait_for("fcgi-lua", r"runaway\.lua:\d+: instruction budget of \d+ exceeded")
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
def test_memory_hog_gets_500_while_others_are_served(e2e: Stack, logs: Logs, run: int) -> None:
    logs.allow("fcgi-lua", r"memory_hog\.lua|not enough memory|stack traceback|ERROR")
    with ThreadPoolExecutor(4) as pool:
        hog = pool.submit(http_request, e2e.urls["unix"], "/memory_hog.lua")
        hellos = [pool.submit(http_request, e2e.urls["unix"], "/hello.lua") for _ in range(6)]
        assert hog.result().status == 500
        assert all(h.result().status == 200 for h in hellos)
    logs.wait_for("fcgi-lua", r"memory_hog\.lua: not enough memory")
    # the hog's memory was collected: the same worker goes on serving
    assert http_request(e2e.urls["unix"], "/hello.lua").status == 200
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
def test_request_timeout_gets_504(e2e: Stack, logs: Logs, run: int) -> None:
    logs.allow("fcgi-lua-debug", r"too_slow\.lua|request_timeout|ERROR")
    started = time.monotonic()
    resp = http_request(e2e.urls["debug"], "/too_slow.lua")
    assert resp.status == 504
    assert "late" not in resp.text
    assert time.monotonic() - started < 10
    assert http_request(e2e.urls["debug"], "/hello.lua").status == 200
    logs.wait_for("fcgi-lua-debug", r"too_slow\.lua: request timed out after 2 s")
    logs.assert_no_errors()
