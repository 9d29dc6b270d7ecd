-- Light threads (ngx.thread), ngx.on_abort, ngx.semaphore and ngx.timer:
-- everything that runs more than one coroutine per context, or coroutines
-- outside any request.
--
-- Loaded once per VM, after ngx.lua, by fcgi_lua/lua/scheduler.py, which
-- passes its functions (P) and the driver's extension hooks (ext).
--
-- Contexts.  Every coroutine runs on behalf of a *context*: a request (the
-- request table `r` itself) or a timer (a table with `timer = true` and no
-- request behind it).  The driver (ngx.lua) enters a context before each
-- resume (`ext.enter`): then `ext.current()` is the request (nil in a
-- timer) and `ext.context()` the context.  Request-only APIs fail in a
-- timer with "API disabled in the context of ngx.timer"; sleeps, cosockets
-- (owned by the context, closed when it ends), light threads, semaphores,
-- ngx.ctx and timers work in both.
--
-- Threads.  A context starts with one coroutine, its entry thread, driven
-- by ngx.lua's step(): one command yielded, one command performed.  The
-- first ngx.thread.spawn (or ngx.on_abort) gives the context a thread
-- table (`ctx.threads`); from then on the driver hands every resume result
-- to this file, which schedules all of the context's threads: each resume
-- returns to Python the list of commands the threads now wait on
-- ("threads", {id, cmd, arg, ...}, n) -- id 0 is the entry thread,
-- cmd "kill" cancels a killed thread's command -- and Python resumes each
-- thread by id when its command completes (drive_thread).  Waiting on
-- another thread of the same context (ngx.thread.wait) never leaves Lua:
-- the waiter is resumed by the scheduler when a child ends.  A context
-- ends when its entry thread and all its light threads have ended, when
-- any thread calls ngx.exit, or when the entry thread fails.
--
-- Semantics follow lua-nginx-module 0.10.23 (ngx_http_lua_uthread.c,
-- ngx_http_lua_timer.c, ngx_http_lua_semaphore.c) and lua-resty-core's
-- ngx/semaphore.lua; the differences are listed in docs/lua-api.md.

local P, ext = ...

local type = type
local tostring = tostring
local tonumber = tonumber
local select = select
local pairs = pairs
local error = error
local setmetatable = setmetatable
local floor = math.floor
local co_create = coroutine.create
local co_yield = coroutine.yield
local co_status = coroutine.status
local co_running = coroutine.running
local traceback = debug.traceback
local getinfo = debug.getinfo
local unpack = unpack or table.unpack

local IO = ext.IO
local co_resume = ext.resume      -- raw: the scheduler resumes threads itself
local enter = ext.enter           -- enter(ctx, now): the context of the next resume
local context = ext.context       -- the context running now, or nil
local step = ext.step             -- an entry thread's resume result, for Python
local finish = ext.finish         -- the context's end: "done", output
local finish_exit = ext.finish_exit
local fail = ext.fail             -- the entry thread failed: "error", traceback, response
local phase = ext.phase           -- "init" / "init_worker" while config's init scripts run

local py_park = P.park
local py_unpark = P.unpark
local py_log = ext.log
local py_timer_add = P.timer_add
local py_running_count = P.running_count
local py_pending_count = P.pending_count
local py_exiting = P.exiting
local TIMER = P.timer -- the handle of every timer's context in Python

local ERR = 4

-- Every light thread of the VM, by coroutine, to tell "another request's
-- thread" from "not a thread at all" (weak: threads die with their context).
local all_threads = setmetatable({}, { __mode = "k" })

-- The phrases of OpenResty: init_worker_by_lua* runs in a fake request
-- whose context refuses to wait; init_by_lua* has no request at all.
local INIT_WORKER_DISABLED = "API disabled in the context of init_worker_by_lua*"

local function no_context()
    if phase() == "init_worker" then
        error(INIT_WORKER_DISABLED, 3)
    end
    error("no request found", 3)
