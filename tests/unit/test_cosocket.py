"""Cosockets (ngx.socket.*) against loopback peers started by each test:
receive patterns, receiveuntil iterators, timeouts, pools, errors, UDP,
TLS, and the socket's lifetime being its request's."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fcgi_lua.lua import LuaEngine
from tests.helpers.lua import FakeRequest, MemorySink, make_params, parse

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Peer:
    """A loopback TCP server whose connections ``handler`` serves."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.closed = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Peer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                self.closed += 1

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        # let the handlers see their clients go (pooled ones are closed by
        # the test), so none is cancelled mid-way
        for _ in range(100):
            if self.closed == self.accepted:
                break
            await asyncio.sleep(0.01)


async def echo_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()


async def echo_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await echo_lines(reader, writer)
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def sends(data: bytes, then_close: bool = True, delay: float = 0.0) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if delay:
            await asyncio.sleep(delay)
        writer.write(data)
        await writer.drain()
        if not then_close:
            await reader.read()  # until the client closes

    return handler


async def run(engine: LuaEngine, tmp_path: Path, src: str, query: str = "") -> str:
    path = tmp_path / "t.lua"
    path.write_text(src)
    sink = MemorySink()
    await engine.run(FakeRequest(str(path), make_params(query=query.encode())), sink)
    res = parse(sink.chunks)
    assert res.status == 200, res.body.decode()
    return res.body.decode()


