"""Debian's Lua C modules on the default runtime, the runtimes that cannot
load them (a second runtime in one process: a clear error, no crash), and
the C symbols OpenResty's libraries reach through ffi.C: OpenSSL and
nginx's ngx_hex_dump / ngx_atoi (fcgi_lua/_ngxsyms.c).

Which runtime is global depends on which one a process creates first, so
the tests that need a known first runtime run in a fresh interpreter."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fcgi_lua.lua import RUNTIMES
from fcgi_lua.lua.runtimes import c_module_dir, load_c_symbols
from tests.helpers.lua import make_params, run_script

C_MODULE_DIR = Path("/usr/lib/x86_64-linux-gnu/lua/5.1")
DEBIAN_C_MODULES = ["cjson", "cjson.safe", "lfs", "lpeg", "lxp", "socket.core"]
needs_debian_modules = pytest.mark.skipif(
    not (C_MODULE_DIR / "cjson.so").exists(), reason="Debian's lua-cjson is not installed"
)
needs_ngxsyms = pytest.mark.skipif(
    any("_ngxsyms" in what for what in load_c_symbols()),
    reason="fcgi_lua._ngxsyms is not built (pip install -e . with a C compiler)",
)


def run_fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (its first runtime is the global
    one); returns its stdout, failing on a crash or a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


RUN_SCRIPT = """
import sys
from pathlib import Path
from tests.helpers.lua import make_params, run_script
def run(src, **engine_args):
    res = run_script(Path(sys.argv[1]), src, **engine_args)
    assert res.status == 200, res.body
    return res.body.decode()
