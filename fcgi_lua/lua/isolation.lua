-- Isolation between the requests of one VM, with or without the sandbox
-- (docs/sandbox.md, "Isolation").
--
-- Loaded by fcgi_lua/lua/engine.py after every other layer and before
-- sandbox.lua (it keeps the debug library for itself); engine.py calls
-- the `seal` it returns last, once the sandbox (if any) has changed the
-- shared globals.  Sealing builds, once per VM, a read-only view of the
-- shared globals and of every table reachable from them (ngx and its
-- subtables, string, table, io, os, coroutine, package, package.loaded
-- ...), and makes it what a request's global table falls back to:
--
--   * a request's own globals go to its own table (as in OpenResty);
--   * `ngx.say = f`, `string.format = f`, `package.loaded.x = m` (in the
--     sandbox; without it `package` is the real one, as in OpenResty),
--     `getmetatable(_G).__index.x = v` raise "attempt to write ...: shared
--     by every request and read-only" (OpenResty would change them for
--     every later request: a script could capture another's output);
--   * ngx.status, ngx.ctx, ngx.header.X, ngx.var.X, mk.X still write,
--     to the running request;
--   * rawset, setmetatable, getmetatable, setfenv, getfenv, load,
--     loadstring, loadfile, dofile and module, as a request sees them,
--     cannot reach around the views: a shared table or function keeps
--     its metatable and environment, and a loaded chunk's globals are
--     its caller's (the request's), never the shared ones.
--
-- The views cost nothing per request: they are built once, and a global
-- a script reads is two more table hops (no function call) than before.
-- Without the sandbox a script still has the debug library, which reaches
-- everything: isolation there guards against mistakes, the sandbox against
-- hostile scripts.

local helpers, extensions = ...

local type = type
local next = next
local error = error
local tostring = tostring
local rawequal = rawequal
local rawset = rawset
local setmetatable = setmetatable
local getmetatable = getmetatable
local getfenv = getfenv -- nil on 5.2+
local setfenv = setfenv
local huge = math.huge
local G = _G
local env_mt = extensions.env_mt
local current = extensions.current
local d_getmetatable = debug.getmetatable
local d_getupvalue = debug.getupvalue
local d_getregistry = debug.getregistry

-- Strong tables: what they hold lives as long as the VM anyway, and the
-- collector's atomic phase would walk weak ones on every cycle.
local views = {} -- shared table -> its view
local reals = {} -- view -> the shared table
local sealed = {} -- every table that existed when sealed
local walked = {} -- functions whose upvalues were walked

local function read_only(name)
    return function(_, key)
        error("attempt to write " .. name .. "." .. tostring(key)
              .. ": shared by every request and read-only (docs/sandbox.md)", 2)
    end
end

-- Where a view's writes go.  Proxies (ngx, ngx.header, ngx.var, mk)
-- take them: their __newindex writes to the running request (ngx.status,
-- ngx.ctx, a header) or refuses (ngx.say: ngx/misc.lua's __newindex).  The
-- write goes to a table, not through a function here, so the proxy's
-- errors point at the script's line.
local function newindex_for(t, name)
    local mt = d_getmetatable(t)
    if type(mt) == "table" and mt.__newindex then
        if next(t) == nil then
            return t -- empty: every write reaches its __newindex
        end
        if rawequal(t, G.ngx) then
            -- an empty stand-in with ngx's own metatable (resty.core.misc's
            -- magic keys hook into that same table)
            return setmetatable({}, mt)
        end
    end
    return read_only(name)
end