def go(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


@pytest.fixture
def engine() -> LuaEngine:
    return LuaEngine(debug=True)


# -- receive -----------------------------------------------------------------------------


def test_receive_patterns(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local sock = ngx.socket.tcp()
assert(sock:connect("127.0.0.1", tonumber(ngx.var.arg_port)))
ngx.say(sock:receive())
ngx.say(sock:receive("*l"))
ngx.say(sock:receive())
ngx.say(sock:receive(5))
ngx.say(sock:receive("3"))
ngx.say(sock:receive(0) == "")
ngx.say(sock:receive("*a"))
local a, b, c = sock:receive()
ngx.say(select("#", sock:receive()), " ", tostring(a), " ", b, " [", c, "]")
ngx.say(sock:close())
"""

    async def main() -> str:
        data = b"line1\r\nline2\nab\rc\n12345678rest\nof it"
        async with Peer(sends(data)) as peer:
            return await run(engine, tmp_path, src, f"port={peer.port}")

    assert go(main()) == ("line1\nline2\nabc\n12345\n678\ntrue\nrest\nof it\n2 nil closed []\n1\n")


def test_receive_size_across_packets_and_closed_partial(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local sock = ngx.socket.tcp()
assert(sock:connect("127.0.0.1", tonumber(ngx.var.arg_port)))
ngx.say(sock:receive(6))
local data, err, partial = sock:receive(10)
ngx.say(tostring(data), " ", err, " [", partial, "]")
ngx.say(select(2, sock:receive()))
ngx.say(sock:send("still writable\\n"))
"""

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in (b"ab", b"cd", b"efgh"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write_eof()
        await reader.read()

    async def main() -> str:
        async with Peer(slow) as peer:
            return await run(engine, tmp_path, src, f"port={peer.port}")

    assert go(main()) == "abcdef\nnil closed [gh]\nclosed\n15\n"


def test_receive_bad_arguments(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local sock = ngx.socket.tcp()
assert(sock:connect("127.0.0.1", tonumber(ngx.var.arg_port)))
for _, p in ipairs({ "*x", "abc", -1 }) do
    ngx.say(select(2, pcall(sock.receive, sock, p)))
end
ngx.say(select(2, pcall(sock.receive, sock, {})))
sock:close()
ngx.say(sock:receive())
"""

    async def main() -> str:
        async with Peer(echo_lines) as peer:
            return await run(engine, tmp_path, src, f"port={peer.port}")

    out = go(main()).splitlines()
    assert out[0].endswith("bad argument #1 to 'receive' (bad pattern argument)")
    assert out[1].endswith("bad argument #1 to 'receive' (bad pattern argument: abc)")
    assert out[2].endswith("bad argument #1 to 'receive' (bad number argument)")
    assert out[3].endswith("bad argument #1 to 'receive' (bad argument)")
    assert out[4] == "nilclosed"


# -- receiveuntil ------------------------------------------------------------------------------

UNTIL_SRC = """
local sock = ngx.socket.tcp()
assert(sock:connect("127.0.0.1", tonumber(ngx.var.arg_port)))
local pattern = ngx.unescape_uri(ngx.var.arg_pat)
local reader = sock:receiveuntil(pattern, { inclusive = ngx.var.arg_inc == "1" })
local size = tonumber(ngx.var.arg_size)
for i = 1, tonumber(ngx.var.arg_n) do
    local data, err, partial
    if size then
        data, err, partial = reader(size)
    else
        data, err, partial = reader() -- reader(nil) is an error, as in OpenResty
    end
    if data then
        ngx.say("read: ", data)
    else
        ngx.say("failed: ", tostring(err), " [", tostring(partial), "]")
    end
end
"""


@pytest.mark.parametrize(
    ("data", "query", "expected"),
    [
        # the README's examples
        (
            b"hello, world! -agentzh\r\n--abcedhb blah blah",
            "pat=%0D%0A--abcedhb&n=1",
            "read: hello, world! -agentzh\n",
        ),
        (
            b"hello, world! -agentzh\r\n--abcedhb blah blah",
            "pat=%0D%0A--abcedhb&n=8&size=4",
            "read: hell\nread: o, w\nread: orld\nread: ! -a\nread: gent\nread: zh\n"
            "failed: nil [nil]\nread:  bla\n",
        ),
        (b"hello world _END_ blah", "pat=_END_&n=1&inc=1", "read: hello world _END_\n"),
        # lua-nginx-module t/066-socket-receiveuntil.t, tests 4 to 7 and 15
        (b"abcabcabd\n", "pat=abcabd&n=2", "read: abc\nfailed: closed [\n]\n"),
        (b"abcabcaad\n", "pat=aa&n=2", "read: abcabc\nfailed: closed [d\n]\n"),
        (b"abaabcaaaef\n", "pat=aaa&n=2", "read: abaabc\nfailed: closed [ef\n]\n"),
        (b"baaaaaaaaeaaaaaaadf\n", "pat=aaaaad&n=2", "read: baaaaaaaaeaa\nfailed: closed [f\n]\n"),
        (
            b"hello, world ----abc\n",
            "pat=--abc&n=6&size=4",
            "read: hell\nread: o, w\nread: orld\nread:  --\nfailed: nil [nil]\n"
            "failed: closed [\n]\n",
        ),
        # sized, exact multiple: an empty last chunk, then the end
        (b"abcd--x", "pat=--x&n=3&size=4", "read: abcd\nread: \nfailed: nil [nil]\n"),
        (b"ab--x", "pat=--x&n=2&size=4&inc=1", "read: ab--x\nfailed: nil [nil]\n"),
    ],
)
def test_receiveuntil(
    engine: LuaEngine, tmp_path: Path, data: bytes, query: str, expected: str
) -> None:
    async def main() -> str:
        async with Peer(sends(data)) as peer:
            return await run(engine, tmp_path, UNTIL_SRC, f"port={peer.port}&{query}")

    assert go(main()) == expected


def test_receiveuntil_pattern_split_across_packets(engine: LuaEngine, tmp_path: Path) -> None:
    async def pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in (b"abc-", b"-", b"xy--", b"-x", b"z"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)

    async def main() -> str:
        async with Peer(pieces) as peer:
            return await run(engine, tmp_path, UNTIL_SRC, f"port={peer.port}&pat=--x&n=2")

    assert go(main()) == "read: abc\nread: y-\n"


# -- timeouts ----------------------------------------------------------------------------


def test_read_timeout_keeps_the_socket(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local sock = ngx.socket.tcp()
sock:settimeout(50)
assert(sock:connect("127.0.0.1", tonumber(ngx.var.arg_port)))
local t0 = ngx.now()
local line, err, partial = sock:receive()
ngx.update_time()
ngx.say(tostring(line), " ", err, " [", partial, "] ", ngx.now() - t0 < 0.5)
sock:settimeouts(1000, 1000, 1000)
ngx.say(sock:receive())
ngx.say(sock:close())
"""

    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"par")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"late\n")
        await writer.drain()
        await reader.read()

    async def main() -> str:
        async with Peer(late) as peer:
            return await run(engine, tmp_path, src, f"port={peer.port}")

    assert go(main()) == "nil timeout [par] true\nlate\n1\n"


def test_two_threads_reading_one_socket(engine: LuaEngine, tmp_path: Path) -> None:
    """OpenResty's cosockets are full duplex: one reader (and one writer) at
    a time; a second reader gets "socket busy reading" while the first
    waits, and killing a waiting reader closes the socket (as OpenResty
    does: tests/e2e/test_e2e_threads.py compares)."""
    src = """
local sock = ngx.socket.tcp()
assert(sock:connect("127.0.0.1", tonumber(ngx.var.arg_port)))
local reader = ngx.thread.spawn(function() return sock:receive() end)
ngx.say("second: ", select(2, sock:receive()))
local it = sock:receiveuntil("x")
ngx.say("until: ", select(2, it()))
ngx.say("first: ", select(2, ngx.thread.wait(reader)))
local doomed = ngx.thread.spawn(function() return sock:receive(100) end)
ngx.say("kill: ", ngx.thread.kill(doomed))
ngx.say("after the kill: ", sock:receive())
"""

    async def main() -> str:
        async with Peer(sends(b"one\ntwo\n", then_close=False, delay=0.05)) as peer:
            return await run(engine, tmp_path, src, f"port={peer.port}")

    assert go(main()) == (
        "second: socket busy reading\nuntil: socket busy reading\nfirst: one\n"
        "kill: 1\nafter the kill: nilclosed\n"
    )


def test_full_duplex_a_blocked_send_and_a_read_in_two_threads(
    engine: LuaEngine, tmp_path: Path
) -> None:
    """A send that must wait for the peer to drain, while another light
    thread waits to read: each gets its own result."""
    src = """
local sock = ngx.socket.tcp()
sock:settimeout(5000)
assert(sock:connect("127.0.0.1", tonumber(ngx.var.arg_port)))
local reader = ngx.thread.spawn(function() return sock:receive() end)
local payload = string.rep("x", 8 * 1024 * 1024) .. "\\n"
ngx.say("sent: ", sock:send(payload))
ngx.say("read: ", select(2, ngx.thread.wait(reader)))
"""

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.2)  # let the client's send block
        line = await reader.readexactly(8 * 1024 * 1024 + 1)
        writer.write(b"got %d\n" % len(line))
        await writer.drain()
        await reader.read()

    async def main() -> str:
        async with Peer(slow_reader) as peer:
            return await run(engine, tmp_path, src, f"port={peer.port}")

    assert go(main()) == f"sent: {8 * 1024 * 1024 + 1}\nread: got {8 * 1024 * 1024 + 1}\n"


def test_connect_timeout_and_bad_timeouts(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local sock = ngx.socket.tcp()
ngx.say(select(2, pcall(sock.settimeout, sock, -1)))
sock:settimeout(30)
-- 192.0.2.1 (TEST-NET-1) never answers
local t0 = ngx.now()
ngx.say(sock:connect("192.0.2.1", 80))
ngx.update_time()
ngx.say(ngx.now() - t0 < 1)
"""
    out = go(run(engine, tmp_path, src)).splitlines()
    assert out[0].endswith("bad timeout value")
    # "timeout"; sandboxes without a route refuse or fail at once
    assert out[1].startswith("nil"), out[1]
    assert out[2] == "true"


# -- connect, send, errors ------------------------------------------------------------------


def test_connect_errors(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local sock = ngx.socket.tcp()
ngx.say(sock:connect("127.0.0.1", tonumber(ngx.var.arg_closed)))
ngx.say(sock:connect("unix:/nonexistent/x.sock"))
ngx.say(sock:connect("127.0.0.1"))
ngx.say(sock:connect("127.0.0.1", 70000))
ngx.say(sock:connect("", 80))
ngx.say(sock:connect("no such host", 80))
ngx.say(sock:connect("does-not-exist.invalid", 80))
ngx.say(sock:send("x"))
ngx.say(sock:close())
ngx.say(ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_closed)))
ngx.say(select(2, pcall(sock.connect, sock)))
"""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    out = go(run(engine, tmp_path, src, f"closed={closed}")).splitlines()
    assert out[:10] == [
        "nilconnection refused",
        "nilno such file or directory",
        "nilmissing the port number",
        "nilbad port number: 70000",
        'nilfailed to parse host name "": no host',
        'nilfailed to parse host name "no such host": invalid host',
        "nildoes-not-exist.invalid could not be resolved (3: Host not found)",
        "nilclosed",
        "nilclosed",
        "nilconnection refused",
    ]
    assert out[10].endswith(
        "ngx.socket connect: expecting 2, 3, or 4 arguments (including the object), but seen 1"
    )


def test_send_strings_numbers_nested_tables(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local sock = assert(ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_port)))
ngx.say(sock:send({ "a", 1, { "b", { 2.5, "c" } }, "\\n" }))
ngx.say(sock:receive())
ngx.say(sock:send(42), sock:send("\\n"), sock:receive())
ngx.say(sock:send(""))
ngx.say(select(2, pcall(sock.send, sock, { a = 1 })))
ngx.say(select(2, pcall(sock.send, sock, { true })))
ngx.say(select(2, pcall(sock.send, sock, print)))
sock:close()
"""

    async def main() -> str:
        async with Peer(echo_lines) as peer:
            return await run(engine, tmp_path, src, f"port={peer.port}")

    out = go(main()).splitlines()
    assert out[:4] == ["8", "a1b2.5c", "2142", "0"]
    assert out[4].endswith("bad argument #1 to 'send' (non-array table found)")
    assert out[5].endswith("bad argument #1 to 'send' (bad data type boolean found)")
    assert out[6].endswith("(string, number, boolean, nil, or array table expected, got function)")


def test_held_sends_keep_their_order_and_survive_close(engine: LuaEngine, tmp_path: Path) -> None:
    # send() holds bytes until the loop iteration ends (below 64 KiB a
    # connection): many small sends and a large one arrive whole and in
    # order, and a close right after a send still delivers it
    src = """
local sock = assert(ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_port)))
for i = 1, 1000 do sock:send("x") end
sock:send("\\n")
ngx.say(#sock:receive())
ngx.say(sock:send(string.rep("y", 100000) .. "\\n"), " ", #sock:receive())
local other = assert(ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_port)))
other:send("last words\\n")
ngx.say(other:close())
"""
    got: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = b""
        while chunk := await reader.read(65536):  # lines longer than readline's limit
            pending += chunk
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                got.append(line + b"\n")
                writer.write(line + b"\n")
            await writer.drain()

    async def main() -> str:
        async with Peer(record) as peer:
            return await run(engine, tmp_path, src, f"port={peer.port}")

    assert go(main()) == "1000\n100001 100000\n1\n"
    assert got == [b"x" * 1000 + b"\n", b"y" * 100000 + b"\n", b"last words\n"]


def test_unix_socket(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local sock = ngx.socket.tcp()
assert(sock:connect("unix:" .. ngx.var.arg_path))
sock:send("over unix\\n")
ngx.say(sock:receive())
ngx.say(sock:setkeepalive())
local again = ngx.socket.tcp()
assert(again:connect("unix:" .. ngx.var.arg_path))
ngx.say(again:getreusedtimes())
"""

    async def main() -> str:
        path = tmp_path / "peer.sock"
        server = await asyncio.start_unix_server(echo_and_close, str(path))
        try:
            return await run(engine, tmp_path, src, f"path={path}")
        finally:
            engine.cosockets.close_all()
            await asyncio.sleep(0.05)
            server.close()

    assert go(main()) == "over unix\n1\n1\n"


