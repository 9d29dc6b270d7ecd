-- The rest of ngx: config, worker, sleep, phase, ngx.status / ngx.ctx /
-- headers_sent, ndk (ngx_http_lua_misc.c, _phase.c, _ctx.c, _sleep.c, _worker.c).
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local helpers = core.helpers
local type = type
local tostring = tostring
local tonumber = tonumber
local select = select
local error = error
local rawset = rawset
local setmetatable = setmetatable
local format = string.format
local floor = math.floor
local co_yield = coroutine.yield

local IO = core.IO
local log_error = core.log_error -- log.lua
local no_request = core.no_request

ngx.config = {
    subsystem = "http",
    ngx_lua_version = 10023, -- the lua-nginx-module API level mirrored
    nginx_version = 1022001,
    debug = helpers.debug,
    prefix = function() return helpers.prefix end, -- the directory fcgi-lua started in
    nginx_configure = function() return "" end,
}

local worker_pid = helpers.pid
local worker_id = helpers.worker_id
local worker_count = helpers.worker_count
ngx.worker = {
    pid = function() return worker_pid end,
    id = function() return worker_id end,
    count = function() return worker_count end,
    pids = function() return helpers.worker_pids() end,
    exiting = function() return false end,
}

function ngx.sleep(sec)
    if not core.cur_ctx then
        no_request()
    end
    local s = tonumber(sec)
    if s == nil then
        error("bad argument #1 to 'sleep' (number expected, got " .. type(sec) .. ")", 2)
    end
    if s < 0 then
        error('invalid sleep duration "' .. format("%d", floor(s * 1000)) .. '"', 2)
    end
    co_yield(IO, "sleep", s)
end

ngx.get_phase = function()
    if core.phase then
        return core.phase -- "init", "init_worker"
    end
    return (core.cur or not core.cur_ctx) and "content" or "timer"
end

local ngx_dynamic = {
    status = function(r) return r.status end,
    ctx = function(r)
        local ctx = r.ctx
        if not ctx then
            ctx = {}
            r.ctx = ctx
        end
        return ctx
    end,
    headers_sent = function(r) return r.header_sent end,
    is_subrequest = function() return false end, -- OpenResty's comes from here too
}

-- Names OpenResty has in `ngx` (t/062-count.t counts them): the phase as
-- lua-nginx-module's context number, ngx.arg (set_by_lua's and
-- body_filter_by_lua's arguments: no such phase here) and
-- run_worker_thread (no thread pool exists in fcgi-lua).
local phase_numbers = { content = 0x0008, timer = 0x0080, init_worker = 0x0100 }
local phase_contexts = {
    content = "content_by_lua*", timer = "ngx.timer", init_worker = "init_worker_by_lua*",
    init = "init_by_lua*",
}

ngx._phase_ctx = function()
    return phase_numbers[ngx.get_phase()]
end

ngx.get_raw_phase = function()
    return phase_numbers[ngx.get_phase()]
end

ngx.arg = setmetatable({}, {
    __index = function()
        if not (core.cur or core.cur_ctx) then
            no_request()
        end
        error("API disabled in the current context", 2)
    end,
    __newindex = function()
        error("API disabled in the context of " .. phase_contexts[ngx.get_phase()], 2)
    end,
})

ngx.run_worker_thread = function(...)
    if not (core.cur or core.cur_ctx) then
        no_request()
    end
    if select("#", ...) < 3 then
        return false, "expecting at least 3 arguments"
    end
    local pool = ...
    if type(pool) ~= "string" and type(pool) ~= "number" then
        return false, "threadpool should be a string"
    end
    return false, "thread pool " .. pool .. " not found"
end

-- ndk.set_var.DIRECTIVE(value): an nginx set_* directive (set-misc ...) as
-- a function.  Over FastCGI there are no nginx directives: every lookup
-- fails as it does in an nginx built without the directive's module.
ndk = {
    set_var = setmetatable({}, {
        __index = function(_, name)
            error('ndk.set_var: directive "' .. tostring(name)
                  .. '" not found or does not use ndk_set_var_value', 2)
        end,
        __newindex = function()
            error("not allowed", 2)
        end,
    }),
}


setmetatable(ngx, {
    __index = function(_, key)
        local get = ngx_dynamic[key]
        if get then
            local r = core.cur
            if not r then
                if key ~= "ctx" or not core.cur_ctx then
                    no_request()
                end
                r = core.cur_ctx -- a timer has its own ngx.ctx
            end
            return get(r)
        end
        return nil
    end,
    __newindex = function(t, key, value)
        if key == "status" then
            local r = core.cur or no_request()
            if r.header_sent then
                log_error("attempt to set ngx.status after sending out response headers")
                return
            end
            local s = tonumber(value)
            if s == nil then
                error("bad argument #1 to 'status' (number expected, got " .. type(value) .. ")",
                      2)
            end
            -- the integer part, as nginx's lua_tointeger reads it ("201.7": 201)
            r.status = s >= 0 and floor(s) or -floor(-s)
        elseif key == "ctx" then
            local r = core.cur or core.cur_ctx
            if not r then
                no_request()
            end
            if type(value) ~= "table" then
                error("ctx should be a table while getting a " .. type(value) .. " value", 2)
            end
            r.ctx = value
        elseif key == "headers_sent" then
            error("attempt to set ngx.headers_sent", 2)
        elseif t ~= ngx then
            -- a request writing through its read-only view (isolation.lua)
            error("attempt to write ngx." .. tostring(key)
                  .. ": shared by every request and read-only (docs/sandbox.md)", 2)
        else
            rawset(t, key, value)
        end
    end,
})

