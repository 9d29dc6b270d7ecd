"""The responder driven by FastCGI clients we did not write.

- ``cgi-fcgi`` (Debian's libfcgi-bin, the reference C library) sends real
  requests over TCP and the Unix socket;
- flup6's ``Record`` class (an independent Python codec) multiplexes
  requests on one connection and asks GET_VALUES.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from flup.server.fcgi_base import (
    FCGI_END_REQUEST,
    FCGI_GET_VALUES,
    FCGI_GET_VALUES_RESULT,
    FCGI_PARAMS,
    FCGI_STDIN,
    FCGI_STDOUT,
    FCGI_UNKNOWN_ROLE,
    FCGI_UNKNOWN_TYPE,
    Record,
    decode_pair,
    encode_pair,
)

from fcgi_lua.listeners import bind_unix
from tests.integration.conftest import Responder
from tests.integration.fcgi_client import begin, params, read_until_ended, send


def cgi_request(
    cgi_fcgi: str, connect: str, env: dict[str, str], body: bytes = b""
) -> tuple[str, bytes]:
    result = subprocess.run(
        [cgi_fcgi, "-bind", "-connect", connect],
        env=env,
        input=body,
        capture_output=True,
        timeout=20,
        check=False,
    )
    head, _, payload = result.stdout.partition(b"\r\n\r\n")
    return head.decode("latin-1"), payload


def base_env(responder: Responder, script: str, **extra: str) -> dict[str, str]:
    env = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_FILENAME": responder.script(script),
        "SCRIPT_NAME": "/" + script,
        "REQUEST_URI": "/" + script,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    env.update(extra)
    return env


def test_cgi_fcgi_over_tcp(responder: Responder, cgi_fcgi: str) -> None:
    head, body = cgi_request(
        cgi_fcgi, f"127.0.0.1:{responder.port}", base_env(responder, "hello.lua")
    )
    assert head.startswith("Status: 200 OK")
    assert body == b"hello from GET\n"


def test_cgi_fcgi_over_unix_socket(responder: Responder, cgi_fcgi: str) -> None:
    env = base_env(responder, "hello.lua", REQUEST_METHOD="POST", CONTENT_LENGTH="3")
    head, body = cgi_request(cgi_fcgi, responder.unix_path, env, b"abc")
    assert head.startswith("Status: 200 OK")
    assert body == b"hello from POST\n"


def test_large_output_is_split_into_records(responder: Responder, cgi_fcgi: str) -> None:
    head, body = cgi_request(
        cgi_fcgi, f"127.0.0.1:{responder.port}", base_env(responder, "big.lua")
    )
    assert head.startswith("Status: 200 OK")
    assert body == b"x" * 200000


def test_missing_script_404_and_error_500(responder: Responder, cgi_fcgi: str) -> None:
    connect = f"127.0.0.1:{responder.port}"
    head, _ = cgi_request(cgi_fcgi, connect, base_env(responder, "absent.lua"))
    assert head.startswith("Status: 404")
    head, body = cgi_request(cgi_fcgi, connect, base_env(responder, "error.lua"))
    assert head.startswith("Status: 500")
    assert b"attempt to index" not in body  # no traceback without debug


# -- flup6's Record: multiplexing and management records -----------------------


def connect(responder: Responder) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", responder.port), timeout=10)
    return sock


def script_params(responder: Responder, script: str, query: str) -> dict[str, str]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_FILENAME": responder.script(script),
        "QUERY_STRING": query,
    }


def test_multiplexed_requests_interleave(responder: Responder) -> None:
    with connect(responder) as sock:
        begin(sock, 1)
        begin(sock, 2)
        begin(sock, 3)
        params(sock, 1, script_params(responder, "sleep.lua", "t=0.3&id=one"))
        params(sock, 2, script_params(responder, "sleep.lua", "t=0.1&id=two"))
        params(sock, 3, script_params(responder, "hello.lua", ""))
        started = time.monotonic()
        out, order = read_until_ended(sock, {1, 2, 3})
        elapsed = time.monotonic() - started
    assert out[1].endswith(b"slept one\n")
    assert out[2].endswith(b"slept two\n")
    assert out[3].endswith(b"hello from GET\n")
    # The short requests finish first: they did not wait behind request 1.
    assert order == [3, 2, 1]
    assert elapsed < 0.3 + 0.25


def test_keep_conn_reuses_the_connection(responder: Responder) -> None:
    with connect(responder) as sock:
        for request_id in (1, 1, 7):
            begin(sock, request_id)
            params(sock, request_id, script_params(responder, "hello.lua", ""))
            out, _ = read_until_ended(sock, {request_id})
            assert out[request_id].endswith(b"hello from GET\n")


def test_get_values(responder: Responder) -> None:
    names = [b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"]
    with connect(responder) as sock:
        send(sock, FCGI_GET_VALUES, 0, b"".join(encode_pair(n, b"") for n in names))
        record = Record()
        record.read(sock)
    assert record.type == FCGI_GET_VALUES_RESULT
    values = {}
    pos = 0
    while pos < record.contentLength:
        pos, (name, value) = decode_pair(record.contentData, pos)
        values[name] = value
    assert values == {
        b"FCGI_MAX_CONNS": b"1024",
        b"FCGI_MAX_REQS": b"1024",
        b"FCGI_MPXS_CONNS": b"1",
    }


def test_unknown_role_and_unknown_type(responder: Responder) -> None:
    with connect(responder) as sock:
        begin(sock, 1, role=3)  # FILTER
        record = Record()
        record.read(sock)
        assert record.type == FCGI_END_REQUEST
        assert record.contentData[4] == FCGI_UNKNOWN_ROLE
        send(sock, 42, 0, b"")
        record = Record()
        record.read(sock)
        assert record.type == FCGI_UNKNOWN_TYPE
        assert record.contentData[0] == 42
        # The connection still serves requests afterwards.
        begin(sock, 2)
        params(sock, 2, script_params(responder, "hello.lua", ""))
        out, _ = read_until_ended(sock, {2})
        assert out[2].endswith(b"hello from GET\n")


def test_abort_request_ends_the_request(responder: Responder) -> None:
    with connect(responder) as sock:
        begin(sock, 5)
        params(sock, 5, script_params(responder, "forever.lua", ""))
        record = Record()
        record.read(sock)
        assert record.type == FCGI_STDOUT  # the script flushed, then sleeps
        started = time.monotonic()
        send(sock, 2, 5)  # FCGI_ABORT_REQUEST
        _, order = read_until_ended(sock, {5})
        assert order == [5]
        assert time.monotonic() - started < 5


def test_garbage_closes_only_that_connection(responder: Responder) -> None:
    with connect(responder) as good, connect(responder) as bad:
        begin(good, 1)
        bad.sendall(b"\x09garbage-not-fastcgi")
        assert bad.recv(100) == b""  # closed by the responder
        params(good, 1, script_params(responder, "hello.lua", ""))
        out, _ = read_until_ended(good, {1})
        assert out[1].endswith(b"hello from GET\n")


def test_oversized_params_get_431_and_close_only_that_connection(responder: Responder) -> None:
    with connect(responder) as good, connect(responder) as bad:
        begin(good, 1)
        begin(bad, 1)
        send(bad, FCGI_PARAMS, 1, encode_pair(b"HTTP_X_HUGE", b"x" * 60000))
        send(bad, FCGI_PARAMS, 1, encode_pair(b"HTTP_X_MORE", b"y" * 60000))
        out, _ = read_until_ended(bad, {1})
        assert out[1].startswith(b"Status: 431 Request Header Fields Too Large\r\n")
        assert bad.recv(100) == b""  # then closed
        params(good, 1, script_params(responder, "hello.lua", ""))
        out, _ = read_until_ended(good, {1})
        assert out[1].endswith(b"hello from GET\n")


def test_oversized_body_gets_413_and_the_connection_stays_usable(responder: Responder) -> None:
    with connect(responder) as sock:
        begin(sock, 1)
        pairs = script_params(responder, "hello.lua", "")
        pairs.update(REQUEST_METHOD="POST", CONTENT_LENGTH=str(2 * 1024 * 1024))
        data = b"".join(encode_pair(k.encode(), v.encode()) for k, v in pairs.items())
        send(sock, FCGI_PARAMS, 1, data)
        send(sock, FCGI_PARAMS, 1)
        out, _ = read_until_ended(sock, {1})
        assert out[1].startswith(b"Status: 413 ")
        # The front server may still send the body it already read: dropped.
        for _ in range(4):
            send(sock, FCGI_STDIN, 1, b"z" * 60000)
        send(sock, FCGI_STDIN, 1)
        begin(sock, 1)
        params(sock, 1, script_params(responder, "hello.lua", ""))
        out, _ = read_until_ended(sock, {1})
        assert out[1].endswith(b"hello from GET\n")


def test_flow_control_bounds_what_waits_for_a_slow_reader(responder: Responder) -> None:
    """A reader that stalls: the script's flushes wait, the buffer stays bounded."""
    chunk = 65536
    total = 300 * chunk  # ~20 MB
    with connect(responder) as sock:
        begin(sock, 1)
        params(sock, 1, script_params(responder, "flood.lua", ""))
        time.sleep(1.0)  # read nothing for a while
        buffered = [
            conn.transport.get_write_buffer_size()
            for conn in list(responder.server.connections)
            if conn.transport is not None
        ]
        high = responder.server.config.write_buffer_high
        assert buffered, "the connection should be open"
        assert max(buffered) <= high + 2 * chunk, buffered
        out, _ = read_until_ended(sock, {1})
    assert out[1].endswith(b"x" * 1000)
    assert len(out[1].partition(b"\r\n\r\n")[2]) == total