-- ngx.shared.DICT objects are `{id}` read raw by their methods (which
-- check the zone's metatable by identity): no view; their shared metatable
-- refuses new fields instead.  Its methods move to a table of their own
-- that is its own __index, as OpenResty's metatable is, so `dict.__index`
-- lists OpenResty's 22 entries (t/062-count.t TEST 12), not the guards.
local function protect_zones(shared)
    for _, zone in next, shared do
        local mt = d_getmetatable(zone)
        if type(mt) == "table" and mt.__metatable == nil then
            local methods = {}
            for k, v in next, mt do
                methods[k] = v
            end
            methods.__index = methods
            for k in next, methods do
                mt[k] = nil
            end
            mt.__index = methods
            mt.__newindex = read_only("ngx.shared.DICT")
            mt.__metatable = false
        end
    end
end

local view_of

local function fill(shadow, t, name)
    for key, value in next, t do
        if type(value) == "table" then
            if rawequal(t, G.ngx) and key == "shared" then
                protect_zones(value)
            end
            shadow[key] = view_of(value, rawequal(t, G) and tostring(key)
                                             or name .. "." .. tostring(key))
        end
    end
end

-- Each table's name in errors: its shortest path from the globals
-- (string.rep, not package.loaded.string.rep).
local names = {}

local function name_all()
    local queue, first, last = { G }, 1, 1
    names[G] = "_G"
    while first <= last do
        local t = queue[first]
        first = first + 1
        for key, value in next, t do
            if type(value) == "table" and names[value] == nil then
                names[value] = rawequal(t, G) and tostring(key) or names[t] .. "." .. tostring(key)
                last = last + 1
                queue[last] = value
            end
        end
    end
end

view_of = function(t, name)
    local view = views[t]
    if view then
        return view
    end
    if reals[t] then
        return t
    end
    name = names[t] or name
    view = {}
    views[t] = view
    reals[view] = t
    local shadow = {}
    if not rawequal(t, G.ngx and G.ngx.shared) then
        fill(shadow, t, name)
    else
        protect_zones(t) -- the zones themselves stay raw
    end
    setmetatable(shadow, { __index = t })
    setmetatable(view, {
        __index = shadow,
        __newindex = newindex_for(t, name),
        __len = function() return #t end,
        -- 5.2+ (and LuaJIT built with 5.2 compat): pairs sees the table's
        -- keys with the values a request reads (its tables as views, the
        -- guarded builtins: not the raw rawset or coroutine.resume)
        __pairs = function()
            return function(_, key)
                local k = next(t, key)
                if k == nil then
                    return nil
                end
                local v = shadow[k]
                if type(v) == "table" and not reals[v] then
                    v = view_of(v, name .. "." .. tostring(k))
                end
                return k, v
            end, view, nil
        end,
        __metatable = false,
    })
    return view
end

-- Everything reachable from the globals and the registry (upvalues,
-- metatables, environments): what no request may rawset or re-metatable.
local function walk(root)
    local stack, n = { root }, 1
    while n > 0 do
        local o = stack[n]
        stack[n] = nil
        n = n - 1
        local kind = type(o)
        if kind == "table" then
            if not sealed[o] and not reals[o] then
                sealed[o] = true
                for k, v in next, o do
                    n = n + 1
                    stack[n] = k
                    n = n + 1
                    stack[n] = v
                end
                n = n + 1
                stack[n] = d_getmetatable(o)
            end
        elseif kind == "function" then
            if not walked[o] then
                walked[o] = true
                for i = 1, huge do
                    local name, v = d_getupvalue(o, i)
                    if name == nil then
                        break
                    end
                    n = n + 1
                    stack[n] = v
                end
                if getfenv then
                    n = n + 1
                    stack[n] = getfenv(o)
                end
            end
        elseif kind == "userdata" then
            n = n + 1
            stack[n] = d_getmetatable(o)
        end
    end
end

local function shared(t)
    return reals[t] or sealed[t]
end

---------------------------------------------------------------- guarded builtins

local guards = {}

function guards.rawset(t, key, value)
    if shared(t) then
        error("bad argument #1 to 'rawset' (a shared table, read-only)", 2)
    end
    return rawset(t, key, value)
end

function guards.setmetatable(t, mt)
    if shared(t) then
        error("cannot change the metatable of a shared table", 2)
    end
    return setmetatable(t, mt)
end

function guards.getmetatable(obj)
    local mt = getmetatable(obj)
    if type(mt) == "table" and sealed[mt] then
        return view_of(mt, "metatable")
    end
    return mt
end

-- pairs of a view walks the shared table (its tables as views): LuaJIT
-- and 5.1 ignore the views' __pairs (t/062-count.t: pairs(ngx.req))
local pairs = pairs

function guards.pairs(t)
    if reals[t] then
        return d_getmetatable(t).__pairs()
    end
    return pairs(t)
end

function guards.module()
    error("module() is not available in a request: it writes the shared globals", 2)
end

local view_G -- the globals' view, once sealed

-- The globals a chunk loaded by `level`'s function gets: that function's
-- own (a request's table), never the shared table itself.
local function caller_env(level)
    if getfenv then
        local env = getfenv(level + 1)
        if rawequal(env, G) then
            return view_G
        end
        return env
    end
    local r = current()
    return r and r.env or view_G
end

local function with_env(f, env)
    if f and setfenv then
        setfenv(f, env)
    end
    return f
end

function guards.load(chunk, name, mode, env)
    if env == nil then
        env = caller_env(2)
    end
    local f, err
    if setfenv then
        f, err = G.load(chunk, name, mode)
        return with_env(f, env), err
    end
    return G.load(chunk, name, mode, env)
end

if G.loadstring then
    function guards.loadstring(s, name)
        local f, err = G.loadstring(s, name)
        return with_env(f, caller_env(2)), err
    end
end

function guards.loadfile(path, mode, env)
    if env == nil then
        env = caller_env(2)
    end
    if setfenv then
        local f, err = G.loadfile(path, mode)
        return with_env(f, env), err
    end
    return G.loadfile(path, mode, env)
end

function guards.dofile(path)
    local f, err = guards.loadfile(path, nil, caller_env(2))
    if not f then
        error(err, 2)
    end
    return f()
end

if getfenv then
    -- level 0 is the thread's (the shared) globals; numeric levels count
    -- from the caller, as if this function were the builtin
    local function target(f)
        if f == nil then
            return 2
        end
        if type(f) == "number" and f > 0 then
            return f + 1
        end
        return f
    end

    function guards.getfenv(f)
        if f == 0 then
            return view_G
        end
        local env = getfenv(target(f))
        if rawequal(env, G) then
            return view_G
        end
        return env
    end

    function guards.setfenv(f, env)
        if f == 0 then
            error("setfenv(0) is not available in a request: the thread's globals are shared", 2)
        end
        local t = target(f)
        local old = getfenv(t)
        if rawequal(old, G) or shared(old) then
            error("cannot change the environment of a shared function", 2)
        end
        local fn = setfenv(t, env) -- not a tail call: the level counts this frame
        return fn
    end
end

---------------------------------------------------------------- coroutines

-- A coroutine belongs to the context (request or timer) that made it; no
-- other may resume it: a request holding another's suspended coroutine
-- would run that request's code in its own name, or the reverse.
local owners = extensions.owners -- ngx.lua registers each request's own
local co_create = coroutine.create
local co_resume = coroutine.resume -- ngx/coroutine.lua's: passes I/O yields up
local co_wrap = coroutine.wrap
local co_close = coroutine.close
local context = extensions.context

local function owned(co)
    local owner = owners[co]
    if owner == nil then
        return false
    end
    return owner == false or rawequal(owner, context() or false)
end

local function foreign()
    error("cannot resume a coroutine of another request", 3)
end

local co_guards = {}

function co_guards.create(f)
    local co = co_create(f)
    owners[co] = context() or false
    return co
end

function co_guards.resume(co, ...)
    if type(co) ~= "thread" then -- LuaJIT's error, not "another request's"
        error("bad argument #1 to 'resume' (coroutine expected)", 2)
    end
    if not owned(co) then
        return false, "cannot resume a coroutine of another request"
    end
    return co_resume(co, ...)
end

function co_guards.wrap(f)
    local owner = context() or false
    local resume = co_wrap(f)
    return function(...)
        if owner ~= false and not rawequal(owner, context()) then
            foreign()
        end
        return resume(...)
    end
end

if co_close then
    function co_guards.close(co)
        if not owned(co) then
            return false, "cannot close a coroutine of another request"
        end
        return co_close(co)
    end
end

---------------------------------------------------------------- seal

local function seal()
    walk(G)
    walk(d_getregistry())
    walk(d_getmetatable(""))
    name_all()
    view_G = view_of(G, "_G")
    -- the guarded builtins, and a coroutine table with the guarded ones
    local shadow_G = d_getmetatable(view_G).__index
    for name, fn in next, guards do
        if G[name] ~= nil then
            shadow_G[name] = fn
        end
    end
    local co_shadow = d_getmetatable(view_G.coroutine).__index
    for name, fn in next, co_guards do
        co_shadow[name] = fn
    end
    -- OpenResty's coroutine table (ngx_http_lua_coroutine.c): `_create`
    -- ... `_status` (the standard functions there) and `__create` ...
    -- (its request-aware ones) beside the ones scripts call, and no
    -- others (no isyieldable on LuaJIT).  Here both are the functions a
    -- request calls: a raw resume would reach around the owner check.
    local co = G.coroutine
    for _, name in next, { "create", "wrap", "resume", "yield", "status" } do
        rawset(co, "_" .. name, co[name])
        rawset(co, "__" .. name, co[name])
        co_shadow["_" .. name] = co_shadow[name]
        co_shadow["__" .. name] = co_shadow[name]
    end
    if G.jit then
        rawset(co, "isyieldable", nil)
    end
    -- a sandbox: modules come back as views (no `M.f = wrapper` across
    -- requests); their instances' metatables are sealed as they load
    if extensions.sandboxed then
        local require = G.require
        local hidden = extensions.hidden_modules or {}
        local loaded_shadow = d_getmetatable(view_G.package.loaded).__index
        local preload_shadow = d_getmetatable(view_G.package.preload).__index
        for name in next, hidden do
            loaded_shadow[name] = false
            preload_shadow[name] = false
        end
        shadow_G.require = function(name)
            if hidden[name] then
                error("module '" .. tostring(name) .. "' is not available in the sandbox"
                      .. " (docs/sandbox.md)", 2)
            end
            local m = require(name)
            if type(m) == "table" then
                walk(m)
                return view_of(m, tostring(name))
            end
            return m
        end
    end
    -- Without the sandbox `package` stays the real one, as in OpenResty:
    -- `package.path = dir .. "/?.lua;" .. package.path` and a stash in
    -- package.loaded are common idioms, and require reads the real table
    -- anyway.  (Isolation without the sandbox guards against mistakes,
    -- not hostile scripts: package.loaded's modules are real tables.)
    if not extensions.sandboxed then
        shadow_G.package = G.package
        -- but require "ngx" (or "string") is the ngx (string) a request
        -- sees, as in OpenResty (t/004-require.t TEST 7)
        local loaded = G.package.loaded
        for name, m in next, loaded do
            if name ~= "_G" and type(m) == "table" and rawequal(G[name], m) and views[m] then
                loaded[name] = views[m]
            end
        end
    end
    -- a request's global table: its own, falling back to the view; its
    -- metatable is shared by every request, so hidden
    env_mt.__index = view_G
    env_mt.__metatable = setmetatable({}, {
        __index = { __index = view_G },
        __newindex = read_only("getmetatable(_G)"),
        __metatable = false,
    })
    -- the string metatable: ("").x reaches the string table
    local string_mt = d_getmetatable("")
    if string_mt then
        string_mt.__metatable = view_of(string_mt, "getmetatable('')")
    end
    return view_G
end

return { seal = seal, view_of = view_of }