"""


def run_fresh_scripts(tmp_path: Path, code: str) -> str:
    return run_fresh(RUN_SCRIPT.replace("sys.argv[1]", repr(str(tmp_path))) + textwrap.dedent(code))


@needs_debian_modules
def test_debian_c_modules_load_on_the_default_runtime(tmp_path: Path) -> None:
    out = run_fresh_scripts(
        tmp_path,
        """
        print(run('''
        for _, name in ipairs{MODULES} do
            local ok, mod = pcall(require, name)
            ngx.say(name, " ", type(mod))
        end
        local cjson = require "cjson"
        ngx.say(cjson.encode({a = ngx.null}), " ", tostring(cjson.null == ngx.null))
        ngx.say(tostring(cjson.decode("[null]")[1] == ngx.null))
        ngx.say(require("lpeg").match(require("lpeg").C(require("lpeg").R("09") ^ 1), "123x"))
        '''), end="")
        """.replace("MODULES", ", ".join(f'"{m}"' for m in DEBIAN_C_MODULES)),
    )
    assert out.splitlines() == [
        *(f"{m} table" for m in DEBIAN_C_MODULES),
        '{"a":null} true',
        "true",
        "123",
    ]


@needs_debian_modules
def test_a_second_runtime_refuses_c_modules_clearly(tmp_path: Path) -> None:
    # lua52 first: its lua_* are the global ones; a C module loaded into
    # LuaJIT would call them with a LuaJIT state and crash the process.
    (tmp_path / "cjson_free.lua").write_text("return {x = 'pure Lua loads'}")
    out = run_fresh_scripts(
        tmp_path,
        """
        from fcgi_lua.lua.runtimes import c_modules_load, new_runtime
        new_runtime("lua52")
        print(c_modules_load("lua52"), c_modules_load("luajit21"))
        print(run('''
        local ok, err = pcall(require, "cjson")
        ngx.say(ok, " ", err)
        ngx.say((select(2, package.loadlib("/x/cjson.so", "luaopen_cjson"))))
        local ok, err = pcall(require, "no_such_c_module")
        ngx.say(ok, " ", err:match("no C module for 'no_such_c_module'"))
        ngx.say(require("cjson_free").x)
        ''', runtime="luajit21", lua_package_cpath="/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;",
        lua_package_path=sys.argv[1] + "/?.lua;;"), end="")
        """.replace("sys.argv[1]", repr(str(tmp_path))),
    )
    why = (
        "Lua C modules load only into the first Lua runtime this process created (lua52),"
        " not into luajit21"
    )
    assert out.splitlines() == [
        "True False",
        f"false cannot load C module 'cjson' ({C_MODULE_DIR}/cjson.so): {why}",
        f"/x/cjson.so: {why}",
        "false no C module for 'no_such_c_module'",
        "pure Lua loads",
    ]


def test_every_runtime_after_any_other_in_one_process() -> None:
    # Each lupa module binds its own lua_* first (RTLD_DEEPBIND): without
    # it, the second runtime a process created crashed it.
    names = sorted(RUNTIMES)
    for first in ("luajit21", "lua52", "lua54"):
        order = [first, *(n for n in names if n != first)]
        out = run_fresh(
            f"""
            from fcgi_lua.lua.runtimes import new_runtime
            for name in {order!r}:
                lua = new_runtime(name)
                total = lua.execute(
                    b"local t = {{}} for i = 1, 2000 do t[i] = tostring(i) .. 'x' end "
                    b"collectgarbage() return #t"
                )
                print(name, total)
            """
        )
        assert out.split() == [w for n in order for w in (n, "2000")]


@needs_debian_modules
def test_lua_package_cpath_replaces_the_search_path(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "lfs.so").symlink_to(C_MODULE_DIR / "lfs.so")
    out = run_fresh_scripts(
        tmp_path,
        f"""
        print(run('''
        ngx.say(package.cpath)
        ngx.say(type(require("lfs").attributes))
        ngx.say((select(2, pcall(require, "lpeg")):match("module 'lpeg' not found")))
        ''', lua_package_cpath="{tmp_path}/lib/?.so"), end="")
        """,
    )
    assert out.splitlines() == [f"{tmp_path}/lib/?.so", "function", "module 'lpeg' not found"]


@needs_debian_modules
def test_the_sandbox_keeps_the_configured_c_modules(tmp_path: Path) -> None:
    out = run_fresh_scripts(
        tmp_path,
        """
        print(run('''
        pcall(function() package.cpath = "/nowhere/?.so" end) -- read-only anyway
        ngx.say(require("cjson").encode({1, "two"}), " ", tostring(package.loadlib))
        ''', sandbox=True, root=sys.argv[1]), end="")
        """.replace("sys.argv[1]", repr(str(tmp_path))),
    )
    assert out == '[1,"two"] nil\n'


def test_c_module_dir_is_the_abi_directory_or_nothing() -> None:
    for name in RUNTIMES:
        found = c_module_dir(name)
        abi = "5.1" if name.startswith("luajit") else f"{name[3]}.{name[4]}"
        assert found in ("", f"/usr/lib/{sys.implementation._multiarch}/lua/{abi}/")


# -- ngx.null ---------------------------------------------------------------------------


def test_ngx_null_is_the_null_light_userdata(tmp_path: Path) -> None:
    # string.buffer serialises the NULL light userdata, and only it, as 0x03
    src = """
    local buffer = require "string.buffer"
    ngx.say(type(ngx.null), " ", tostring(ngx.null), " ", #buffer.encode(ngx.null),
            " ", tostring(buffer.encode(ngx.null) == "\\3"), " ", tostring(ngx.null == nil))
    """
    res = run_script(tmp_path, src, runtime="luajit21")
    assert res.body == b"userdata userdata: NULL 1 true false\n"


def test_ngx_null_on_puc_lua_is_a_unique_userdata(tmp_path: Path) -> None:
    src = 'ngx.say(type(ngx.null), " ", tostring(ngx.null), " ", tostring(ngx.null == ngx.null))'
    res = run_script(tmp_path, src, runtime="lua54")
    assert res.body == b"userdata userdata: NULL true\n"


# -- ngx.hmac_sha1 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "data"),
    [(b"", b""), (b"key", b"The quick brown fox jumps over the lazy dog"), (b"k" * 100, b"\0\xff")],
)
def test_hmac_sha1_is_the_binary_digest(tmp_path: Path, key: bytes, data: bytes) -> None:
    query = b"k=" + key.hex().encode() + b"&d=" + data.hex().encode()
    src = (
        "local function unhex(s) return (s:gsub('..', function(h) return string.char("
        "tonumber(h, 16)) end)) end\n"
        "ngx.print(ngx.hmac_sha1(unhex(ngx.var.arg_k), unhex(ngx.var.arg_d)))"
    )
    res = run_script(tmp_path, src, params=make_params(query=query))
    assert res.body == hmac.digest(key, data, "sha1")


def test_hmac_sha1_arguments_as_lua_nginx_module(tmp_path: Path) -> None:
    src = """
    ngx.say(ngx.encode_base64(ngx.hmac_sha1(12, 3.5)))
    for _, args in ipairs({ {n = 1, "k"}, {n = 3, "k", "d", "x"}, {n = 2, nil, "d"},
                            {n = 2, "k", {}} }) do
        ngx.say(select(2, pcall(ngx.hmac_sha1, unpack(args, 1, args.n))))
    end
    """
    res = run_script(tmp_path, src)
    expected = hmac.digest(b"12", b"3.5", hashlib.sha1)
    assert res.body.decode().splitlines() == [
        base64.b64encode(expected).decode(),
        "expecting 2 arguments, but got 1",
        "expecting 2 arguments, but got 3",
        "bad argument #1 to '?' (string expected, got nil)",
        "bad argument #2 to '?' (string expected, got table)",
    ]


# -- ffi.C: OpenSSL and nginx's helpers ---------------------------------------------------


def ngx_atoi(s: bytes) -> int:
    """nginx's ngx_atoi: digits only, -1 for empty, other bytes, overflow."""
    if not s or any(not 0x30 <= b <= 0x39 for b in s):
        return -1
    value = int(s)
    return value if value <= 2**63 - 1 else -1


ATOI_CASES = [b"", b"0", b"7", b"0042", b"-1", b"+1", b" 1", b"1 ", b"12a", b"9223372036854775807"]
ATOI_CASES += [b"9223372036854775808", b"92233720368547758070", b"99999999999999999999999"]