def test_unix_socket_mode_and_stale_socket_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    first = bind_unix(path, 0o600)
    first.close()  # leaves a stale socket file behind, as a crash would
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    second = bind_unix(path, 0o640)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    finally:
        second.close()
    regular = tmp_path / "not-a-socket"
    regular.write_text("keep me")
    with pytest.raises(OSError):
        bind_unix(str(regular), 0o600)
    assert regular.read_text() == "keep me"


def test_memory_is_trimmed_once_idle_after_a_burst(
    responder: Responder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcgi_lua.server as server_module

    trims: list[int] = []
    monkeypatch.setattr(server_module, "_malloc_trim", lambda pad: trims.append(pad) or 1)
    monkeypatch.setattr(server_module, "TRIM_IDLE_SECONDS", 0.1)
    ids = set(range(1, server_module.TRIM_AFTER_PEAK + 20))
    with connect(responder) as sock:
        for request_id in ids:
            begin(sock, request_id)
            params(sock, request_id, script_params(responder, "sleep.lua", "t=0.3&id=x"))
        out, _ = read_until_ended(sock, set(ids))
        assert all(body.endswith(b"slept x\n") for body in out.values())
        assert trims == []  # not while busy
        time.sleep(0.5)
    assert trims == [0]


def test_late_stdin_after_our_close_does_not_reset_the_response(responder: Responder) -> None:
    """libfcgi's cgi-fcgi may send its empty STDIN after our END_REQUEST;
    closing with those bytes unread would RST the connection and drop the
    response the client had not read yet."""
    with connect(responder) as sock:
        begin(sock, 1, keep_conn=False)
        data = b"".join(
            encode_pair(k.encode(), v.encode())
            for k, v in script_params(responder, "big.lua", "").items()
        )
        send(sock, FCGI_PARAMS, 1, data)
        send(sock, FCGI_PARAMS, 1)
        time.sleep(0.3)  # the response is written and our side is done
        send(sock, FCGI_STDIN, 1)
        time.sleep(0.3)
        out, _ = read_until_ended(sock, {1})
        assert out[1].endswith(b"x" * 200000)
        assert sock.recv(10) == b""  # then an orderly close


def _server_side(responder: Responder, sock: socket.socket) -> list[object]:
    """The server's connections whose peer is ``sock`` (open or lingering)."""
    host, port = sock.getsockname()[:2]
    return [conn for conn in list(responder.server.connections) if conn.peer == f"{host}:{port}"]


def test_a_connection_whose_input_all_came_closes_at_once(responder: Responder) -> None:
    """nginx without fastcgi_keep_conn: once the request's STDIN ended
    nothing more can come, so the connection closes right after
    END_REQUEST (its FIN with it) instead of lingering for the peer's EOF
    (a read and a timer per connection), even while the peer holds its
    side open."""
    with connect(responder) as sock:
        # The whole request in one segment, as nginx writes it: the empty
        # STDIN is read before the answer is done.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        begin(sock, 1, keep_conn=False)
        params(sock, 1, script_params(responder, "hello.lua", ""))  # then the empty STDIN
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        out, _ = read_until_ended(sock, {1})
        assert out[1].endswith(b"hello from GET\n")
        assert sock.recv(10) == b""  # our FIN came with the answer
        deadline = time.monotonic() + 0.5
        while _server_side(responder, sock) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _server_side(responder, sock) == []  # closed, not lingering (2 s)


def test_a_connection_whose_input_may_go_on_still_lingers(responder: Responder) -> None:
    """A request answered before its STDIN ended (here: none sent yet, as
    with Monkey's bodyless requests or libfcgi's late empty STDIN): bytes
    may still come, and closing would reset the connection, so it lingers."""
    with connect(responder) as sock:
        begin(sock, 1, keep_conn=False)
        pairs = script_params(responder, "hello.lua", "").items()
        send(sock, FCGI_PARAMS, 1, b"".join(encode_pair(k.encode(), v.encode()) for k, v in pairs))
        send(sock, FCGI_PARAMS, 1)  # and no STDIN (yet)
        out, _ = read_until_ended(sock, {1})
        assert out[1].endswith(b"hello from GET\n")
        assert sock.recv(10) == b""  # the FIN: our side is done
        time.sleep(0.3)
        assert len(_server_side(responder, sock)) == 1  # lingering for our EOF
        send(sock, FCGI_STDIN, 1)  # late, and dropped
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 1.0
        while _server_side(responder, sock) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _server_side(responder, sock) == []  # our EOF ended the linger
