-- The instruction budget of a context (a request, or one run of a timer),
-- and on LuaJIT the soft memory limit of the VM.
--
-- Loaded by fcgi_lua/limits.py before ngx.lua, when max_instructions is
-- set or (LuaJIT) lua_memory_limit is, so that every coroutine the
-- prelude, thread.lua and scripts create goes through the coroutine.create
-- below and carries the count hook, and ngx.lua caches the checked
-- coroutine.resume, string.rep, table.concat below.  Returns
-- { bind = fn }: engine.py binds it to the driver's "which context runs
-- now" once ngx.lua is loaded.
--
-- PUC Lua keeps hooks per coroutine (and a coroutine inherits its
-- creator's C hook but not the Lua function, hence the wrapper); LuaJIT
-- keeps one hook for the whole VM and ignores it in compiled traces, so
-- the JIT is off while this file runs the hook (docs/runtimes.md).
--
-- The soft memory limit (`memory_kb`, LuaJIT only: PUC Lua's allocator
-- enforces lua_memory_limit itself) is checked where Lua code runs: in
-- the count hook, before every resume, and by the builtins that build a
-- large string in one C call (no hook runs inside it).  Past the limit,
-- after a full collection, the running context gets "not enough memory",
-- as PUC Lua's allocator raises it: catchable once; a context that caught
-- it and is still over the limit at the next check fails at every
-- instruction, as after the budget.

local budget, step, memory_kb = ...
local vm_wide = jit ~= nil -- LuaJIT: one hook for the whole VM

local sethook = debug.sethook
local co_create = coroutine.create
local co_resume = coroutine.resume
local co_running = coroutine.running
local collectgarbage = collectgarbage
local format = string.format
local rep = string.rep
local concat = table.concat
local type = type
local tonumber = tonumber
local select = select
local tostring = tostring
local error = error

local NOMEM = "not enough memory" -- PUC Lua's message, so one classification fits both

local current = function() return nil end
local fast = true -- the hook fires every `step` instructions (not every one)
local hook

-- Whether the VM holds more than the soft limit (plus `extra` bytes about
-- to be allocated) once its garbage is collected.  The full collection
-- runs only past `threshold`, then tells live data from garbage the
-- incremental collector has not reached yet, as PUC Lua's emergency
-- collection does.  The next one waits until the heap grew by an eighth
-- of the limit past what was live: a full collection each time garbage
-- tops a heap that is nearly all live made a 256 MB hog take 14 s
-- instead of 1.
local threshold = memory_kb
local function over_memory(extra)
    local extra_kb = extra / 1024
    if collectgarbage("count") + extra_kb <= threshold then
        return false
    end
    collectgarbage()
    local live = collectgarbage("count")
    local next_at = live + memory_kb / 8
    threshold = next_at > memory_kb and next_at or memory_kb
    return live + extra_kb > memory_kb
end

local function stop(co, ctx)
    -- From now on every instruction fails, so a pcall around the loop
    -- cannot swallow the error: the caller's next instruction raises again.
    ctx.stopped = true
    fast = false
    if vm_wide then
        sethook(hook, "", 1)
    else
        sethook(co, hook, "", 1)
    end
end

local function memory_error(ctx, level) -- level: as error()'s, seen from the caller
    if ctx ~= nil then
        ctx.limit = "memory"
    end
    error(NOMEM, level > 0 and level + 1 or 0)
end

hook = function()
    local co, main = co_running()
    if co == nil or main then
        return -- LuaJIT: the driver's own code on the main thread
    end
    local ctx = current()
    if ctx == nil or ctx.dead then
        return
    end
    if ctx.stopped then
        if ctx.limit == "memory" then
            error(NOMEM, 0)
        end
        error(format("instruction budget of %d exceeded (max_instructions)", budget), 2)
    end
    if not fast and vm_wide then
        fast = true -- another context runs now: back to the cheap pace
        sethook(hook, "", step)
    end
    if budget > 0 then
        local used = (ctx.instructions or 0) + step
        ctx.instructions = used
        if used > budget then
            ctx.limit = "instructions"
            stop(co, ctx)
            error(format("instruction budget of %d exceeded (max_instructions)", budget), 2)
        end
    end
    if memory_kb > 0 and over_memory(0) then
        if ctx.limit == "memory" then -- it caught the first one and goes on
            stop(co, ctx)
        end
        memory_error(ctx, 0)
    end
end

-- A script must not lift its own budget.
debug.sethook = function()
    error("debug.sethook is not available: fcgi-lua's limits use the hook", 2)
end

if vm_wide then
    jit.off() -- compiled traces never run the hook
    jit.flush()
    jit.on = function()
        error("jit.on is not available: the limits need the JIT off (docs/runtimes.md)", 2)
    end
    sethook(hook, "", step)
else
    coroutine.create = function(fn)
        local co = co_create(fn)
        sethook(co, hook, "", step)
        return co
    end
end

if memory_kb > 0 then
    -- Before every resume (the driver's too: ngx.lua caches this one),
    -- what a C call, a Python result or a yield left counts.
    coroutine.resume = function(co, ...)
        if over_memory(0) then
            local ctx = current()
            if ctx ~= nil then
                ctx.limit = "memory"
            end
            return false, NOMEM
        end
        return co_resume(co, ...)
    end

    -- The builtins that can build a huge string in one C call, where no
    -- hook runs: their result's size is known (or bounded) beforehand.
    string.rep = function(s, n, sep)
        if type(n) == "number" and n > 1 then
            local size = #tostring(s) * n
            if sep ~= nil then
                size = size + #tostring(sep) * (n - 1)
            end
            if size > 65536 and over_memory(size) then
                memory_error(current(), 2)
            end
        end
        return rep(s, n, sep)
    end

    table.concat = function(t, sep, i, j)
        if type(t) == "table" then
            local first, last = tonumber(i or 1), tonumber(j or #t)
            if first and last then -- else concat raises its own error
                local size, ssep = 0, sep and #tostring(sep) or 0
                for k = first, last do
                    local v = t[k]
                    size = size + (type(v) == "string" and #v or 24) + ssep
                end
                if size > 65536 and over_memory(size) then
                    memory_error(current(), 2)
                end
            end
        end
        return concat(t, sep, i, j)
    end

    string.format = function(fmt, ...)
        local n = select("#", ...)
        if n > 0 then
            local size = #tostring(fmt)
            for k = 1, n do
                local v = select(k, ...)
                size = size + (type(v) == "string" and #v or 100)
            end
            if size > 65536 and over_memory(size) then
                memory_error(current(), 2)
            end
        end
        return format(fmt, ...)
    end
end

return {
    bind = function(context) current = context end,
}
