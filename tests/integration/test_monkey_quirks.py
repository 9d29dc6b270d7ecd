"""What fcgi-lua does about Monkey 1.6's FastCGI plugin (docs/monkey.md).

The byte streams here are shaped the way Monkey 1.6.9 writes them (seen on
the wire against a real Monkey): flags=0 (no keep-conn), one PARAMS record
per param, each padded to 8 bytes, no STDIN record at all for a bodyless
request, REQUEST_URI without the query string, no QUERY_STRING when it is
empty, no DOCUMENT_URI nor PATH_INFO, a repeated header as repeated HTTP_*
params.  The real-Monkey run is tests/e2e/test_e2e_monkey.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
from pathlib import Path

from fcgi_lua.config import load
from fcgi_lua.lua import LuaEngine
from fcgi_lua.protocol import FastCGIProtocol
from fcgi_lua.quirks import from_monkey, monkey_params, send_with_fin, without_content_length
from fcgi_lua.server import Server
from tests.helpers.fastcgi import BEGIN, PARAMS, STDIN, pairs, record, stream
from tests.helpers.server import FakeTransport

# -- the pure parts ---------------------------------------------------------


def test_content_length_lines_leave_the_header_block_only() -> None:
    response = (
        b"Status: 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 5\r\n"
        b"X-A: 1\r\n\r\nContent-Length: 9 is body text"
    )
    assert without_content_length(response) == (
        b"Status: 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\n"
        b"Content-Length: 9 is body text"
    )


def test_response_without_content_length_is_unchanged() -> None:
    response = b"Status: 302 Found\r\nLocation: /x\r\n\r\n"
    assert without_content_length(response) is response
    assert without_content_length(b"no header block yet") == b"no header block yet"


def test_a_block_of_only_content_length_becomes_empty() -> None:
    assert without_content_length(b"Content-Length: 2\r\n\r\nhi") == b"\r\nhi"


def test_monkey_is_recognised_by_server_software() -> None:
    assert from_monkey({b"SERVER_SOFTWARE": b"Monkey/1.6.9"})
    assert from_monkey({b"SERVER_SOFTWARE": b"Monkey"})  # HideVersion On
    assert not from_monkey({b"SERVER_SOFTWARE": b"nginx/1.22.1"})
    assert not from_monkey({})


def test_monkey_params_get_the_query_and_document_uri() -> None:
    params = [
        (b"SCRIPT_NAME", b"/a b/x.lua"),
        (b"REQUEST_URI", b"/a%20b/x.lua"),
        (b"QUERY_STRING", b"q=1&r=%20"),
        (b"HTTP_X_DUP", b"1"),
        (b"HTTP_X_DUP", b"2"),
    ]
    assert monkey_params(params) == [
        (b"SCRIPT_NAME", b"/a b/x.lua"),
        (b"REQUEST_URI", b"/a%20b/x.lua?q=1&r=%20"),
        (b"QUERY_STRING", b"q=1&r=%20"),
        (b"HTTP_X_DUP", b"1"),
        (b"HTTP_X_DUP", b"2"),
        (b"DOCUMENT_URI", b"/a b/x.lua"),
    ]


def test_monkey_params_without_query_get_an_empty_query_string() -> None:
    params = [(b"SCRIPT_NAME", b"/x.lua"), (b"REQUEST_URI", b"/x.lua")]
    assert monkey_params(params) == [
        (b"SCRIPT_NAME", b"/x.lua"),
        (b"REQUEST_URI", b"/x.lua"),
        (b"QUERY_STRING", b""),
        (b"DOCUMENT_URI", b"/x.lua"),
    ]


def test_monkey_params_leave_what_is_already_right() -> None:
    # A future Monkey (or a proxy in between) that sends them: untouched.
    params = [
        (b"SCRIPT_NAME", b"/x.lua"),
        (b"REQUEST_URI", b"/x.lua?a=1"),
        (b"QUERY_STRING", b"a=1"),
        (b"DOCUMENT_URI", b"/x.lua"),
    ]
    assert monkey_params(params) == params


# -- through the server, with Monkey's bytes ----------------------------------


def padded(rtype: int, content: bytes = b"") -> bytes:
    """One record padded to 8 bytes, as Monkey sends every record."""
    return record(rtype, 1, content, -len(content) % 8)


def monkey_request(params: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    """BEGIN_REQUEST with flags=0, one padded PARAMS record per param, and
    STDIN only when there is a body (then padded records and the empty one)."""
    out = [padded(BEGIN, struct.pack(">HB5x", 1, 0))]
    out.extend(padded(PARAMS, pairs([param])) for param in params)
    out.append(padded(PARAMS))
    if body:
        out.append(stream(STDIN, 1, body, aligned=True))
    return b"".join(out)


def params_for(script: Path, server_software: bytes, **extra: bytes) -> list[tuple[bytes, bytes]]:
    params = [
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"SERVER_SOFTWARE", server_software),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"DOCUMENT_ROOT", str(script.parent).encode()),
        (b"SCRIPT_FILENAME", str(script).encode()),
        (b"SCRIPT_NAME", b"/" + script.name.encode()),
        (b"REQUEST_METHOD", extra.pop("method", b"GET")),
        (b"REQUEST_URI", b"/" + script.name.encode()),
    ]
    params.extend((name.encode(), value) for name, value in extra.items())
    return params


def serve(
    tmp_path: Path, source: str, params: list[tuple[bytes, bytes]], body: bytes = b""
) -> bytes:
    """The STDOUT bytes fcgi-lua answers to ``monkey_request(params, body)``."""
    script = tmp_path / "t.lua"
    # a buffer large enough that an upload stays in memory (get_body_data)
    config = load(None, {"root": str(tmp_path), "client_body_buffer_size": "1m"})
    protocol = FastCGIProtocol(Server(config, LuaEngine()))
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    script.write_text(source)

    async def scenario() -> None:
        protocol.data_received(monkey_request(params, body))
        for _ in range(200):
            if transport.closed:
                return
            await asyncio.sleep(0.005)
        raise AssertionError("no END_REQUEST / close")

    asyncio.run(scenario())
    data = b"".join(transport.out)
    stdout = []
    while data:
        _, rtype, _, length, padding = struct.unpack(">BBHHBx", data[:8])
        # Monkey mis-parses padding that arrives in a later read: we send none.
        assert padding == 0
        if rtype == 6:
            stdout.append(data[8 : 8 + length])
        data = data[8 + length + padding :]
    return b"".join(stdout)


VARS = 'ngx.say(ngx.var.request_uri, " ", ngx.var.uri, " ", tostring(ngx.var.args))'


def test_behind_monkey_no_content_length_and_nginx_like_vars(tmp_path: Path) -> None:
    params = params_for(tmp_path / "t.lua", b"Monkey/1.6.9", QUERY_STRING=b"a=1")
    out = serve(tmp_path, VARS, params)
    assert out == b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n/t.lua?a=1 /t.lua a=1\n"


def test_behind_another_front_content_length_stays(tmp_path: Path) -> None:
    params = params_for(tmp_path / "t.lua", b"nginx/1.22.1", QUERY_STRING=b"a=1")
    out = serve(tmp_path, VARS, params)
    assert b"Content-Length: " in out
    assert out.endswith(b"/t.lua a=1\n")  # REQUEST_URI as that front sent it


def test_bodyless_request_needs_no_stdin_record(tmp_path: Path) -> None:
    source = 'ngx.req.read_body() ngx.say("body=", tostring(ngx.req.get_body_data()))'
    params = params_for(tmp_path / "t.lua", b"Monkey/1.6.9", method=b"POST", CONTENT_LENGTH=b"0")
    assert serve(tmp_path, source, params).endswith(b"\r\n\r\nbody=nil\n")


def test_padded_stdin_records_of_an_upload(tmp_path: Path) -> None:
    body = bytes(range(256)) * 700  # 179200 bytes: three STDIN records, padded
    source = "ngx.req.read_body() local b = ngx.req.get_body_data() ngx.say(#b, ' ', ngx.md5(b))"
    params = params_for(
        tmp_path / "t.lua",
        b"Monkey/1.6.9",
        method=b"POST",
        CONTENT_LENGTH=str(len(body)).encode(),
        CONTENT_TYPE=b"application/octet-stream",
    )
    out = serve(tmp_path, source, params, body)
    assert out.endswith(b"179200 " + hashlib.md5(body).hexdigest().encode() + b"\n")


def test_head_behind_monkey_gets_the_header_block_only(tmp_path: Path) -> None:
    params = params_for(tmp_path / "t.lua", b"Monkey", method=b"HEAD")
    out = serve(tmp_path, 'ngx.header["X-A"] = "1" ngx.say("body")', params)
    assert out == b"Status: 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\n"


def test_error_pages_behind_monkey_lose_content_length_too(tmp_path: Path) -> None:
    params = params_for(tmp_path / "missing.lua", b"Monkey/1.6.9")
    out = serve(tmp_path, "", params)
    assert out.startswith(b"Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\n<html>")


def test_repeated_headers_arrive_as_a_table(tmp_path: Path) -> None:
    source = 'ngx.say(table.concat(ngx.req.get_headers()["x-dup"], "|"))'
    params = params_for(tmp_path / "t.lua", b"Monkey/1.6.9")
    params += [(b"HTTP_X_DUP", b"1"), (b"HTTP_X_DUP", b"2")]
    assert serve(tmp_path, source, params).endswith(b"\r\n\r\n1|2\n")


# -- the last record and the FIN leave together (quirks.send_with_fin) -------


def send_with_fin_over(family: int) -> tuple[bool, bytes]:
    if family == socket.AF_UNIX:
        ours, peer = socket.socketpair()
    else:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            peer = socket.create_connection(listener.getsockname())
            ours, _ = listener.accept()

    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        done = send_with_fin(transport, b"END_REQUEST")  # type: ignore[arg-type]
        transport.close()
        return done

    try:
        done = asyncio.run(scenario())
        peer.settimeout(5)
        received = b""
        while chunk := peer.recv(100):
            received += chunk
        return done, received  # recv returned b"": the FIN came
    finally:
        peer.close()


def test_last_bytes_and_fin_leave_together_over_tcp() -> None:
    assert send_with_fin_over(socket.AF_INET) == (True, b"END_REQUEST")


def test_last_bytes_and_fin_leave_together_over_a_unix_socket() -> None:
    assert send_with_fin_over(socket.AF_UNIX) == (True, b"END_REQUEST")


def monkey_param_record(name: bytes, value: bytes) -> bytes:
    """A PARAMS record exactly as Monkey 1.6.9 encodes it, bug included: a
    length of 127 is written in 4 bytes but counted as 1."""

    def counted(n: int) -> int:
        return 4 if n > 127 else 1

    def written(n: int) -> bytes:
        return bytes([n]) if n < 127 else struct.pack(">I", n | 0x80000000)

    length = len(name) + len(value) + counted(len(name)) + counted(len(value))
    padding = -length % 8
    header = struct.pack(">BBHHBx", 1, 4, 1, length, padding)
    return header + written(len(name)) + written(len(value)) + name + value + b"\0" * padding


def test_monkeys_miscounted_127_byte_param_gets_a_400(tmp_path: Path) -> None:
    # Without an answer Monkey leaves its client waiting ~25 s for nothing.
    script = tmp_path / "t.lua"
    data = padded(BEGIN, struct.pack(">HB5x", 1, 0))
    for name, value in params_for(script, b"Monkey/1.6.9"):
        data += monkey_param_record(name, value)
    data += monkey_param_record(b"HTTP_USER_AGENT", b"u" * 127) + padded(PARAMS)
    config = load(None, {"root": str(tmp_path)})
    protocol = FastCGIProtocol(Server(config, LuaEngine()))
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    script.write_text("ngx.say('never runs')")

    async def scenario() -> None:
        protocol.data_received(data)
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    out = b"".join(transport.out)
    assert out.startswith(b"\x01\x06\x00\x01")  # STDOUT for request 1
    assert b"Status: 400 Bad Request\r\n" in out and b"Content-Length" not in out
    assert out.endswith(struct.pack(">BBHHBx", 1, 3, 1, 8, 0) + bytes(8))  # END_REQUEST
    assert transport.closed