# -- pools -------------------------------------------------------------------------------------


def test_keepalive_pool_reuse_and_cap(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local port = tonumber(ngx.var.arg_port)
local socks = {}
for i = 1, 3 do
    socks[i] = assert(ngx.socket.connect("127.0.0.1", port))
    ngx.print(socks[i]:getreusedtimes(), " ")
end
for i = 1, 3 do
    ngx.print(socks[i]:setkeepalive(0, 2), " ")
end
ngx.say(select(2, socks[1]:getreusedtimes()))
"""

    async def main() -> tuple[str, str, int, int]:
        async with Peer(echo_lines) as peer:
            first = await run(engine, tmp_path, src, f"port={peer.port}")
            await asyncio.sleep(0.05)
            second = await run(engine, tmp_path, src, f"port={peer.port}")
            await asyncio.sleep(0.05)
            engine.cosockets.close_all()
            await asyncio.sleep(0.05)
            return first, second, peer.accepted, peer.closed

    first, second, accepted, closed = go(main())
    assert first == "0 0 0 1 1 1 closed\n"
    # two came back from the pool (size 2), the third is new
    assert second == "1 1 0 1 1 1 closed\n"
    assert accepted == 4
    assert closed == 4


def test_keepalive_idle_timeout_and_unread_data(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local sock = assert(ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_port),
                                       { pool = "p-" .. ngx.var.arg_step }))
ngx.print(sock:getreusedtimes(), " ")
if ngx.var.arg_step == "dirty" then
    sock:send("unread\\n")
    ngx.sleep(0.05)
    ngx.say(sock:setkeepalive())
    return
end
ngx.say(sock:setkeepalive(50))
"""

    async def main() -> list[str]:
        async with Peer(echo_lines) as peer:
            out = [await run(engine, tmp_path, src, f"port={peer.port}&step=idle")]
            await asyncio.sleep(0.2)
            assert peer.closed == 1  # the idle timeout closed it
            out.append(await run(engine, tmp_path, src, f"port={peer.port}&step=idle"))
            out.append(await run(engine, tmp_path, src, f"port={peer.port}&step=dirty"))
            engine.cosockets.close_all()
            return out

    assert go(main()) == ["0 1\n", "0 1\n", "0 nilunread data in buffer\n"]


def test_pool_backlog(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local opts = { pool_size = 1, backlog = tonumber(ngx.var.arg_backlog) }
local sock, err = ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_port), opts)
if not sock then
    ngx.say(err)
    return