end

-- ngx.timer.* needs a context, or init_worker_script (its main use).
local function timers_allowed()
    return context() ~= nil or phase() == "init_worker"
end

---------------------------------------------------------------- scheduling

local function ensure_threads(ctx)
    if ctx.threads then
        return
    end
    local entry = { co = ctx.co, id = 0, state = "running", entry = true }
    ctx.threads = {}        -- coroutine -> record, light threads only
    ctx.by_id = { [0] = entry }
    ctx.entry = entry
    ctx.next_id = 0
    ctx.running = 0         -- light threads not ended yet
    ctx.ops = {}            -- commands for Python: id, cmd, arg, ...
    ctx.nops = 0
    ctx.nposted = 0         -- of those, threads that let others run first
    ctx.spawning = 0        -- threads inside ngx.thread.spawn (posted too)
    ctx.ready = {}          -- waiters to resume: { rec, values }
    ctx.current = ctx.current or entry -- the top-level thread being resumed
end

local function new_thread(ctx, fn, parent)
    local id = ctx.next_id + 1
    ctx.next_id = id
    local rec = { co = co_create(fn), id = id, state = "running", parent = parent, ctx = ctx }
    ctx.threads[rec.co] = rec
    ctx.by_id[id] = rec
    ctx.running = ctx.running + 1
    all_threads[rec.co] = rec
    return rec
end

local function push_op(ctx, rec, cmd, arg)
    local n = ctx.nops
    local ops = ctx.ops
    ops[n + 1] = rec.id
    ops[n + 2] = cmd
    ops[n + 3] = arg
    ctx.nops = n + 3
    rec.pending = true
end

local function alive(ctx, co)
    local rec = ctx.threads[co]
    if rec then
        return rec.state == "running"
    end
    if co == ctx.co then
        return ctx.entry.state == "running"
    end
    return co_status(co) ~= "dead" -- a plain coroutine of a thread
end

-- Semaphore waiters of the context that were never resumed; released
-- when their thread is killed or the context ends.
local release_waiter

local function release_parked(ctx, rec)
    local parked = ctx.parked
    if not parked then
        return
    end
    for w in pairs(parked) do
        if rec == nil or w.rec == rec then
            parked[w] = nil
            release_waiter(w)
        end
    end
end

