"""resty.core as fcgi-lua provides it (resty_core.lua, luajit.lua): every
module lua-resty-core ships resolves to fcgi-lua's preload, never to
Debian's nginx-bound copy on package.path; what libraries use of them;
OpenResty's table.* modules.  OpenResty comparisons: test_e2e_lrucache.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fcgi_lua.lua import LuaEngine
from tests.helpers.lua import run_script

# Every module lua-resty-core v0.1.x ships (Debian's 0.1.25 and upstream's).
RESTY_CORE = [
    "resty.core",
    *(
        "resty.core." + name
        for name in [
            "base",
            "base64",
            "coroutine",
            "ctx",
            "exit",
            "hash",
            "misc",
            "ndk",
            "param",
            "phase",
            "regex",
            "request",
            "response",
            "shdict",
            "socket",
            "time",
            "uri",
            "utils",
            "var",
            "worker",
        ]
    ),
]
NGX_MODULES = ["ngx.base64", "ngx.errlog", "ngx.process", "ngx.re", "ngx.req", "ngx.resp"]
NGX_MODULES += ["ngx.semaphore"]
UNAVAILABLE = ["ngx.ssl", "ngx.ssl.session", "ngx.ssl.clienthello", "ngx.ssl.proxysslcert"]
UNAVAILABLE += ["ngx.ssl.proxysslverify", "ngx.proxyssl", "ngx.ocsp", "ngx.balancer", "ngx.pipe"]


def lua_list(names: list[str]) -> str:
    return "{" + ", ".join(f'"{n}"' for n in names) + "}"


def test_every_module_is_ours_and_debians_never_loads(tmp_path: Path) -> None:
    # A searcher right after package.preload sees every name preload did
    # not satisfy: Debian's files are only reachable through the ones after it.
    source = f"""
    local reached = {{}}
    table.insert(package.loaders or package.searchers, 2, function(name)
        reached[#reached + 1] = name
        return "\\n\\tspy"
    end)
    for _, name in ipairs({lua_list(RESTY_CORE + NGX_MODULES)}) do
        local m = require(name)
        ngx.say(name, " ", type(m), " ", tostring(m.version or m._VERSION))
    end
    for name, m in pairs(package.loaded) do
        if type(m) == "table" then
            for _, v in pairs(m) do
                if type(v) == "function" then
                    local src = debug.getinfo(v, "S").source
                    if src:find("/resty/core/", 1, true) or src:find("/ngx/", 1, true) then
                        ngx.say("loaded from a file: ", name, " ", src)
                    end
                end
            end
        end
    end
    ngx.say("reached: ", table.concat(reached, ","))
    """
    lines = run_script(tmp_path, source).body.decode().splitlines()
    assert lines[-1] == "reached: "
    assert not [line for line in lines if line.startswith("loaded from a file")]
    assert lines[:-1] == [f"{name} table 0.1.25" for name in RESTY_CORE + NGX_MODULES]


def test_unavailable_modules_fail_naming_why(tmp_path: Path) -> None:
    source = f"""
    for _, name in ipairs({lua_list(UNAVAILABLE)}) do
        local ok, err = pcall(require, name)
        ngx.say(name, " ", ok, " ", err)
        ngx.say(name, " again ", (pcall(require, name)))
    end
    """
    lines = run_script(tmp_path, source).body.decode().splitlines()
    for name, line in zip(UNAVAILABLE, lines[::2], strict=True):
        assert line.startswith(f"{name} false module '{name}' is not available in fcgi-lua: ")
    assert all(line.endswith(" again false") for line in lines[1::2])


def test_base(tmp_path: Path) -> None:
    source = """
    local base = require "resty.core.base"
    local ffi = require "ffi"
    ngx.say(base.FFI_OK, base.FFI_ERROR, base.FFI_AGAIN, base.FFI_BUSY, base.FFI_DONE,
            base.FFI_DECLINED, base.FFI_NO_REQ_CTX, base.FFI_BAD_CONTEXT, base.FFI_ABORT)
    local r = base.get_request()
    ngx.say(type(r), " ", r == base.get_request(), " ", tostring(r))
    local t = base.new_tab(2, 2)
    t[1], t.a = 1, 2
    base.clear_tab(t)
    ngx.say(next(t) == nil)
    local refs = {}
    ngx.say(base.ref_in_table(refs, "x"), base.ref_in_table(refs, "y"),
            base.ref_in_table(refs, nil))
    ngx.say(pcall(base.allows_subsystem, "stream", "http"))
    ngx.say(select(2, pcall(base.allows_subsystem, "stream")))
    local buf = base.get_string_buf(8)
    ffi.copy(buf, "12345678", 8)
    ngx.say(ffi.string(buf, 8), " ", base.get_string_buf(100) == buf,
            " ", base.get_string_buf(5000) ~= buf, " ", base.get_string_buf(8, true) ~= buf)
    base.set_string_buf_size(10000.5)
    ngx.say(base.get_string_buf_size())
    local size = base.get_size_ptr()
    size[0] = 7
    ngx.say(tonumber(base.get_size_ptr()[0]), " ", type(base.get_errmsg_ptr()))
    ngx.say(tostring(base.c_buf_type), " ", ffi.sizeof("ngx_str_t") == 2 * ffi.sizeof("void *"))
    """
    assert run_script(tmp_path, source).body.decode().splitlines() == [
        "0-1-2-3-4-5-100-101-6",
        "table true ngx_http_request_t",
        "true",
        "12-1",
        "true",
        "unsupported subsystem: http",
        "12345678 true true true",
        "10001",
        "7 cdata",
        "ctype<char [?]> true",
    ]


def test_no_request_in_init_script(tmp_path: Path) -> None:
    # OpenResty's get_request() is nil in the init phase; resty.core loads there
    init = tmp_path / "init.lua"
    init.write_text(
        'assert(require("resty.core.base").get_request() == nil)\n'
        'require "resty.core"\n'
        'assert(require("ngx.process").type() == "worker")\n'
    )
    engine = LuaEngine()
    engine.run_init_script(str(init))
    source = 'ngx.say(package.loaded["resty.core"].version)'
    assert run_script(tmp_path, source, engine=engine).body == b"0.1.25\n"


def test_base64url(tmp_path: Path) -> None:
    source = """
    local b64 = require "ngx.base64"
    ngx.say(b64.encode_base64url("\\255\\254\\253?>"), " [", b64.encode_base64url(""), "]")
    for _, s in ipairs({"__79Pz4", "Zg", "Zg==", "Zg==x", "+/8", "a", "Z g", ""}) do
        local v, err = b64.decode_base64url(s)
        ngx.say(s, ":", tostring(v), ":", tostring(err))
    end
    ngx.say(b64.encode_base64url(nil))
    ngx.say(b64.decode_base64url({}))
    """
    assert run_script(tmp_path, source).body.splitlines() == [
        b"__79Pz4 []",
        b"__79Pz4:\xff\xfe\xfd?>:nil",
        b"Zg:f:nil",
        b"Zg==:f:nil",
        b"Zg==x:f:nil",  # nginx ends the input at its first "="
        b"+/8:nil:invalid input",
        b"a:nil:invalid input",
        b"Z g:nil:invalid input",
        b"::nil",
        b"nilmust provide a string",
        b"nilmust provide a string",
    ]


def test_time_errlog_process_utils_ctx(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = """
    local t = require "resty.core.time"
    local a = t.monotonic_msec()
    ngx.sleep(0.02)
    local b = t.monotonic_msec()
    ngx.say(a == math.floor(a), " ", b - a >= 15, " ", b - a < 1000,
            " ", math.abs(t.monotonic_time() * 1000 - b) < 1000)
    local errlog = require "ngx.errlog"
    errlog.raw_log(ngx.WARN, "a raw line")
    ngx.say(pcall(errlog.raw_log, 9, "x"))
    ngx.say(errlog.get_logs())
    ngx.say(errlog.set_filter_level())
    ngx.say(type(errlog.get_sys_filter_level()))
    local process = require "ngx.process"
    ngx.say(process.type(), " ", type(process.get_master_pid()), " ",
            select(2, process.enable_privileged_agent()))
    ngx.say(require("resty.core.utils").str_replace_char("a.b.c", ".", "%"))
    ngx.say(require("resty.core.utils").str_replace_char("abc", ".", "%"))
    local ctx = require "resty.core.ctx"
    ngx.ctx.a = 1
    ngx.say(ctx.get_ctx_table().a, " ", ctx.get_ctx_table({ b = 2 }).b, " ", ngx.ctx.b)
    local misc = require "resty.core.misc"
    misc.register_ngx_magic_key_getter("magic", function() return "got" end)
    local stored
    misc.register_ngx_magic_key_setter("magic", function(v) stored = v end)
    ngx.magic = "set"
    ngx.say(ngx.magic, " ", stored, " ", ngx.ctx.a == nil, " ", ngx.status)
    """
    resp = run_script(tmp_path, source)
    # raw_log: the message as given, no "[lua] file:line:" prefix; the
    # request's context after it, as OpenResty's (checked with nginx)
    context = ', client: 127.0.0.1, request: "GET /t.lua HTTP/1.1"'
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "a raw line" + context)
    ]
    assert resp.body.decode().splitlines() == [
        "true true true true",
        "falsebad log level",
        'nildirective "lua_capture_error_log" is not set',
        'nilmissing "level" argument',
        "number",
        "worker number API disabled in the current context",
        "a%b%c",
        "abc",
        "1 2 2",
        "got set true 200",
    ]


def test_resp_and_req_add_header(tmp_path: Path) -> None:
    source = """
    local resp = require "ngx.resp"
    resp.add_header("X-Multi", "a")
    resp.add_header("X-Multi", { "b", 3 })
    resp.add_header("X-Multi", {})
    resp.add_header("X_Under", true)
    ngx.say(pcall(resp.add_header, "X-Nil"))
    """
    resp = run_script(tmp_path, source)
    assert resp.all(b"X-Multi") == [b"a", b"b", b"3"]
    assert resp.header(b"X-Under") == b"true"
    assert resp.body.startswith(b"false") and resp.body.endswith(b"invalid header value\n")


def test_table_modules(tmp_path: Path) -> None:
    source = """
    local isempty, isarray = require "table.isempty", require "table.isarray"
    local nkeys, clone = require "table.nkeys", require "table.clone"
    local new, clear = require "table.new", require "table.clear"
    ngx.say(isempty({}), isempty({ 1 }), isempty({ a = false }))
    ngx.say(isarray({}), isarray({ 1, 2 }), isarray({ [3] = 1 }), isarray({ [0] = 1 }),
            isarray({ [1.5] = 1 }), isarray({ 1, a = 1 }), isarray({ [math.huge] = 1 }))
    ngx.say(nkeys({}), nkeys({ 1, 2, a = 3 }))
    local src = setmetatable({ 1, k = "v" }, {})
    local c = clone(src)
    ngx.say(c ~= src, c[1], c.k, getmetatable(c) == nil)
    local t = new(4, 4)
    t[1], t.x = 1, 2
    clear(t)
    ngx.say(next(t) == nil, " ", table.isempty == nil)
    ngx.say(select(2, pcall(nkeys, 1)))
    """
    assert run_script(tmp_path, source).body.decode().splitlines() == [
        "truefalsefalse",
        "truetruetruetruefalsefalsefalse",
        "03",
        "true1vtrue",
        "true true",
        "bad argument #1 to 'nkeys' (table expected, got number)",
    ]


def test_puc_runtime(tmp_path: Path) -> None:
    # base loads without LuaJIT's FFI; its char buffers are compat.lua's.
    # (lua51 only: with luajit21 global in this process, a lua54 VM crashes
    # it, as test_compat.py's does; runtimes.py)
    source = """
    require "resty.core"
    local base = require "resty.core.base"
    local buf = base.get_string_buf(4)
    local t = require("table.new")(2, 0)
    require("table.clear")(t)
    ngx.say(base.version, " ", type(buf), " ", require("table.isempty")(t),
            " ", require("ngx.base64").encode_base64url("??>"))
    """
    resp = run_script(tmp_path, source, runtime="lua51")
    assert resp.body.startswith(b"0.1.25 ") and resp.body.endswith(b" true Pz8-\n"), resp.body


def test_require_ngx_is_the_ngx_table(tmp_path: Path) -> None:
    # t/004-require.t TEST 7: lua-nginx-module registers package.loaded.ngx
    src = 'local n = require "ngx" n.say(tostring(n == ngx), " ", tostring(require("ngx") == n))'
    assert run_script(tmp_path, src).body == b"true true\n"


def test_require_of_a_standard_library_is_the_global(tmp_path: Path) -> None:
    # a request sees read-only views of the shared libraries; require
    # returns the same view (Lua: package.loaded.string == string)
    src = (
        'ngx.say(tostring(require "string" == string), " ",'
        ' tostring(require "table" == table), " ", tostring(require "ngx.base64" ~= nil))'
    )
    assert run_script(tmp_path, src).body == b"true true true\n"


def test_resty_core_is_loaded_from_the_start(tmp_path: Path) -> None:
    # t/161-load-resty-core.t TEST 1-3: lua-nginx-module loads resty.core
    # into every VM before any request
    src = 'local l = package.loaded["resty.core"] ngx.say(l ~= nil, " ", l == require "resty.core")'
    assert run_script(tmp_path, src).body == b"true true\n"