end
ngx.sleep(tonumber(ngx.var.arg_hold))
ngx.say("reused ", sock:getreusedtimes(), " ", sock:setkeepalive())
"""

    async def main() -> list[str]:
        async with Peer(echo_lines) as peer:
            q = f"port={peer.port}"
            results = await asyncio.gather(
                run(engine, tmp_path / "a", src, q + "&backlog=1&hold=0.1"),
                run(engine, tmp_path / "b", src, q + "&backlog=1&hold=0"),
                run(engine, tmp_path / "c", src, q + "&backlog=1&hold=0"),
            )
            engine.cosockets.close_all()
            return list(results)

    for d in "abc":
        (tmp_path / d).mkdir()
    first, second, third = go(main())
    assert first == "reused 0 1\n"
    assert second == "reused 1 1\n"  # waited, then got the first one's connection
    assert third == "too many waiting connect operations\n"


# -- a socket's lifetime ------------------------------------------------------------------------


def test_request_end_and_abort_close_sockets(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local sock = assert(ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_port)))
sock:send("hi\\n")
ngx.say(sock:receive())
if ngx.var.arg_wait then
    sock:receive() -- never answered: the request gets cancelled here
end
"""

    async def main() -> tuple[int, int]:
        async with Peer(echo_lines) as peer:
            await run(engine, tmp_path, src, f"port={peer.port}")
            await asyncio.sleep(0.05)
            assert peer.closed == 1
            task = asyncio.ensure_future(run(engine, tmp_path, src, f"port={peer.port}&wait=1"))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)
            return peer.accepted, peer.closed

    assert go(main()) == (2, 2)