@needs_ngxsyms
def test_ngx_atoi_and_hex_dump_through_ffi(tmp_path: Path) -> None:
    src = """
    local ffi = require "ffi"
    ffi.cdef[[
    typedef unsigned char u_char;
    u_char * ngx_hex_dump(u_char *dst, const u_char *src, size_t len);
    intptr_t ngx_atoi(const unsigned char *line, size_t n);
    ]]
    for _, s in ipairs(CASES) do
        ngx.say((tostring(ffi.C.ngx_atoi(s, #s)):gsub("LL$", "")))
    end
    local src = ""
    for i = 0, 255 do src = src .. string.char(i) end
    local buf = ffi.new("uint8_t[?]", 512 + 1)
    buf[512] = 33
    local stop = ffi.C.ngx_hex_dump(buf, src, #src)
    ngx.say(ffi.string(buf, 513), " ", tonumber(stop - buf))
    """.replace("CASES", "{" + ", ".join(f'"{c.decode()}"' for c in ATOI_CASES) + "}")
    res = run_script(tmp_path, src, runtime="luajit21")
    assert res.status == 200, res.body
    lines = res.body.decode().splitlines()
    assert lines[:-1] == [str(ngx_atoi(c)) for c in ATOI_CASES]
    assert lines[-1] == bytes(range(256)).hex() + "! 512"


@needs_ngxsyms
def test_resty_string_unmodified(tmp_path: Path) -> None:
    if not Path("/usr/share/lua/5.1/nginx/string.lua").exists():
        pytest.skip("Debian's lua-nginx-string is not installed")
    src = """
    local str = require "resty.string"
    local md5 = require "resty.md5"
    local sha256 = require "resty.sha256"
    local m = md5:new()
    m:update("hello ")
    m:update("world")
    local s = sha256:new()
    s:update("abc")
    ngx.say(str.to_hex(m:final()), " ", str.to_hex(s:final()), " ", str.atoi("123"))
    """
    res = run_script(tmp_path, src, runtime="luajit21")
    assert res.status == 200, res.body
    assert res.body.decode() == (
        f"{hashlib.md5(b'hello world').hexdigest()} {hashlib.sha256(b'abc').hexdigest()} 123\n"
    )


def test_openssl_is_visible_to_ffi_c(tmp_path: Path) -> None:
    src = """
    local ffi = require "ffi"
    ffi.cdef[[
    typedef struct { unsigned int A,B,C,D,Nl,Nh,data[16]; unsigned int num; } MD5_CTX;
    int MD5_Init(MD5_CTX *c);
    int MD5_Update(MD5_CTX *c, const void *data, size_t len);
    int MD5_Final(unsigned char *md, MD5_CTX *c);
    int RAND_bytes(unsigned char *buf, int num);
    int RAND_pseudo_bytes(unsigned char *buf, int num);
    const void *EVP_sha256(void);
    unsigned char *HMAC(const void *evp_md, const void *key, int key_len,
                        const unsigned char *d, size_t n, unsigned char *md,
                        unsigned int *md_len);
    ]]
    local C = ffi.C
    local ctx = ffi.new("MD5_CTX")
    local out = ffi.new("unsigned char[32]")
    C.MD5_Init(ctx)
    C.MD5_Update(ctx, "abc", 3)
    C.MD5_Final(out, ctx)
    ngx.say(ngx.encode_base64(ffi.string(out, 16)))
    local len = ffi.new("unsigned int[1]")
    C.HMAC(C.EVP_sha256(), "key", 3, "data", 4, out, len)
    ngx.say(ngx.encode_base64(ffi.string(out, len[0])))
    ngx.say(C.RAND_bytes(out, 32), " ", C.RAND_pseudo_bytes(out, 8))
    """
    res = run_script(tmp_path, src, runtime="luajit21")
    assert res.status == 200, res.body
    assert res.body.decode().splitlines() == [
        base64.b64encode(hashlib.md5(b"abc").digest()).decode(),
        base64.b64encode(hmac.digest(b"key", b"data", "sha256")).decode(),
        "1 1",
    ]


def test_without_the_c_extension_the_symbols_are_missing_clearly(tmp_path: Path) -> None:
    # What a machine without a C compiler gets: a warning at start, and a
    # Lua error naming the symbol where a library calls it.
    out = run_fresh_scripts(
        tmp_path,
        """
        import logging
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
        sys.modules["fcgi_lua._ngxsyms"] = None  # as if it was never built
        print(run('''
        local ffi = require "ffi"
        ffi.cdef "intptr_t ngx_atoi(const unsigned char *line, size_t n);"
        ngx.say(select(2, pcall(function() return ffi.C.ngx_atoi("1", 1) end)))
        ''', runtime="luajit21"), end="")
        """,
    )
    warning, error = out.splitlines()
    assert warning.startswith("ffi.C will lack ngx_hex_dump, ngx_atoi (fcgi_lua._ngxsyms is not")
    assert error.endswith("undefined symbol: ngx_atoi")
