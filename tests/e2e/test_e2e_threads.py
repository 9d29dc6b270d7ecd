"""Light threads, timers, semaphores and ngx.on_abort end to end, through
real nginx, on fcgi-lua and on OpenResty (the oracle) with the same
scripts: deterministic bodies compared as equal; timers and aborts observed
in the redis-server of test_e2e_redis."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest

from .e2e_clients import http_request
from .e2e_peers import redis_command
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e

ROUTES = ["unix", "tcp", "oracle"]


def _redis_get(port: int, key: str, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        reply = redis_command(port, b"GET " + key.encode())
        if not reply.startswith(b"$-1") and reply:
            return reply.split(b"\r\n")[1]
        assert time.monotonic() < deadline, f"{key} never set"
        time.sleep(0.05)


@pytest.mark.parametrize("route", ROUTES)
def test_spawn_wait_kill(e2e: Stack, logs: Logs, route: str) -> None:
    resp = http_request(e2e.urls[route], "/thread_spawn.lua")
    assert resp.status == 200
    assert resp.text == (
        "start a\nstart b\nspawned thread\nend b\ntrueb0.01\nend a\ntruea0.06\n"
        "nilalready waited or killed\n4 dead\n1 already waited or killed\n"
        "already terminated\nentry ends\nlast word of a thread\n"
    )
    logs.assert_no_errors()


@pytest.mark.parametrize("route", ROUTES)
def test_one_reader_at_a_time_on_a_socket(
    e2e: Stack,
    logs: Logs,
    route: str,
    redis_port: int,
) -> None:
    # OpenResty also logs the use of the socket the kill closed
    logs.allow("nginx", r"attempt to (send|receive) data on a closed socket")
    resp = http_request(e2e.urls[route], f"/socket_busy.lua?port={redis_port}")
    assert resp.status == 200, resp.text
    assert resp.text == (
        "second reader: socket busy reading\nuntil: socket busy reading\n"
        "send while reading: 6\nfirst reader: +PONG\nkill: 1\nsend: nilclosed\n"
        "after the kill: nilclosed\n"
    )
    logs.assert_no_errors()


@pytest.mark.parametrize("route", ROUTES)
def test_exit_in_a_thread_ends_the_request(e2e: Stack, logs: Logs, route: str) -> None:
    began = time.monotonic()
    resp = http_request(e2e.urls[route], "/thread_exit.lua")
    assert time.monotonic() - began < 2
    assert resp.status == 403
    assert resp.header("X-Threads") == "yes"
    assert "never" not in resp.text
    logs.assert_no_errors()


@pytest.mark.parametrize("route", ROUTES)
def test_an_error_stays_in_its_thread(e2e: Stack, logs: Logs, route: str) -> None:
    logs.allow("fcgi-lua", r"lua user thread aborted: runtime error: .*thread boom|traceback|")
    logs.allow("nginx", r"lua user thread aborted: runtime error: .*thread boom")
    resp = http_request(e2e.urls[route], "/thread_error.lua")
    assert resp.status == 200
    assert resp.text == "false true\ntruefine\n"
    name = "nginx" if route == "oracle" else "fcgi-lua"
    logs.wait_for(name, r"lua user thread aborted: runtime error: .*thread boom")
    logs.assert_no_errors()


@pytest.mark.parametrize("route", ["unix", "oracle"])
def test_semaphore_handoff_between_two_requests(e2e: Stack, logs: Logs, route: str) -> None:
    results: dict[str, str] = {}

    def waiter() -> None:
        results["wait"] = http_request(e2e.urls[route], "/sema_handoff.lua?role=wait").text

    thread = threading.Thread(target=waiter)
    began = time.monotonic()
    thread.start()
    time.sleep(0.2)  # the waiter is parked on the semaphore by now
    assert "wait" not in results
    posted = http_request(e2e.urls[route], "/sema_handoff.lua?role=post")
    thread.join(5)
    assert posted.text == "posted true\n"
    assert results["wait"] == "waited true nil 0\n"
    assert time.monotonic() - began < 2
    logs.assert_no_errors()


@pytest.mark.parametrize("route", ROUTES)
def test_a_timer_runs_after_the_response(
    e2e: Stack,
    logs: Logs,
    route: str,
    redis_port: int,
) -> None:
    key = f"timer-{route}-{uuid.uuid4().hex}"
    resp = http_request(e2e.urls[route], f"/timer_redis.lua?port={redis_port}&key={key}")
    assert resp.status == 200
    assert resp.text == "scheduled 1 nil\n"
    assert redis_command(redis_port, b"GET " + key.encode()).startswith(b"$-1")  # not yet
    assert _redis_get(redis_port, key) == b"false timer false thread true"
    logs.assert_no_errors()


@pytest.mark.parametrize("route", ["unix", "oracle"])
def test_on_abort_runs_when_the_client_goes_away(
    e2e: Stack,
    logs: Logs,
    route: str,
    redis_port: int,
) -> None:
    logs.allow("fcgi-lua", r"abort")
    key = f"abort-{route}-{uuid.uuid4().hex}"
    url = urlsplit(e2e.urls[route])
    assert url.hostname is not None and url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        path = f"/abort_redis.lua?port={redis_port}&key={key}"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {url.hostname}\r\n\r\n".encode())
        seen = b""
        while b"registered 1 nil\n" not in seen:
            data = sock.recv(4096)
            assert data, f"closed early: {seen!r}"
            seen += data
    assert _redis_get(redis_port, key, timeout=4) == b"aborted"
    resp = http_request(e2e.urls[route], "/hello.lua")
    assert resp.status == 200
    logs.assert_no_errors()
