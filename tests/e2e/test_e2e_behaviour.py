"""Behaviour that is about time, concurrency and connections rather than
one request's bytes: streaming through stock nginx buffering, many
concurrent sleeping requests, a client that goes away, debug tracebacks,
globals that must not leak between requests."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .e2e_clients import fastcgi_request, http_request, parse_raw_response, raw_http, timed_get
from .e2e_stack import FCGI_ERROR, Logs, Stack, fcgi_lua_argv

pytestmark = pytest.mark.e2e

RUNS = [1, 2]


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("route", ["unix", "tcp", "oracle"])
def test_flush_streams_through_stock_buffering(
    e2e: Stack, logs: Logs, route: str, run: int
) -> None:
    # The unix and tcp locations keep nginx's default fastcgi_buffering on:
    # only fcgi-lua's `X-Accel-Buffering: no` (sent because the script
    # flushed before its headers went out) lets the first line through early.
    arrival = timed_get(e2e.urls[route], "/stream.lua")
    response = parse_raw_response(arrival.data)
    assert response.status == 200
    first, last = arrival.first_time(b"first"), arrival.first_time(b"last")
    assert first < 0.5, f"first line arrived after {first:.3f}s: response was buffered"
    assert last >= 0.9, f"last line arrived after {last:.3f}s, before the 1 s sleep ended"
    assert last - first >= 0.8
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
def test_flush_sends_x_accel_buffering(e2e: Stack, logs: Logs, run: int) -> None:
    resp = http_request(e2e.urls["unix"], "/stream.lua")
    # nginx consumes X-Accel-Buffering, so look at what fcgi-lua sent.
    direct = fastcgi_request(
        str(e2e.unix_socket),
        {
            "SCRIPT_FILENAME": str(e2e.root / "stream.lua"),
            "REQUEST_METHOD": "GET",
            "DOCUMENT_ROOT": str(e2e.root),
            "SCRIPT_NAME": "/stream.lua",
            "REQUEST_URI": "/stream.lua",
            "QUERY_STRING": "",
        },
    )
    assert resp.text == "first\nlast\n"
    assert direct.response.status == 200
    assert direct.response.header("x-accel-buffering") == "no"
    assert direct.response.body.endswith(b"first\nlast\n")
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("route", ["unix", "tcp"])
def test_200_concurrent_sleeps(e2e: Stack, logs: Logs, route: str, run: int) -> None:
    url = urlsplit(e2e.urls[route])
    request = f"GET /sleep100.lua HTTP/1.1\r\nHost: {url.hostname}\r\nConnection: close\r\n\r\n"

    def one(_: int) -> tuple[int, bytes]:
        resp = parse_raw_response(raw_http(e2e.urls[route], request.encode(), timeout=10))
        return resp.status, resp.body

    with ThreadPoolExecutor(max_workers=200) as pool:
        started = time.monotonic()
        results = list(pool.map(one, range(200)))
        elapsed = time.monotonic() - started
    statuses = sorted({status for status, _ in results})
    assert statuses == [200], f"statuses seen: {statuses}"
    assert all(body.endswith(b"ok\n") for _, body in results)
    # Serially this is 20 s; one worker must overlap all 200 sleeps.
    assert elapsed < 1.0, f"200 x ngx.sleep(0.1) took {elapsed:.2f}s"
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
def test_client_disconnect_mid_response(e2e: Stack, logs: Logs, run: int) -> None:
    url = urlsplit(e2e.urls["unix"])
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(f"GET /slow_stream.lua HTTP/1.1\r\nHost: {url.hostname}\r\n\r\n".encode())
        seen = b""
        while b"tick 1\n" not in seen:
            data = sock.recv(4096)
            assert data, f"closed early: {seen!r}"
            seen += data
    # nginx notices the close, drops its upstream connection; fcgi-lua must
    # notice too, log it, and stop the request (not keep a dead coroutine).
    logs.wait_for("fcgi-lua", r"(?i)abort\w*\b.*slow_stream\.lua", timeout=5)
    resp = http_request(e2e.urls["unix"], "/hello.lua")
    assert resp.status == 200
    assert resp.text == "Hello, world!\n"
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
def test_debug_puts_traceback_in_500(e2e: Stack, logs: Logs, run: int) -> None:
    logs.allow("fcgi-lua-debug", r"boom from e2e|error\.lua|Traceback|ERROR")
    resp = http_request(e2e.urls["debug"], "/error.lua")
    assert resp.status == 500
    assert "boom from e2e" in resp.text
    assert "error.lua:2" in resp.text  # where error() was called
    assert "traceback" in resp.text.lower()
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
def test_no_traceback_without_debug(e2e: Stack, logs: Logs, run: int) -> None:
    logs.allow("fcgi-lua", r"boom from e2e|error\.lua|Traceback|ERROR")
    resp = http_request(e2e.urls["unix"], "/error.lua")
    assert resp.status == 500
    assert "boom" not in resp.text
    assert "error.lua" not in resp.text
    # ...but the operator still gets the whole story in the log.
    logs.wait_for("fcgi-lua", r"boom from e2e")
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("route", ["unix", "tcp"])
def test_globals_do_not_leak_between_requests(e2e: Stack, logs: Logs, route: str, run: int) -> None:
    assert http_request(e2e.urls[route], "/global_set.lua").text == "set\n"
    assert http_request(e2e.urls[route], "/global_get.lua").text == "nil\n"
    assert http_request(e2e.urls[route], "/global_counter.lua").text == "1\n"
    assert http_request(e2e.urls[route], "/global_counter.lua").text == "1\n"
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
def test_keepalive_connection_serves_many_requests(e2e: Stack, logs: Logs, run: int) -> None:
    # Several requests on one client connection, each on a kept-alive
    # upstream connection (fastcgi_keep_conn on): every one must complete.
    url = urlsplit(e2e.urls["unix"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    try:
        for i in range(50):
            conn.request("GET", f"/args.lua?i={i}")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == f"i = {i} (string)\n".encode()
    finally:
        conn.close()
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_connection_closed_without_a_request(
    e2e: Stack, logs: Logs, transport: str, run: int
) -> None:
    # nginx closes idle kept-alive upstream connections (keepalive_timeout)
    # and may connect then give up: an EOF with no request in flight must
    # leave the responder serving.
    address: str | tuple[str, int] = (
        str(e2e.unix_socket) if transport == "unix" else e2e.tcp_address
    )
    family = socket.AF_UNIX if transport == "unix" else socket.AF_INET
    for _ in range(3):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.connect(address)
    resp = http_request(e2e.urls[transport], "/hello.lua", timeout=5)
    assert (resp.status, resp.text) == (200, "Hello, world!\n")
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
def test_chunked_body_with_request_buffering_off(e2e: Stack, logs: Logs, run: int) -> None:
    # fastcgi_request_buffering off + a chunked body: nginx streams STDIN
    # and sends an empty CONTENT_LENGTH; fcgi-lua must read to STDIN's end.
    url = urlsplit(e2e.urls["unbuffered"])
    chunks = [b"a=1", b"&b=", b"x%20y"]
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            b"POST /body.lua HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for chunk in chunks:
            time.sleep(0.05)
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        raw = b""
        while data := sock.recv(65536):
            raw += data
    resp = parse_raw_response(raw)
    assert resp.status == 200, raw
    body = resp.body
    if resp.header("transfer-encoding") == "chunked":
        body = _dechunk(body)
    assert body == b"method: POST\nbytes: 11\nbody: a=1&b=x%20y\narg a = 1\narg b = x y\n"
    logs.assert_no_errors()


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += rest[:size]
        data = rest[size + 2 :]


def _tcp_states_to(port: int) -> dict[str, int]:
    """Count this host's TCP sockets of connections to ``port``, by state.

    ``established``: nginx's side (remote port is ``port``). ``time_wait``:
    either side, since whoever closes first keeps the TIME_WAIT entry."""
    counts = {"established": 0, "time_wait": 0}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if fields[3] == "01" and remote_port == port:
            counts["established"] += 1
        elif fields[3] == "06" and port in (local_port, remote_port):
            counts["time_wait"] += 1
    return counts


@pytest.mark.parametrize("run", RUNS)
def test_upstream_connections_are_kept_alive(e2e: Stack, logs: Logs, run: int) -> None:
    # fastcgi_keep_conn on + upstream keepalive: 30 sequential requests
    # reuse one connection to fcgi-lua instead of opening (and leaving in
    # TIME_WAIT) one each.
    port = e2e.tcp_address[1]
    before = _tcp_states_to(port)
    for _ in range(30):
        assert http_request(e2e.urls["tcp"], "/hello.lua").status == 200
    after = _tcp_states_to(port)
    assert after["established"] >= 1, after
    assert after["time_wait"] - before["time_wait"] < 5, (before, after)
    logs.assert_no_errors()


@pytest.mark.parametrize("run", RUNS)
def test_sigterm_lets_in_flight_requests_finish(
    e2e: Stack, logs: Logs, tmp_path: Path, run: int
) -> None:
    # A separate instance, so stopping it leaves the shared stack alone.
    sock = Path(f"/tmp/fcgi-lua-e2e-{os.getpid()}-term.sock")
    log = tmp_path / "fcgi-lua-term.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            fcgi_lua_argv("serve", "--listen", f"unix:{sock}", "--root", str(e2e.root)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        params: dict[str, str | bytes] = {
            "SCRIPT_FILENAME": str(e2e.root / "stream.lua"),
            "REQUEST_METHOD": "GET",
        }
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(fastcgi_request, str(sock), params)
            time.sleep(0.3)  # the script is inside its 1 s ngx.sleep
            proc.send_signal(signal.SIGTERM)
            result = pending.result(timeout=10)
        assert result.response.status == 200
        assert result.response.body == b"first\nlast\n"
        assert proc.wait(10) == 0, log.read_text()
        assert not sock.exists(), "the socket file outlived the server"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.unlink(missing_ok=True)
    errors = [line for line in log.read_text().splitlines() if FCGI_ERROR.search(line)]
    assert not errors, errors
    logs.assert_no_errors()
