-- resty.core and the ngx.* modules lua-resty-core ships: what a library
-- sees of them, line by line against OpenResty (test_e2e_lrucache.py).
local function try(f, ...)
    local ok, a, b = pcall(f, ...)
    if not ok then
        return "error: " .. tostring(a):gsub("^.-:%d+: ", "")
    end
    return tostring(a) .. " " .. tostring(b)
end

-- response headers first: ngx.say commits them
local resp = require "ngx.resp"
resp.add_header("X-Added", "one")
resp.add_header("X-Added", { "two", "three" })
resp.add_header("X-Added", {})
resp.add_header("Content-Type", "text/x-added")
resp.add_header("X_Under", 5)
local added = ngx.resp.get_headers()["x-added"]
local no_value = try(resp.add_header, "X-Nil", nil)

ngx.say("add_header: ", table.concat(added, ","), " ", ngx.header.content_type, " ",
        tostring(ngx.header["X-Under"]), " ", no_value)

local core = require "resty.core"
ngx.say("resty.core ", core.version)
for _, name in ipairs({
    "base", "base64", "ctx", "exit", "hash", "misc", "phase", "regex", "request",
    "response", "shdict", "time", "uri", "utils", "var", "worker",
}) do
    local m = require("resty.core." .. name)
    ngx.say("resty.core.", name, " ", tostring(m.version or m._VERSION))
end
for _, name in ipairs({ "base64", "errlog", "process", "re", "resp", "semaphore" }) do
    ngx.say("ngx.", name, " ", require("ngx." .. name).version)
end

local base = require "resty.core.base"
ngx.say("base: ", base.FFI_OK, " ", base.FFI_ERROR, " ", base.FFI_AGAIN, " ", base.FFI_BUSY,
        " ", base.FFI_DONE, " ", base.FFI_DECLINED, " ", base.FFI_NO_REQ_CTX, " ",
        base.FFI_BAD_CONTEXT, " ", base.get_request() ~= nil)
local t = base.new_tab(4, 4)
t[1], t.x = 1, 2
base.clear_tab(t)
ngx.say("new_tab/clear_tab: ", next(t) == nil)
local refs = {}
ngx.say("ref_in_table: ", base.ref_in_table(refs, "a"), " ", base.ref_in_table(refs, "b"), " ",
        base.ref_in_table(refs, nil))
ngx.say("allows_subsystem: ", try(base.allows_subsystem, "http"), " | ",
        try(base.allows_subsystem, "stream"))
local ffi = require "ffi"
local buf = base.get_string_buf(16)
ffi.copy(buf, "buffered", 8)
ngx.say("string buf: ", ffi.string(buf, 8), " ", base.get_string_buf_size(), " ",
        base.get_string_buf(8192) ~= buf, " ", tostring(ffi.typeof("ngx_str_t") ~= nil))
base.set_string_buf_size(8192)
ngx.say("buf size: ", base.get_string_buf_size())
base.set_string_buf_size(4096)
local size = base.get_size_ptr()
size[0] = 42
ngx.say("size_ptr: ", tonumber(size[0]), " ", base.get_size_ptr() == size)

local b64 = require "ngx.base64"
for _, s in ipairs({ "", "f", "fo", "foo", "foob", "\255\254\253", "hello?>~" }) do
    local e = b64.encode_base64url(s)
    ngx.say("b64url ", ngx.encode_base64(s), " -> ", e, " -> ", b64.decode_base64url(e) == s)
end
for _, s in ipairs({ "", "Zg", "Zm8", "Zg==", "Zg=", "Zg==junk", "_-8", "+/8", "a", "abcde",
                     "ab cd", "YWJj\n" }) do
    ngx.say("decode ", s, ": ", try(b64.decode_base64url, s))
end
ngx.say("not strings: ", try(b64.encode_base64url, 1), " ", try(b64.decode_base64url, nil))

local tm = require "resty.core.time"
local ms = tm.monotonic_msec()
ngx.say("monotonic: ", type(ms), " ", ms == math.floor(ms), " ",
        math.abs(tm.monotonic_time() * 1000 - ms) < 1000)

ngx.say("process: ", require("ngx.process").type())
local errlog = require "ngx.errlog"
ngx.say("errlog: ", try(errlog.raw_log, "x", "y"), " | ", try(errlog.raw_log, ngx.INFO, 1), " | ",
        try(errlog.raw_log, 99, "m"), " | ", try(errlog.raw_log, ngx.INFO, "raw line"))
ngx.say("str_replace_char: ", require("resty.core.utils").str_replace_char("a.b.c", ".", "%"))

ngx.ctx.seen = "yes"
ngx.say("get_ctx_table: ", require("resty.core.ctx").get_ctx_table().seen)

local misc = require "resty.core.misc"
ngx.say("misc: ", type(misc.register_ngx_magic_key_getter),
        " ", type(misc.register_ngx_magic_key_setter))

local isempty, nkeys = require "table.isempty", require "table.nkeys"
local isarray, clone = require "table.isarray", require "table.clone"
for _, case in ipairs({
    { "{}", {} }, { "{1,2,3}", { 1, 2, 3 } }, { "{a=1}", { a = 1 } },
    { "{[2]=1}", { [2] = 1 } }, { "{1,2,x=1}", { 1, 2, x = 1 } },
    { "{[1.5]=1}", { [1.5] = 1 } }, { "{[0]=1,1}", { [0] = 1, 1 } },
    { "{[-1]=1}", { [-1] = 1 } }, { "{[2^40]=1}", { [2 ^ 40] = 1 } },
    { "{[3]=1,[5]=1}", { [3] = 1, [5] = 1 } }, { "{[3]=1,[5.3]=1}", { [3] = 1, [5.3] = 1 } },
    { "{[true]=1}", { [true] = 1 } },
}) do
    local v = case[2]
    local c = clone(setmetatable(v, {}))
    ngx.say(case[1], ": isempty ", isempty(v), " nkeys ", nkeys(v), " isarray ", isarray(v),
            " clone ", nkeys(c), " ", getmetatable(c) == nil, " ", c ~= v)
end
local nt, ct = require "table.new", require "table.clear"
local big = nt(10, 10)
big[1], big.k = 1, 2
ct(big)
ngx.say("table.new/clear: ", next(big) == nil)

local buffer = require "string.buffer"
local sb = buffer.new()
sb:put("a", 1, "b"):putf("%d-%s", 7, "x")
ngx.say("string.buffer: ", sb:tostring(), " ", #sb, " ",
        buffer.decode(buffer.encode({ 1, "two", k = true }))[2])
ngx.say("bit: ", bit.band(0xff0, 0x0ff), " ", bit.tohex(255), " ", bit.lshift(1, 31))
ngx.say("jit: ", type(jit.version), " ", type(jit.on), " ", type(require("jit.util")))
