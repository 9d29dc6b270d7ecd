-- The instruction budget of a context (a request, or one run of a timer).
--
-- Loaded by fcgi_lua/limits.py before ngx.lua, only when max_instructions
-- is set, so that every coroutine the prelude, thread.lua and scripts
-- create goes through the coroutine.create below and carries the count
-- hook.  Returns { bind = fn }: engine.py binds it to the driver's "which
-- context runs now" once ngx.lua is loaded.
--
-- PUC Lua keeps hooks per coroutine (and a coroutine inherits its
-- creator's C hook but not the Lua function, hence the wrapper); LuaJIT
-- keeps one hook for the whole VM and ignores it in compiled traces, so
-- limits.py turns its JIT off when a budget is set (docs/runtimes.md).

local budget, step = ...
local vm_wide = jit ~= nil -- LuaJIT: one hook for the whole VM

local sethook = debug.sethook
local co_create = coroutine.create
local co_running = coroutine.running
local format = string.format
local error = error

local current = function() return nil end
local fast = true -- the hook fires every `step` instructions (not every one)

local hook
hook = function()
    local co, main = co_running()
    if co == nil or main then
        return -- LuaJIT: the driver's own code on the main thread
    end
    local ctx = current()
    if ctx == nil or ctx.dead then
        return
    end
    local used = (ctx.instructions or 0) + step
    ctx.instructions = used
    if used <= budget then
        if not fast and vm_wide then
            fast = true -- another context runs now: back to the cheap pace
            sethook(hook, "", step)
        end
        return
    end
    ctx.limit = "instructions"
    -- From now on every instruction fails, so a pcall around the loop
    -- cannot swallow the error: the caller's next instruction raises again.
    fast = false
    if vm_wide then
        sethook(hook, "", 1)
    else
        sethook(co, hook, "", 1)
    end
    error(format("instruction budget of %d exceeded (max_instructions)", budget), 2)
end

-- A script must not lift its own budget.
debug.sethook = function()
    error("debug.sethook is not available: max_instructions uses the hook", 2)
end

if vm_wide then
    jit.off() -- compiled traces never run the hook
    jit.flush()
    jit.on = function()
        error("jit.on is not available: max_instructions needs the JIT off", 2)
    end
    sethook(hook, "", step)
else
    coroutine.create = function(fn)
        local co = co_create(fn)
        sethook(co, hook, "", step)
        return co
    end
end

return {
    bind = function(context) current = context end,
}
