"""Status, ping, metrics and logs of ``fcgi-lua serve --workers 2``.

The status and ping pages must answer while every request of every worker
sleeps; counters must add up across workers; the access log gets a line
per request and is reopened on SIGUSR1; a slow request is logged with its
Lua traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.workers import Stack, running_stack, wait_for
from tests.integration.fcgi_client import begin, params, read_until_ended

SCRIPTS = {
    "pid.lua": "ngx.say(ngx.worker.pid())",
    "sleepy.lua": "local function nap() ngx.sleep(2) end\nnap()\nngx.say('rested')",
    "boom.lua": "local x = nil\nreturn x.field",
}


def fcgi_get(address: tuple[str, int], root: Path, path: str, query: str = "") -> bytes:
    script = path if path.startswith("/fcgi-") else str(root) + path
    with socket.create_connection(address, timeout=10) as sock:
        begin(sock, 1, keep_conn=False)
        params(
            sock,
            1,
            {
                "REQUEST_METHOD": "GET",
                "SCRIPT_FILENAME": script,
                "SCRIPT_NAME": path,
                "DOCUMENT_URI": path,
                "QUERY_STRING": query,
                "REQUEST_URI": path + ("?" + query if query else ""),
                "REMOTE_ADDR": "192.0.2.7",
                "SERVER_PROTOCOL": "HTTP/1.1",
            },
        )
        out, _ = read_until_ended(sock, {1})
    return out[1]


def body(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    config = (
        'status_path = "/fcgi-status"\nping_path = "/fcgi-ping"\n'
        f'access_log = "{tmp_path / "access.log"}"\n'
        f'metrics_dir = "{tmp_path / "metrics"}"\n'
        "slow_request_threshold = 0.5\nshutdown_timeout = 5.0\n"
        # every slow request's WARNING is counted below: none suppressed
        "log_repeat_limit = 0\n"
    )
    with running_stack(tmp_path, SCRIPTS, config, stop_signal=signal.SIGTERM) as stack:
        yield stack


def status(stack: Stack, query: str = "") -> bytes:
    return fcgi_get(stack.address, stack.root, "/fcgi-status", query)


def test_status_and_ping_answer_while_every_worker_sleeps(stack: Stack) -> None:
    sleepers = 16
    results: list[bytes] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(fcgi_get(stack.address, stack.root, "/sleepy.lua"))
        )
        for _ in range(sleepers)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.2)  # all dispatched, and each worker flushed its counts once
    began = time.monotonic()
    ping = fcgi_get(stack.address, stack.root, "/fcgi-ping")
    page = status(stack)
    assert time.monotonic() - began < 0.5
    assert ping.startswith(b"Status: 200") and body(ping) == b"pong\n"
    assert page.startswith(b"Status: 200")
    assert b"Content-Type: application/json" in page
    data = json.loads(body(page))
    assert data["total processes"] == 2
    assert data["active processes"] == 2
    assert data["idle processes"] == 0
    assert data["active requests"] == sleepers
    assert {p["pid"] for p in data["processes"]} == stack.workers()
    assert all(p["state"] == "Running" and p["lua memory"] > 0 for p in data["processes"])
    assert len(results) == 0  # still sleeping when the status page answered
    for thread in threads:
        thread.join()
    assert all(r.startswith(b"Status: 200") for r in results)

    # The slow-request log: the script and where its Lua code waits.
    wait_for(lambda: stack.log().count("slow request") >= sleepers, 5, "slow request logs")
    log = stack.log()
    assert "sleepy.lua: slow request, running for" in log
    assert "stack traceback:" in log
    assert "sleepy.lua:1: in function 'nap'" in log or "sleepy.lua:1: in" in log


def test_counters_add_up_across_workers(stack: Stack) -> None:
    for _ in range(30):
        assert fcgi_get(stack.address, stack.root, "/pid.lua").startswith(b"Status: 200")
    for _ in range(3):
        assert fcgi_get(stack.address, stack.root, "/boom.lua").startswith(b"Status: 500")
    assert fcgi_get(stack.address, stack.root, "/missing.lua").startswith(b"Status: 404")
    time.sleep(1.5)  # every worker flushed its counts

    def families(query: str) -> dict[str, list[tuple[dict[str, str], float]]]:
        text = body(status(stack, query)).decode()
        parse = openmetrics_families if query == "openmetrics" else text_string_to_metric_families
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in parse(text):
            for sample in family.samples:
                out.setdefault(sample.name, []).append((sample.labels, sample.value))
        return out

    for query in ("prometheus", "openmetrics"):
        samples = families(query)
        requests = {
            (labels["script"], labels["status"]): value
            for labels, value in samples["fcgi_lua_requests_total"]
        }
        assert requests == {("/pid.lua", "200"): 30, ("/boom.lua", "500"): 3, ("", "404"): 1}
        counts = {
            labels["script"]: v for labels, v in samples["fcgi_lua_request_duration_seconds_count"]
        }
        assert counts["/pid.lua"] == 30
        errors = {labels["script"]: v for labels, v in samples["fcgi_lua_lua_errors_total"]}
        assert errors == {"/boom.lua": 3}
        pids = {labels["pid"] for labels, _ in samples["fcgi_lua_lua_memory_bytes"]}
        assert pids == {str(pid) for pid in stack.workers()}
    data = json.loads(body(status(stack, "json")))
    assert data["accepted conn"] == 34
    assert data["requests by status"] == {"200": 30, "404": 1, "500": 3}
    assert data["lua errors"] == 3
    # The error log names script and line.
    assert "boom.lua:2: attempt to index" in stack.log()


def test_worker_restart_is_counted_by_the_master(stack: Stack) -> None:
    before = stack.workers()
    os.kill(min(before), signal.SIGKILL)
    wait_for(lambda: len(stack.workers() - before) == 1, 10, "a replacement worker")
    wait_for(lambda: stack.log().count("serving") >= 3, 10, "the new worker to listen")
    time.sleep(1.2)
    data = json.loads(body(status(stack)))
    assert data["worker restarts"] == {"crash": 1}
    assert {p["pid"] for p in data["processes"]} == stack.workers()  # the dead one is gone


def test_access_log_lines_and_sigusr1_reopen(stack: Stack, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    for _ in range(4):
        fcgi_get(stack.address, stack.root, "/pid.lua", "a=1")
    wait_for(lambda: access.read_text().count("\n") >= 4, 5, "access log lines")
    line = access.read_text().splitlines()[0]
    assert line.startswith("192.0.2.7 - - [")
    assert '"GET /pid.lua?a=1 HTTP/1.1" 200 ' in line
    assert line.endswith(f'"{stack.root}/pid.lua"')
    rotated = tmp_path / "access.log.1"
    access.rename(rotated)
    stack.process.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    fcgi_get(stack.address, stack.root, "/pid.lua", "after=rotate")
    wait_for(lambda: access.exists() and "after=rotate" in access.read_text(), 5, "reopened log")
    assert "after=rotate" not in rotated.read_text()
