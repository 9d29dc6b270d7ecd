"""The LuaJIT compatibility layer of the PUC Lua runtimes (lua/compat.lua),
checked against LuaJIT itself, and the default runtime: LuaJIT's number
semantics, every limit on by default (docs/runtimes.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcgi_lua.config import ConfigError, load
from fcgi_lua.limits import DEFAULT_LUA_MEMORY_LIMIT
from fcgi_lua.lua import DEFAULT_RUNTIME
from fcgi_lua.lua.runtimes import new_runtime
from tests.helpers.lua import run_script

# One of each way compat.lua builds `bit`: arithmetic (5.1), bit32 (5.2),
# native operators (5.3+).  The default, LuaJIT, is what they are checked against.
PUC_RUNTIMES = ["lua51", "lua52", "lua53", "lua54", "lua55"]

_VMS: dict[str, Any] = {}


def vm(name: str) -> Any:
    """One VM per runtime for the whole module (hypothesis calls often)."""
    if name not in _VMS:
        _VMS[name] = new_runtime(name)
        if name.startswith("luajit"):
            # The reference runs interpreted, as fcgi-lua's default does (its
            # limits turn the JIT off): once the JIT compiled the test's loop,
            # LuaJIT itself gave other results for the same fractional
            # operands than its interpreter had (hypothesis: "unreliable").
            _VMS[name].execute(b"jit.off() jit.flush()")
    return _VMS[name]


def run(name: str, source: str, *args: Any) -> Any:
    lua = vm(name)
    fn = lua.execute(source.encode())
    return fn(*(lua.table_from(a) if isinstance(a, list) else a for a in args))


def same_as_luajit(source: str, *args: Any) -> None:
    expected = run("luajit21", source, *args)
    for name in PUC_RUNTIMES:
        assert run(name, source, *args) == expected, name


# -- bit --------------------------------------------------------------------------

BIT_OPS = """
return function(xs, ys)
    local out = {}
    for i = 1, #xs do
        local x, y = xs[i], ys[i]
        out[#out + 1] = table.concat({
            bit.tobit(x), bit.bnot(x), bit.bswap(x),
            bit.band(x, y), bit.bor(x, y), bit.bxor(x, y),
            bit.band(x, y, 0x0ff0f0f0), bit.bor(x, y, -65536, 3), bit.bxor(x), bit.band(y),
            bit.lshift(x, y), bit.rshift(x, y), bit.arshift(x, y), bit.rol(x, y), bit.ror(x, y),
            bit.tohex(x), bit.tohex(x, y % 37 - 18),
        }, " ")
    end
    return table.concat(out, "\\n")
