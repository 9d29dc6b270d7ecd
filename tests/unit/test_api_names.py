"""The names OpenResty (lua-nginx-module 0.10.23 with Debian's lua-resty-core)
has in its API tables, as t/062-count.t counts them, and what they do here:
ngx, ndk, ngx.socket, ngx.config, coroutine, the socket and shared dict
metatables, the slots of a socket object; calls with a bad self
(t/083-bad-sock-self.t) and setclientcert's refusals (t/162)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fcgi_lua.lua import LuaEngine
from fcgi_lua.shdict import SharedDicts, prepare
from tests.helpers.lua import FakeRequest, MemorySink, make_params, parse, run_script

KEYS = """
local function keys(t)
    local ks = {}
    for k in pairs(t) do ks[#ks + 1] = tostring(k) end
    table.sort(ks)
    return table.concat(ks, " ")
end
"""

# what `for k in pairs(X)` lists under Debian's nginx + libnginx-mod-http-lua
OPENRESTY = {
    "ngx.socket": "connect stream tcp udp",
    "ngx.config": "debug nginx_configure nginx_version ngx_lua_version prefix subsystem",
    "coroutine": "__create __resume __status __wrap __yield _create _resume _status _wrap"
    " _yield create resume running status wrap yield",
    "getmetatable(ngx.socket.tcp())": "__index bind close connect getoption getreusedtimes"
    " receive receiveany receiveuntil send setclientcert setkeepalive setoption settimeout"
    " settimeouts sslhandshake",
    "getmetatable(ngx.socket.udp())": "__index close receive send setpeername settimeout",
    "ndk": "set_var",
}


@pytest.mark.parametrize("expr", sorted(OPENRESTY))
def test_names_as_openresty(tmp_path: Path, expr: str) -> None:
    res = run_script(tmp_path, KEYS + f"ngx.print(keys({expr}))")
    assert res.status == 200, res.body
    assert res.body.decode() == OPENRESTY[expr]


def test_ngx_names(tmp_path: Path) -> None:
    src = (
        KEYS
        + """
    local n = 0
    for _ in pairs(ngx) do n = n + 1 end
    ngx.say(n, " ", rawget(ngx, "is_subrequest") == nil, " ", tostring(ngx.is_subrequest))
    ngx.say(ngx.get_raw_phase(), " ", ngx._phase_ctx())
    ngx.say(ngx.run_worker_thread("p", "m", "f"))
    ngx.say(ngx.run_worker_thread("p"))
    ngx.say(type(ngx.arg), " ", pcall(function() return ngx.arg[1] end))
    ngx.say(pcall(function() ngx.arg[1] = 1 end))
    """
    )
    res = run_script(tmp_path, src)
    assert res.status == 200, res.body
    lines = res.body.decode().splitlines()
    assert lines[0] == "116 true false"
    assert lines[1] == "8 8"
    assert lines[2] == "falsethread pool p not found"
    assert lines[3] == "falseexpecting at least 3 arguments"
    assert lines[4].startswith("table false") and "API disabled in the current context" in lines[4]
    assert (
        lines[5].startswith("false")
        and "API disabled in the context of content_by_lua*" in (lines[5])
    )


def test_ndk_set_var(tmp_path: Path) -> None:
    src = """
    ngx.say(pcall(function() return ndk.set_var.set_quote_sql_str("a") end))
    ngx.say(pcall(function() ndk.set_var.x = 1 end))
    """
    res = run_script(tmp_path, src)
    lines = res.body.decode().splitlines()
    assert lines[0].endswith(
        'ndk.set_var: directive "set_quote_sql_str" not found or does not use ndk_set_var_value'
    )
    assert lines[1].startswith("false") and lines[1].endswith("not allowed")


def test_coroutine_aliases_are_the_request_aware_ones(tmp_path: Path) -> None:
    src = """
    local co = coroutine._create(function(a) ngx.sleep(0.001) return a * 2 end)
    ngx.say(coroutine.__resume(co, 21))
    ngx.say(coroutine._status(co), " ", tostring(coroutine.isyieldable))
    -- pairs gives the values a request reads (the guarded resume)
    for k, v in pairs(coroutine) do
        if k == "resume" then ngx.say(v == coroutine.resume) end
    end
    """
    res = run_script(tmp_path, src)
    assert res.status == 200, res.body
    lines = res.body.decode().splitlines()
    assert lines == ["true42", "dead nil", "true"]


def test_shdict_metatable(tmp_path: Path) -> None:
    zones = {"dogs": 1 << 20}
    prepare(str(tmp_path / "shd"), zones)
    store = SharedDicts(str(tmp_path / "shd"), zones)
    try:
        src = (
            KEYS
            + """
        local dogs = ngx.shared.dogs
        ngx.say(keys(dogs.__index))
        ngx.say(pcall(function() dogs.x = 1 end))
        ngx.say(tostring(getmetatable(dogs)))
        dogs:set("a", 1)
        ngx.say(dogs:get("a"))
        """
        )
        res = run_script(tmp_path, src, engine=LuaEngine(shared_dicts=store))
    finally:
        store.close()
    lines = res.body.decode().splitlines()
    assert lines[0] == (
        "__index add capacity delete expire flush_all flush_expired free_space get get_keys"
        " get_stale incr llen lpop lpush replace rpop rpush safe_add safe_set set ttl"
    )
    assert lines[1].startswith("false") and "read-only" in lines[1]
    assert lines[2:] == ["false", "1"]


def test_req_socket_shape(tmp_path: Path) -> None:
    src = (
        KEYS
        + """
    local sock = assert(ngx.req.socket())
    ngx.say(keys(getmetatable(sock)))
    sock:settimeouts(1000, 2000, 3000)
    local narr, n = 0, 0
    for _ in ipairs(sock) do narr = narr + 1 end
    for _ in pairs(sock) do n = n + 1 end
    ngx.say(narr, " ", n)
    ngx.say(sock:receiveany(5), " ", sock:receive("*a"))
    """
    )
    params = make_params(method=b"POST", extra=[(b"CONTENT_LENGTH", b"11")])
    res = run_script(tmp_path, src, params=params, body=b"hello world")
    assert res.status == 200, res.body
    assert res.body.decode().splitlines() == [
        "__index receive receiveany receiveuntil settimeout settimeouts",
        "2 4",
        "hello  world",
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            'ngx.socket.tcp().send("hello", 32)',
            "bad argument #1 to 'send' (table expected, got string)",
        ),
        (
            'ngx.socket.tcp().receiveuntil(32, "ab")',
            "bad argument #1 to 'receiveuntil' (table expected, got number)",
        ),
        ("ngx.socket.tcp().close(2)", "bad argument #1 to 'close' (table expected, got number)"),
        (
            "ngx.socket.tcp().getreusedtimes(2)",
            "bad argument #1 to 'getreusedtimes' (table expected, got number)",
        ),
        ('ngx.socket.udp().send("x", 1)', "bad argument #1 to 'send' (table expected, got string)"),
    ],
)
def test_bad_self(tmp_path: Path, call: str, message: str) -> None:
    res = run_script(tmp_path, f"ngx.say(pcall(function() {call} end))")
    assert res.status == 200, res.body
    body = res.body.decode()
    assert body.startswith("false") and message in body, body


def test_bad_self_on_the_request_socket(tmp_path: Path) -> None:
    src = 'local sock = ngx.req.socket()\nngx.say(pcall(sock.receive, "l"))'
    params = make_params(method=b"POST", extra=[(b"CONTENT_LENGTH", b"3")])
    res = run_script(tmp_path, src, params=params, body=b"abc")
    assert "bad argument #1 to 'receive' (table expected, got string)" in res.body.decode()


def test_setclientcert(tmp_path: Path) -> None:
    src = """
    local sock = ngx.socket.tcp()
    ngx.say(sock:setclientcert("doesnt", "work"))
    ngx.say(sock:setclientcert(nil, "work"))
    ngx.say(sock:setclientcert("doesnt", nil))
    ngx.say(sock:setclientcert())
    """
    res = run_script(tmp_path, src)
    assert res.body.decode().splitlines() == [
        "nilbad cert arg: cdata expected, got string",
        "nilclient certificate must be supplied with corresponding private key",
        "nilclient certificate must be supplied with corresponding private key",
        "true",
    ]


def test_receiveany_bind_and_options(tmp_path: Path) -> None:
    async def main() -> str:
        done = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")
            writer.write(f"{peer[0]}\nabcdef".encode())
            await writer.drain()
            await reader.read()
            writer.close()
            await writer.wait_closed()
            done.set()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        src = f"""
        local sock = ngx.socket.tcp()
        ngx.say(sock:bind("127.0.0.2"), " ", sock:bind("nope"))
        assert(sock:connect("127.0.0.1", {port}))
        ngx.say(sock:receive())
        ngx.say(sock:receiveany(4))
        ngx.say(sock:receiveany(10))
        ngx.say(pcall(sock.receiveany, sock, 0))
        ngx.say(sock:setoption("tcp-nodelay", true), " ", sock:getoption("tcp-nodelay") ~= 0)
        ngx.say(sock:getoption("bogus"))
        sock:close()
        """
        path = tmp_path / "t.lua"
        path.write_text(src)
        sink = MemorySink()
        await LuaEngine().run(FakeRequest(str(path), make_params()), sink)
        await asyncio.wait_for(done.wait(), 5)
        server.close()
        await server.wait_closed()
        return parse(sink.chunks).body.decode()

    lines = asyncio.run(main()).splitlines()
    assert lines[0] == "true nilbad address"
    assert lines[1] == "127.0.0.2"
    assert lines[2] == "abcd"
    assert lines[3] == "ef"
    assert (
        lines[4].startswith("false")
        and "bad argument #2 to 'receiveany' (bad max argument)" in (lines[4])
    )
    assert lines[5] == "true true"
    assert lines[6] == "nilunsupported option bogus"