def test_a_request_that_never_waits_closes_its_pooled_socket(
    engine: LuaEngine, tmp_path: Path
) -> None:
    # The second request takes the pooled connection (no wait) and ends in
    # its first resume: the driver, not Python, lets go of the socket then.
    src = """
local sock = assert(ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_port)))
ngx.say(sock:getreusedtimes())
if ngx.var.arg_pool then
    assert(sock:setkeepalive())
end
"""

    async def main() -> tuple[str, str, int, int]:
        async with Peer(echo_lines) as peer:
            first = await run(engine, tmp_path, src, f"port={peer.port}&pool=1")
            second = await run(engine, tmp_path, src, f"port={peer.port}")
            await asyncio.sleep(0.05)
            return first, second, peer.accepted, peer.closed

    assert go(main()) == ("0\n", "1\n", 1, 1)


def test_socket_of_another_request(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local stash = package.loaded.stash -- set up by the test: requests share it
if ngx.var.arg_hold then
    stash.sock = assert(ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_port)))
    ngx.sleep(0.1)
    ngx.say(stash.sock:close())
else
    local ok, err = pcall(stash.sock.send, stash.sock, "x")
    ngx.say(ok, " ", err)
end
"""

    engine._lua.execute(b"package.loaded.stash = {}")

    async def main() -> list[str]:
        async with Peer(echo_lines) as peer:
            (tmp_path / "a").mkdir()
            hold = asyncio.ensure_future(
                run(engine, tmp_path / "a", src, f"port={peer.port}&hold=1")
            )
            await asyncio.sleep(0.03)
            use = await run(engine, tmp_path, src, "")
            return [await hold, use]

    held, used = go(main())
    assert held == "1\n"
    assert used.startswith("false ") and used.endswith("bad request\n")


def test_sockets_in_user_coroutines(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local co = coroutine.wrap(function()
    local sock = assert(ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_port)))
    sock:send("from a coroutine\\n")
    coroutine.yield(sock:receive())
    sock:close()
end)
ngx.say(co())
"""

    async def main() -> str:
        async with Peer(echo_lines) as peer:
            return await run(engine, tmp_path, src, f"port={peer.port}")

    assert go(main()) == "from a coroutine\n"