-- A light thread ended with `results` ({ n, true, ... } or { n, false, err }).
local function thread_ended(ctx, rec, results)
    ctx.running = ctx.running - 1
    local waiter = rec.waiter
    if waiter then -- its parent waits for it in ngx.thread.wait
        local waiting = waiter.waiting
        for i = 1, #waiting do
            waiting[i].waiter = nil
        end
        waiter.waiting = nil
        rec.state = "dead"
        local ready = ctx.ready
        ready[#ready + 1] = { waiter, results }
    elseif alive(ctx, rec.parent) then
        rec.state = "zombie" -- until its parent waits for it
        rec.results = results
    else
        rec.state = "dead"
    end
end

local function pack_results(...)
    return { n = select("#", ...) + 1, true, ... }
end

-- What one resume of `rec` leaves: nothing, or the context's end
-- ("done"/"error", ...) for Python.
local function settle(ctx, rec, ok, ...)
    if not ok then
        local err = ...
        if rec.entry then
            local c, tb, response = fail(ctx, err)
            return c, tb, ctx.aborted and "" or response
        end
        local msg = type(err) == "string" and err or tostring(err)
        py_log(ERR, "lua user thread aborted: runtime error: " .. traceback(rec.co, msg))
        thread_ended(ctx, rec, { n = 2, false, err })
        return nil
    end
    local first, cmd, arg = ...
    if co_status(rec.co) == "dead" then
        if rec.entry then
            rec.state = "dead"
        else
            thread_ended(ctx, rec, pack_results(...))
        end
        return nil
    end
    if first == IO then
        if cmd == "exit" then
            ctx.dead = true
            if ctx.aborted then
                return "done", "", nil
            end
            return finish_exit(ctx, arg)
        elseif cmd == "uthread_wait" then
            return nil -- resumed from ctx.ready when a child ends
        elseif cmd == "posted" then
            return nil -- its turn is in ctx.ops already (thread.spawn)
        end
        push_op(ctx, rec, cmd, arg)
        return nil
    end
    -- a bare coroutine.yield(): let others run
    push_op(ctx, rec, "sleep", 0)
    ctx.nposted = ctx.nposted + 1
    rec.yielded = true -- "suspended" to coroutine.status, not "running"
    return nil
end

local function result(ctx)
    if ctx.entry.state ~= "running" and ctx.running == 0 then
        ctx.dead = true
        if ctx.aborted then -- the client is gone: nothing to send
            return "done", "", nil
        end
        return finish(ctx)
    end
    local ops, n = ctx.ops, ctx.nops
    ctx.ops = {}
    ctx.nops = 0
    ctx.nposted = 0
    return "threads", ops, n
end

-- After `rec` was resumed: settle it, then the waiters it woke.
local function run(ctx, rec, ok, ...)
    local c, a, e = settle(ctx, rec, ok, ...)
    if c then
        return c, a, e
    end
    local ready = ctx.ready
    local i = 1
    while ready[i] do
        local item = ready[i]
        ready[i] = nil
        i = i + 1
        local waiter, values = item[1], item[2]
        if waiter.state == "running" then
            ctx.current = waiter
            c, a, e = settle(ctx, waiter, co_resume(waiter.co, unpack(values, 1, values.n)))
            if c then
                return c, a, e
            end
        end
    end
    ctx.ready = {}
    return result(ctx)
end

-- ngx.lua's step() for a context with light threads (the entry was resumed).
ext.thread_step = function(ctx, ok, ...)
    local entry = ctx.entry
    ctx.current = entry
    entry.pending = false
    entry.yielded = nil
    return run(ctx, entry, ok, ...)
end

-- Python: cmd, arg, n = drive_thread(ctx, now, id, value) when thread id's
-- command completed with value.
local function drive_thread(ctx, now, id, value)
    enter(ctx, now)
    local rec = ctx.by_id[id]
    if ctx.dead or not rec or rec.state ~= "running" then
        return result(ctx)
    end
    rec.pending = false
    rec.yielded = nil
    ctx.current = rec
    return run(ctx, rec, co_resume(rec.co, value))
end

---------------------------------------------------------------- coroutine.status

-- OpenResty's statuses (ngx_http_lua_coroutine_status): a coroutine that
-- waits on I/O (a light thread, the entry thread, or a user coroutine
-- whose yield was passed up) is "running"; one that resumed a coroutine
-- still waiting is "normal"; a light thread that ended and has not been
-- waited for is a "zombie"; only a bare coroutine.yield() suspends.
local io_waiting = ext.io_waiting
local passing = ext.passing

local function status(co)
    if type(co) ~= "thread" then
        error("bad argument #1 to 'status' (coroutine expected)", 2)
    end
    local st = co_status(co)
    local rec = all_threads[co]
    if rec and rec.state ~= "running" then
        return rec.state -- zombie, dead (ended, waited for or killed)
    end
    if st ~= "suspended" then
        return st
    end
    if passing[co] then
        return "normal"
    end
    if io_waiting[co] then
        return "running"
    end
    if not rec then
        local ctx = context()
        rec = ctx and ctx.entry
        if not rec or rec.co ~= co then
            return st
        end
    end
    return rec.yielded and "suspended" or "running"
end

coroutine.status = status

-- ... and OpenResty's coroutine.resume refuses any but a suspended one
-- with that status ("cannot resume normal coroutine"; LuaJIT says
-- "running" for both)
local user_resume = coroutine.resume
coroutine.resume = function(co, ...)
    if type(co) == "thread" then
        local st = status(co)
        if st ~= "suspended" then
            return false, "cannot resume " .. st .. " coroutine"
        end
    end
    return user_resume(co, ...)
end

---------------------------------------------------------------- ngx.thread

local thread = {}

local function first_run(ctx, rec, prev, ok, ...)
    ctx.current = prev
    local first, cmd, arg = ...
    if ok and first == IO and cmd == "exit" then
        -- ngx.exit in the new thread ends the context, from its parent
        rec.state = "dead"
        ctx.running = ctx.running - 1
        co_yield(IO, "exit", arg) -- never resumed
    end
    settle(ctx, rec, ok, ...) -- a light thread's own end is never final
    return rec.co
end

function thread.spawn(fn, ...)
    local ctx = context()
    if not ctx then
        no_context()
    end
    if type(fn) ~= "function" or getinfo(fn, "S").what == "C" then
        error("bad argument #1 to 'spawn' (Lua function expected)", 2)
    end
    ensure_threads(ctx)
    local rec = new_thread(ctx, fn, co_running())
    local prev = ctx.current
    -- The new thread runs first, until it waits or ends; the spawner is
    -- posted (lua-nginx-module's posted threads, run in order): it goes
    -- on at once unless other threads were posted before it, a bare
    -- coroutine.yield() or a spawner further up (t/093 TEST 10, 11, 17).
    local behind = ctx.nposted > 0 or ctx.spawning > 0
    if behind then
        push_op(ctx, prev, "sleep", 0)
        ctx.nposted = ctx.nposted + 1
    end
    ctx.current = rec
    ctx.spawning = ctx.spawning + 1
    local co = first_run(ctx, rec, prev, co_resume(rec.co, ...))
    ctx.spawning = ctx.spawning - 1
    if behind then
        co_yield(IO, "posted")
    end
    return co
end

local function find_thread(ctx, t, i, fname)
    if type(t) ~= "thread" then
        error("bad argument #" .. i .. " to '" .. fname .. "' (lua thread expected)", 3)
    end
    local rec = all_threads[t]
    if rec and rec.ctx ~= ctx then
        error("no co ctx found", 3)
    end
    return rec
end

function thread.wait(...)
    local ctx = context()
    if not ctx then
        no_context()
    end
    local n = select("#", ...)
    if n == 0 then
        error("at least one coroutine should be specified", 2)
    end
    local me = co_running()
    local waiting = {}
    for i = 1, n do
        local rec = find_thread(ctx, (select(i, ...)), i, "wait")
        if not rec then
            error("attempt to wait on a coroutine that is not a user thread", 2)
        end
        if rec.parent ~= me then
            error("only the parent coroutine can wait on the thread", 2)
        end
        local state = rec.state
        if state == "zombie" then
            rec.state = "dead"
            local results = rec.results
            rec.results = nil
            return unpack(results, 1, results.n)
        elseif state == "dead" then
            if i == n then
                return nil, "already waited or killed"
            end
        else
            waiting[#waiting + 1] = rec
        end
    end
    local top = ctx.current
    top.waiting = waiting
    for i = 1, #waiting do
        waiting[i].waiter = top
    end
    return co_yield(IO, "uthread_wait")
end

function thread.kill(t)
    local ctx = context()
    if not ctx then
        no_context()
    end
    local rec = find_thread(ctx, t, 1, "kill")
    if not rec then
        return nil, "not user thread"
    end
    if rec.parent ~= co_running() then
        return nil, "killer not parent"
    end
    local state = rec.state
    if state == "zombie" then
        rec.state = "dead"
        rec.results = nil
        return nil, "already terminated"
    elseif state == "dead" then
        return nil, "already waited or killed"
    end
    rec.state = "dead"
    ctx.running = ctx.running - 1
    if rec.pending then
        push_op(ctx, rec, "kill", nil)
        local closed = ext.socket_thread_killed -- a socket it waited on goes too
        if closed then
            closed(rec.co)
        end
    end
    local waiting = rec.waiting
    if waiting then
        for i = 1, #waiting do
            waiting[i].waiter = nil
        end
        rec.waiting = nil
    end
    release_parked(ctx, rec)
    return 1
end

ngx.thread = thread

---------------------------------------------------------------- ngx.on_abort

function ngx.on_abort(fn)
    local r = ext.current()
    if not r then
        if context() then
            error("API disabled in the current context", 2)
        end
        no_context()
    end
    if type(fn) ~= "function" or getinfo(fn, "S").what == "C" then
        error("bad argument #1 to 'on_abort' (Lua function expected)", 2)
    end
    if r.on_abort then
        return nil, "duplicate call"
    end
    -- From now on all of the request's waits run as Python tasks, so that
    -- the client's abort can be noticed without cancelling them.
    ensure_threads(r)
    r.on_abort = { fn = fn, parent = co_running() }
    return 1
end

-- Python, when the front server aborted the request: the on_abort
-- handler starts as a light thread -> cmd, arg, n as drive_thread; nil
-- when there is none (then the request stops at once).
local function client_abort(ctx, now)
    local handler = ctx.on_abort
    if not handler or handler.fired or ctx.dead then
        return nil
    end
    handler.fired = true
    ctx.aborted = true
    enter(ctx, now)
    local rec = new_thread(ctx, handler.fn, handler.parent)
    ctx.current = rec
    return run(ctx, rec, co_resume(rec.co))
end

---------------------------------------------------------------- ngx.semaphore

-- lua-resty-core's ngx.semaphore, in Lua: the count and the FIFO of
-- waiters live here; a waiting thread parks in Python (a future with the
-- timeout) and post() wakes it there.
local semaphore = { version = "0.1.25" }
local sema_mt = { __index = semaphore }

function semaphore.new(n)
    n = tonumber(n) or 0
    if n < 0 then
        error("no negative number", 2)
    end
    local sem = { count = n, waiting = 0, queue = {}, head = 1, tail = 0 }
    return setmetatable({ sem = sem }, sema_mt)
end

local function check_sema(self)
    if type(self) ~= "table" or type(self.sem) ~= "table" then
        error("not a semaphore instance", 3)
    end
    return self.sem
end

-- Hand the semaphore's resources to its oldest waiters.
local function wake(sem)
    local queue = sem.queue
    while sem.count > 0 and sem.head <= sem.tail do
        local w = queue[sem.head]
        queue[sem.head] = nil
        sem.head = sem.head + 1
        if w.state == "queued" then
            sem.waiting = sem.waiting - 1
            if py_unpark(w.id) then
                w.state = "granted"
                sem.count = sem.count - 1
            else
                w.state = "gone" -- its timeout fired, or its thread died
            end
        end
    end
end

release_waiter = function(w)
    local sem = w.sem
    if w.state == "queued" then
        w.state = "gone"
        sem.waiting = sem.waiting - 1
    elseif w.state == "granted" then
        -- woken, but its thread died before it ran: give the resource back
        w.state = "gone"
        sem.count = sem.count + 1
        wake(sem)
    end
end

function semaphore.wait(self, seconds)
    local sem = check_sema(self)
    local ctx = context()
    if not ctx then
        if phase() == "init_worker" then
            return nil, INIT_WORKER_DISABLED
        end
        error("no request found", 2)
    end
    local ms = tonumber(seconds) * 1000
    if ms < 0 then
        error("no negative number", 2)
    end
    if sem.head > sem.tail and sem.count > 0 then
        sem.count = sem.count - 1
        return true
    end
    ms = floor(ms) -- lua-nginx-module takes whole milliseconds
    if ms == 0 then
        return nil, "timeout"
    end
    local w = { id = py_park(ms / 1000), sem = sem, state = "queued", rec = ctx.current }
    sem.tail = sem.tail + 1
    sem.queue[sem.tail] = w
    sem.waiting = sem.waiting + 1
    local parked = ctx.parked
    if not parked then
        parked = {}
        ctx.parked = parked
    end
    parked[w] = true
    local ok = co_yield(IO, "park", w.id)
    parked[w] = nil
    if ok then
        return true
    end
    if w.state == "queued" then
        w.state = "gone"
        sem.waiting = sem.waiting - 1
    end
    return false, "timeout"
end

function semaphore.post(self, n)
    local sem = check_sema(self)
    local num = n and tonumber(n) or 1
    if num < 1 then
        error("positive number required", 2)
    end
    sem.count = sem.count + num
    wake(sem)
    return true
end

function semaphore.count(self)
    local sem = check_sema(self)
    return sem.count - sem.waiting
end

-- `require "ngx.semaphore"` finds this, before lua-resty-core's FFI module
-- (Debian's lua-resty-core is on package.path).
package.loaded["ngx.semaphore"] = semaphore

---------------------------------------------------------------- ngx.timer

-- Pending timers: id -> { fn, n = #args, args... }; Python holds the
-- schedule, the counts and the limits.
local timers = {}

local function add_timer(fname, every, nargs, delay, callback, ...)
    if nargs < 2 then
        error("expecting at least 2 arguments but got " .. nargs, 3)
    end
    local d = tonumber(delay)
    if d == nil then
        error("bad argument #1 to '" .. fname .. "' (number expected, got " .. type(delay)
              .. ")", 3)
    end
    if d < 0 then
        d = 0
    end
    if every and floor(d * 1000) == 0 then
        error("delay cannot be zero", 3)
    end
    if type(callback) ~= "function" or getinfo(callback, "S").what == "C" then
        error("bad argument #2 to '" .. fname .. "' (Lua function expected)", 3)
    end
    if not timers_allowed() then
        error("no request", 3)
    end
    local id, err = py_timer_add(d, every)
    if not id then
        return nil, err
    end
    timers[id] = { callback, n = nargs - 2, ... }
    return 1
end

local timer = {}

-- (not tail calls: add_timer's errors name the caller's line, level 3)
function timer.at(...)
    local ok, err = add_timer("at", false, select("#", ...), ...)
    if not ok then
        return nil, err
    end
    return ok
end

function timer.every(...)
    local ok, err = add_timer("every", true, select("#", ...), ...)
    if not ok then
        return nil, err
    end
    return ok
end

function timer.running_count()
    if not timers_allowed() then
        error("no request", 2)
    end
    return py_running_count()
end

function timer.pending_count()
    if not timers_allowed() then
        error("no request", 2)
    end
    return py_pending_count()
end

ngx.timer = timer

ngx.worker.exiting = function()
    return py_exiting()
end

-- Python: ctx, cmd, arg, extra = start_timer(id, premature, now, keep);
-- keep: an ngx.timer.every timer that will fire again.
local function start_timer(id, premature, now, keep)
    local t = timers[id]
    if not keep then
        timers[id] = nil
    end
    local fn = t[1]
    -- handle: what the engine gets for a request (a timer's log lines say
    -- "context: ngx.timer")
    local ctx = { timer = true, co = co_create(fn), handle = TIMER }
    enter(ctx, now)
    return ctx, step(ctx, co_resume(ctx.co, premature, unpack(t, 2, t.n + 1)))
end

-- Python: a timer that will not run (too many running); where its
-- callback was defined, for the log.
local function drop_timer(id, keep)
    local t = timers[id]
    if not keep then
        timers[id] = nil
    end
    local info = getinfo(t[1], "S")
    return info.source .. ":" .. info.linedefined
end

-- Python, when a context ended however it ended: semaphore waits it left
-- are released.
local function release(ctx)
    if ctx.parked then
        release_parked(ctx, nil)
    end
end

-- ngx.lua's driver calls it when a context ends (so Python need not)
ext.release_parked = release

return {
    drive_thread = drive_thread,
    client_abort = client_abort,
    start_timer = start_timer,
    drop_timer = drop_timer,
    release = release,
}
