-- ngx.re.*: match, find, gmatch, sub, gsub, and `require "ngx.re"`'s
-- split, with lua-nginx-module 0.10.23's arguments, results and errors.
--
-- Loaded once per VM, after ngx.lua, by fcgi_lua/lua/regex.py, which
-- passes its functions (C) and the driver's extension hooks.  Patterns are
-- compiled in Python (PCRE syntax translated for the `regex` package) and
-- cached on both sides; Lua only holds integer handles.  Each match costs
-- one call to Python (C.exec), which returns the 0-based byte offsets of
-- every group (-1 when unmatched); the captures tables are built here, as
-- lua-resty-core's resty/core/regex.lua builds them from PCRE's ovector.
-- sub/gsub with a string template run whole in Python (C.sub).
--
-- Every pattern is cached, with or without the "o" option (lua-nginx-module
-- only caches "o" ones); "j" is accepted and does nothing.  Differences
-- from PCRE are listed in docs/lua-api.md ("ngx.re").

local C, ext = ...

local type = type
local tostring = tostring
local error = error
local select = select
local setmetatable = setmetatable
local sub = string.sub
local byte = string.byte
local find = string.find
local format = string.format
local gmatch = string.gmatch
local concat = table.concat
local floor = math.floor
local tonumber = tonumber

local py_compile = C.compile
local py_exec = C.exec
local py_sub = C.sub
local py_clear = C.clear

local ok, new_tab = pcall(require, "table.new")
if not ok or type(new_tab) ~= "function" then
    new_tab = function() return {} end
end

-- lua_regex_cache_max_entries' default; regex.py's cache mirrors this one
-- (same keys), and both start over together when it is full.
local MAX_CACHED = 1024

local FLAGS = {
    o = true, j = true, i = true, s = true, m = true, u = true, U = true,
    x = true, d = true, a = true, D = true, J = true,
}

local checked_opts = {}

-- resty.core's parse_regex_opts: any other letter is a caller's bug.
local function check_opts(opts, level)
    if opts == nil then
        return ""
    end
    if checked_opts[opts] then
        return opts
    end
    if type(opts) ~= "string" then
        opts = tostring(opts)
    end
    for i = 1, #opts do
        local flag = sub(opts, i, i)
        if not FLAGS[flag] then
            error(format('unknown flag "%s" (flags "%s")', flag, opts), level + 1)
        end
    end
    checked_opts[opts] = true
    return opts
end

local function check_regex(regex, fname, level)
    local t = type(regex)
    if t == "string" then
        return regex
    end
    if t == "number" then
        return tostring(regex)
    end
    error(format("bad argument #2 to '%s' (string expected, got %s)", fname, t), level + 1)
end

-- key -> { id, ncaptures, names (flat: name, number, ...) or false, dup }
local cache = {}
local ncached = 0

local function compile(regex, opts)
    local key = regex .. "\0" .. opts
    local c = cache[key]
    if c then
        return c
    end
    if ncached >= MAX_CACHED then
        cache = {}
        ncached = 0
        py_clear()
    end
    local id, ncaps, names = py_compile(regex, opts)
    if not id then
        return nil, ncaps
    end
    local list = false
    if names ~= "" then
        list = {}
        local n = 0
        for name, number in gmatch(names, "([%w_]+):(%d+)") do
            list[n + 1] = name
            list[n + 2] = tonumber(number)
            n = n + 2
        end
    end
    c = { id, ncaps, list, find(opts, "D", 1, true) ~= nil }
    cache[key] = c
    ncached = ncached + 1
    return c
end

