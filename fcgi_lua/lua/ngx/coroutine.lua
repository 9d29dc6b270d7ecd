-- coroutine.resume and coroutine.wrap that pass the request's I/O yields up
-- (ngx_http_lua_coroutine.c).
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local select = select
local error = error
local setmetatable = setmetatable
local co_create = coroutine.create
local co_resume = coroutine.resume
local co_yield = coroutine.yield
local co_status = coroutine.status
local co_running = coroutine.running

local IO = core.IO

-- The user's coroutines pass our I/O yields up to the request's own
-- coroutine, so ngx.sleep and friends work inside them (as in OpenResty).
-- While one waits, OpenResty's coroutine.status calls it "running" and
-- the coroutine that resumed it "normal" (thread.lua): io_waiting[co],
-- passing[resumer] = co.
local io_waiting = setmetatable({}, { __mode = "k" })
local passing = setmetatable({}, { __mode = "k" })
local pass_up

local function passed_down(me, co, ...)
    passing[me] = nil
    io_waiting[co] = nil
    return pass_up(co, co_resume(co, ...))
end

function pass_up(co, ok, ...)
    if ok and (...) == IO and co_status(co) == "suspended" then
        local me = co_running() or false -- 5.1: nil in the main thread
        passing[me] = co
        io_waiting[co] = true
        return passed_down(me, co, co_yield(IO, select(2, ...)))
    end
    return ok, ...
end

local function user_resume(co, ...)
    return pass_up(co, co_resume(co, ...))
end

local function wrap_result(ok, ...)
    if not ok then
        error((...), 0)
    end
    return ...
end

coroutine.resume = user_resume
coroutine.wrap = function(f)
    local co = co_create(f)
    return function(...)
        return wrap_result(user_resume(co, ...))
    end
end

core.io_waiting = io_waiting
core.passing = passing