end
"""

# |x| < 2^51: where LuaJIT's conversion is defined as "round, then modulo 2^32"
BIT_RANGE = 2**51 - 1
EDGES = [0, 1, -1, 31, 32, 33, 2**31 - 1, 2**31, -(2**31), 2**32 - 1, 2**32, 2**32 + 5, -(2**32)]
EDGES += [0.5, 1.5, 2.5, -0.5, -1.5, 2**31 - 0.5, 2**32 - 0.5, 1e10 + 0.5, -1e15 - 0.5]
EDGES += [BIT_RANGE, -BIT_RANGE, 2.0**40, -(2.0**45), 12345678.75]

numbers = st.one_of(
    st.integers(-BIT_RANGE, BIT_RANGE),
    # no subnormals: BIT_OPS's own `y % 37` on one (-5e-324) differs between
    # PUC Lua and LuaJIT, which is not what compat.lua's bit promises
    st.floats(-BIT_RANGE, BIT_RANGE, allow_nan=False, allow_subnormal=False),
    st.integers(-(2**33), 2**33),
    st.sampled_from(EDGES),
)


def test_bit_edges_like_luajit() -> None:
    same_as_luajit(BIT_OPS, EDGES, EDGES[::-1])
    same_as_luajit(BIT_OPS, EDGES, [-1, 0, 1, 31, 32, 33, 64, -31] * 5)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(numbers, numbers), min_size=1, max_size=30))
def test_bit_like_luajit(pairs: list[tuple[float, float]]) -> None:
    same_as_luajit(BIT_OPS, [x for x, _ in pairs], [y for _, y in pairs])


def test_bit_odd_arguments_like_luajit() -> None:
    same_as_luajit(
        """return function()
        local r = { bit.band("12", "0x7"), bit.tohex(-1, 0), bit.tohex(255, -2),
                    bit.tohex(-2, 12), bit.tohex(1, 99), bit.tobit(0/0), bit.tobit(1/0),
                    bit == require("bit") }
        for i, f in ipairs { bit.band, bit.bor, bit.lshift, bit.tohex } do
            local ok, err = pcall(f, {})
            r[#r + 1] = tostring(ok) .. " " .. err:match("%(.*%)")
        end
        return table.concat(r, " ", 1, 7) .. " " .. tostring(r[8]) .. " " .. table.concat(r, " ", 9)
        end"""
    )


# -- the rest of compat.lua -----------------------------------------------------------


def test_lua51_functions_like_luajit() -> None:
    same_as_luajit(
        """return function()
        -- %g: 5.3+ keeps float results floats ("1024.0"), as its own ^ does
        local function g(x) return string.format("%.14g", x) end
        local f = loadstring("return 1 + ...", "=chunk")
        local t = { 1, 2, 3, [7] = 7, [2.5] = 1, x = 9 }
        return table.concat({
            select("#", unpack({ 1, nil, 3 }, 1, 3)), g(f(41)), table.getn({ 1, 2 }),
            table.maxn(t), g(math.pow(2, 10)), g(math.ldexp(0.75, 4)), g(math.frexp(-12)),
            g(select(2, math.frexp(0.1))), g(math.log10(1000)),
            tostring(loadstring("syntax error here") == nil),
        }, " ")
        end"""
    )


def test_ffi_char_buffers_like_luajit() -> None:
    # lua-resty-websocket's unmasking (nginx/websocket/protocol.lua)
    same_as_luajit(
        """return function(n)
        local ffi = require "ffi"
        local bit = require "bit"
        local buf = ffi.new(ffi.typeof("char[?]"), n)
        local key, data = "\\1\\2\\250\\4", string.rep("hello, world ", 900)
        for i = 1, n do
            buf[i - 1] = bit.bxor(data:byte(i), key:byte((i - 1) % 4 + 1))
        end
        local masked = ffi.string(buf, n)
        for i = 1, n do
            buf[i - 1] = bit.bxor(masked:byte(i), key:byte((i - 1) % 4 + 1))
        end
        return ngx == nil and #masked == n and ffi.string(buf, n) == data:sub(1, n),
               ffi.string(ffi.new("uint8_t[?]", 4))
        end""",
        10000,
    )


@pytest.mark.parametrize("runtime", PUC_RUNTIMES)
def test_ffi_beyond_char_buffers_fails_naming_itself(runtime: str) -> None:
    message = run(
        runtime,
        'return function() return select(2, pcall(require("ffi").cdef, "int x;")) end',
    )
    assert b"ffi.cdef is not available" in message
    assert b"char buffers only" in message


@pytest.mark.parametrize("runtime", PUC_RUNTIMES)
def test_what_compat_leaves_out(runtime: str) -> None:
    # ngx.lua and sandbox.lua tell 5.1 by setfenv, limits.lua LuaJIT by jit
    absent = run(
        runtime,
        "return function() return tostring(jit) .. ' ' .. tostring(setfenv ~= nil) end",
    )
    assert absent == (b"nil true" if runtime == "lua51" else b"nil false")


@pytest.mark.parametrize("runtime", PUC_RUNTIMES)
def test_debian_openresty_libraries_are_on_the_path(runtime: str) -> None:
    path = run(runtime, "return function() return package.path end").decode()
    own = path.find(f"/usr/share/lua/{runtime[3]}.{runtime[4]}/?.lua")
    assert 0 <= own <= path.find("/usr/share/lua/5.1/?.lua")
    if not os.path.exists("/usr/share/lua/5.1/nginx/redis.lua"):
        pytest.skip("Debian's lua-nginx-redis is not installed")
    found = run(
        runtime,
        """return function()
        for template in package.path:gmatch("[^;]+") do
            local path = template:gsub("%?", "nginx/redis")
            local f = io.open(path)
            if f then f:close() return path end
        end
        end""",
    )
    assert found == b"/usr/share/lua/5.1/nginx/redis.lua"


def test_failed_module_stays_failed_like_luajit(tmp_path: Path) -> None:
    # 5.1 and LuaJIT mark a module whose top level failed; 5.2+ would rerun it
    (tmp_path / "broken_mod.lua").write_text("error('top level failed')")
    script = f"""return function()
        package.path = "{tmp_path}/?.lua;" .. package.path
        local _, first = pcall(require, "broken_mod")
        local _, again = pcall(require, "broken_mod")
        local _, missing = pcall(require, "no_such_mod")
        return first:match("top level failed") .. " | " .. again .. " | "
               .. tostring(package.loaded.no_such_mod)
        end"""
    same_as_luajit(script)


# -- the default runtime ----------------------------------------------------------------


def test_default_runtime_has_luajit_number_semantics(tmp_path: Path) -> None:
    # what OpenResty prints; Lua 5.3+ prints "n=5.0", "2147483648.0" and
    # refuses %d of 3.5 (docs/runtimes.md, "Choosing the default")
    src = """
ngx.say("n=", 10 / 2, " ", "n=" .. 10 / 2, " ", 2^31, " ", math.max(1, 2.0), " ",
        string.format("%d", 3.5), " ", tostring(7 / 7), " ", bit.band(0xff00, -1), " ", 0 / 0)
"""
    expected = b"n=5 n=5 2147483648 2 3 1 65280 nan\n"
    assert run_script(tmp_path, src, runtime="luajit21").body == expected
    assert run_script(tmp_path, src, runtime=DEFAULT_RUNTIME).body == expected


def test_default_config_turns_every_limit_on(tmp_path: Path) -> None:
    config = load(None, {"root": str(tmp_path)})
    assert config.lua_runtime == DEFAULT_RUNTIME
    assert config.lua_memory_limit == DEFAULT_LUA_MEMORY_LIMIT > 0
    assert config.max_instructions > 0
    assert config.request_timeout > 0
    assert config.worker_memory_limit > config.lua_memory_limit
    # every runtime gets the same memory limit (LuaJIT's is the soft one)
    puc = load(None, {"root": str(tmp_path), "lua_runtime": "lua52"})
    assert puc.lua_memory_limit == config.lua_memory_limit
    with pytest.raises(ConfigError, match="lua_memory_limit"):
        load(None, {"root": str(tmp_path), "lua_memory_limit": -1})
    assert load(None, {"root": str(tmp_path), "lua_memory_limit": 0}).lua_memory_limit == 0