-- The captures table from a match's offsets (resty.core's collect_captures).
local function collect(c, subj, spans, res)
    local ncaps = c[2]
    local names = c[3]
    if not res then
        res = new_tab(ncaps, names and #names / 2 or 0)
    end
    for i = 0, ncaps do
        local from = spans[2 * i + 1]
        if from >= 0 then
            res[i] = sub(subj, from + 1, spans[2 * i + 2])
        else
            res[i] = false
        end
    end
    if names then
        if c[4] then -- "D": every matched group of that name, in order
            for k = 1, #names, 2 do
                local cap = res[names[k + 1]]
                if cap then
                    local name = names[k]
                    local old = res[name]
                    if old then
                        old[#old + 1] = cap
                    else
                        res[name] = { cap }
                    end
                end
            end
        else
            for k = 1, #names, 2 do
                res[names[k]] = res[names[k + 1]]
            end
        end
    end
    return res
end

local function start_of(ctx)
    if not ctx then
        return 0
    end
    local pos = tonumber(ctx.pos)
    if not pos or pos <= 0 then
        return 0
    end
    return floor(pos) - 1
end

local re = {}

-- captures, err = ngx.re.match(subject, regex, options?, ctx?, res_table?)
function re.match(subj, regex, opts, ctx, res)
    subj = tostring(subj)
    regex = check_regex(regex, "match", 2)
    opts = check_opts(opts, 2)
    local c, err = compile(regex, opts)
    if not c then
        return nil, err
    end
    local spans = { py_exec(c[1], subj, start_of(ctx)) }
    local from = spans[1]
    if from == nil then
        return nil
    end
    if from == false then
        return nil, spans[2]
    end
    if ctx then
        ctx.pos = spans[2] + 1
    end
    return collect(c, subj, spans, res)
end

-- from, to, err = ngx.re.find(subject, regex, options?, ctx?, nth?)
function re.find(subj, regex, opts, ctx, nth)
    subj = tostring(subj)
    regex = check_regex(regex, "find", 2)
    opts = check_opts(opts, 2)
    local c, err = compile(regex, opts)
    if not c then
        return nil, nil, err
    end
    local spans = { py_exec(c[1], subj, start_of(ctx)) }
    local from = spans[1]
    if from == nil then
        return nil
    end
    if from == false then
        return nil, nil, spans[2]
    end
    if ctx then
        ctx.pos = spans[2] + 1
    end
    if not nth or nth < 0 then
        nth = 0
    end
    if nth > c[2] then
        return nil, nil, "nth out of bound"
    end
    from = spans[2 * nth + 1]
    if not from or from < 0 then
        return nil, nil
    end
    return from + 1, spans[2 * nth + 2]
end

local function gmatch_next(self)
    local pos = self.pos
    if not pos then
        return nil -- exhausted
    end
    local subj = self.subj
    local c = self.compiled
    local spans = { py_exec(c[1], subj, pos) }
    local from = spans[1]
    if from == nil then
        self.pos = nil
        return nil
    end
    if from == false then
        self.pos = nil
        return nil, spans[2]
    end
    local to = spans[2]
    if to == from then -- an empty match: step over one byte
        to = to + 1
        if to > #subj then
            self.pos = nil
            return collect(c, subj, spans)
        end
    end
    self.pos = to
    return collect(c, subj, spans)
end

local gmatch_mt = { __call = gmatch_next }

-- iterator, err = ngx.re.gmatch(subject, regex, options?)
function re.gmatch(subj, regex, opts)
    subj = tostring(subj)
    regex = check_regex(regex, "gmatch", 2)
    opts = check_opts(opts, 2)
    local c, err = compile(regex, opts)
    if not c then
        return nil, err
    end
    return setmetatable({ compiled = c, subj = subj, pos = 0 }, gmatch_mt)
end

local function sub_func(c, subj, replace, global)
    local len = #subj
    local id = c[1]
    local count, pos, copied = 0, 0, 0
    local buf, nbuf = {}, 0
    while true do
        local spans = { py_exec(id, subj, pos) }
        local from = spans[1]
        if from == nil then
            break
        end
        if from == false then
            return nil, nil, spans[2]
        end
        count = count + 1
        local to = spans[2]
        local piece = tostring(replace(collect(c, subj, spans)))
        buf[nbuf + 1] = sub(subj, copied + 1, from)
        buf[nbuf + 2] = piece
        nbuf = nbuf + 2
        copied, pos = to, to
        if to == from then
            pos = pos + 1
            if pos > len then
                break
            end
        end
        if not global then
            break
        end
    end
    if count == 0 then
        return subj, 0
    end
    buf[nbuf + 1] = sub(subj, copied + 1)
    return concat(buf), count
end

local function sub_helper(fname, subj, regex, replace, opts, global)
    regex = check_regex(regex, fname, 3)
    opts = check_opts(opts, 3)
    local c, err = compile(regex, opts)
    if not c then
        return nil, nil, err
    end
    subj = tostring(subj)
    if type(replace) == "function" then
        return sub_func(c, subj, replace, global)
    end
    if type(replace) ~= "string" then
        replace = tostring(replace)
    end
    return py_sub(c[1], subj, replace, global)
end

-- newstr, n, err = ngx.re.sub(subject, regex, replace, options?)
function re.sub(subj, regex, replace, opts)
    return sub_helper("sub", subj, regex, replace, opts, false)
end

-- newstr, n, err = ngx.re.gsub(subject, regex, replace, options?)
function re.gsub(subj, regex, replace, opts)
    return sub_helper("gsub", subj, regex, replace, opts, true)
end

ngx.re = re

---------------------------------------------------------------- ngx.re module

-- lua-resty-core's ngx/re.lua: split and opt.  Its own file is on Debian's
-- package.path but needs the FFI half of OpenResty; this one is preloaded.

-- One match from ctx.pos (0-based), as ngx/re.lua's re_split_helper.
local function split_step(c, subj, ctx)
    local pos = ctx.pos
    if pos < 0 then
        pos = 0
    end
    local spans = { py_exec(c[1], subj, pos) }
    local from = spans[1]
    if from == nil then
        return nil
    end
    if from == false then
        return nil, nil, nil, spans[2]
    end
    local to = spans[2]
    if from == to then
        ctx.pos = to + 1
    else
        ctx.pos = to
    end
    if c[2] > 0 and spans[3] and spans[3] >= 0 then
        return from + 1, to + 1, sub(subj, spans[3] + 1, spans[4])
    end
    return from + 1, to + 1
end

local split_ctx = {}

-- res, err = require("ngx.re").split(subject, regex, options?, ctx?, max?, res?)
local function split(subj, regex, opts, ctx, max, res)
    subj = tostring(subj)
    if not ctx then
        ctx = split_ctx
        ctx.pos = 1
    elseif not ctx.pos then
        ctx.pos = 1
    end
    max = max or 0
    if not res then
        res = {}
    elseif type(res) ~= "table" then
        error("res is not a table", 2)
    end
    local len = #subj
    if ctx.pos > len then
        res[1] = nil
        return res
    end
    regex = check_regex(regex, "split", 2)
    opts = check_opts(opts, 2)
    local c, err = compile(regex, opts)
    if not c then
        return nil, err
    end
    local sub_idx = ctx.pos
    local res_idx = 0
    local last_empty_match
    local count = 1
    ctx.pos = sub_idx - 1
    while max <= 0 or count < max do
        local from, to, capture, e = split_step(c, subj, ctx)
        if e then
            return nil, e
        end
        if not from then
            break
        end
        if last_empty_match then
            sub_idx = last_empty_match
        end
        if from == to then
            last_empty_match = from
        end
        if from > sub_idx or not last_empty_match then
            count = count + 1
            res_idx = res_idx + 1
            res[res_idx] = sub(subj, sub_idx, from - 1)
            if capture then
                res_idx = res_idx + 1
                res[res_idx] = capture
            end
            sub_idx = to
            if sub_idx > len then
                break
            end
        end
    end
    if max <= 0 and sub_idx > len then
        for i = res_idx, 1, -1 do
            if res[i] ~= "" then
                res_idx = i
                break
            end
            res[i] = nil
        end
    else
        res_idx = res_idx + 1
        res[res_idx] = sub(subj, sub_idx)
    end
    res[res_idx + 1] = nil
    return res
end

local function opt(option, value)
    if option == "jit_stack_size" then
        return -- no JIT stack here
    end
    error("unrecognized option name", 2)
end

-- (lua-resty-core 0.1.25's version: that of ngx.config.ngx_lua_version 10023)
package.loaded["ngx.re"] = { version = "0.1.25", split = split, opt = opt }

return re