def test_no_request_outside_a_request(engine: LuaEngine) -> None:
    with pytest.raises(Exception, match="no request found"):
        engine._lua.execute(b"ngx.socket.tcp()")


# -- UDP ---------------------------------------------------------------------------------------


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data != b"silence":
            self.transport.sendto(b"echo:" + data, addr)


def test_udp(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local udp = ngx.socket.udp()
ngx.say(udp:send("x"))
ngx.say(udp:setpeername("127.0.0.1", tonumber(ngx.var.arg_port)))
ngx.say(udp:send({ "hel", "lo" }))
ngx.say(udp:receive())
udp:send("abcdef")
ngx.say(udp:receive(7))
udp:settimeout(50)
udp:send("silence")
ngx.say(udp:receive())
ngx.say(udp:close())
ngx.say(udp:close())
"""

    async def main() -> str:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        try:
            port = transport.get_extra_info("sockname")[1]
            return await run(engine, tmp_path, src, f"port={port}")
        finally:
            transport.close()

    assert go(main()) == ("nilclosed\n1\n1\necho:hello\necho:ab\nniltimeout\n1\nnilclosed\n")


# -- TLS ---------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_sslhandshake(engine: LuaEngine, tmp_path: Path) -> None:
    src = """
local sock = assert(ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_port)))
ngx.say(sock:sslhandshake(nil, "localhost", false))
sock:send("over tls\\n")
ngx.say(sock:receive())
ngx.say(sock:setkeepalive())
local again = assert(ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_port)))
again:send("still tls\\n")
ngx.say(again:getreusedtimes(), " ", again:receive())
again:close()
local strict = assert(ngx.socket.connect("127.0.0.1", tonumber(ngx.var.arg_port)))
ngx.say(strict:sslhandshake(nil, "localhost", true))
ngx.say(strict:send("x"))
"""
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def main() -> str:
        server = await asyncio.start_server(echo_and_close, "127.0.0.1", 0, ssl=context)
        try:
            port = server.sockets[0].getsockname()[1]
            return await run(engine, tmp_path, src, f"port={port}")
        finally:
            engine.cosockets.close_all()
            await asyncio.sleep(0.05)
            server.close()

    out = go(main()).splitlines()
    assert out[:4] == ["true", "over tls", "1", "1 still tls"]
    assert out[4].startswith("nil18: ") or out[4].startswith("nil19: "), out[4]
    assert out[5] == "nilclosed"
