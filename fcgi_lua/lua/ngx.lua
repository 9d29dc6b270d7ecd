-- The driver that runs one request, and the ngx table its API areas fill.
--
-- Loaded once per VM by fcgi_lua/lua/engine.py, which passes the table of
-- Python helpers (I/O-free: hashing, logging, error pages, the loader) and
-- gets back the driver table { compile, start, drive, abort, run_phase,
-- extensions }.
--
-- One coroutine per request.  The coroutine yields only for I/O, always as
-- `IO, command, argument`; the driver hands (command, argument) to Python,
-- which awaits the operation and resumes with the result.  The API finds
-- its request through `core.cur`, set by the driver before every resume
-- (one worker is one thread, so this is exact, also inside user
-- coroutines).
--
-- The API itself lives in ngx/, one file per area as lua-nginx-module
-- splits its C files (AREAS below).  Semantics follow lua-nginx-module
-- 0.10.23 (content phase), checked against OpenResty; deliberate
-- differences are listed in docs/lua-api.md.

local helpers = ...

local type = type
local tostring = tostring
local error = error
local pcall = pcall
local setmetatable = setmetatable
local ipairs = ipairs
local byte = string.byte
local gsub = string.gsub
local match = string.match
local floor = math.floor
local co_create = coroutine.create
local co_resume = coroutine.resume
local co_status = coroutine.status
local co_close = coroutine.close -- 5.4+: frees a dead coroutine's stack
local collectgarbage = collectgarbage -- the sandbox limits the global one
local traceback = debug.traceback
local setfenv = setfenv -- nil on Lua 5.2+
local loadstring = loadstring or load
local xpcall = xpcall

local py_update_time = helpers.update_time

-- ngx.null is the NULL light userdata, as in OpenResty: the same value as
-- cjson.null, so cjson.encode({a = ngx.null}) gives {"a":null}.  LuaJIT
-- 2.1's string.buffer decodes one from its serialisation tag 0x03 (no C
-- module needed); other runtimes cannot make one from Lua and get a unique
-- userdata from Python instead (docs/lua-api.md).
local NULL = helpers.null
if jit then
    local ok, buffer = pcall(require, "string.buffer")
    if ok then
        NULL = buffer.decode("\3")
    end
end

-- Every yield meant for the driver starts with this marker, so that a
-- user coroutine's own yields are told apart from I/O.
local IO = {}

local ngx = {}
_G.ngx = ngx

-- What the API areas share, never reachable from a script.  The driver
-- keeps the running state here; each area adds what later ones use (the
-- `core.X = X` lines at its end, the `local X = core.X` lines at the top
-- of the areas that use it).
local core = {
    helpers = helpers,
    IO = IO,
    NULL = NULL,
    cur = nil, -- the request running now (nil while a timer runs)
    -- The context running now: a request (then cur_ctx == cur) or a timer
    -- (thread.lua); sleeps, cosockets and light threads need only a context.
    cur_ctx = nil,
    now_cache = 0, -- seconds, float; set by the driver on every resume
    -- "init" or "init_worker" while config's init_script or
    -- init_worker_script runs (run_phase below), outside any context.
    phase = nil,
}

-- The error of a request API called where there is no request.  An API
-- function takes its request as `local r = core.cur or no_request()`:
-- the error names the line of the function's caller (level 3), so it is
-- called from the API function itself, never through a helper.
function core.no_request()
    if core.phase == "init_worker" then -- OpenResty's fake request of that phase
        error("API disabled in the context of init_worker_by_lua*", 3)
    end
    if core.cur_ctx then -- a timer: there is no request behind it
        error("API disabled in the context of ngx.timer", 3)
    end
    error("no request found", 3)
end

-- The API areas, in load order (a file uses what earlier ones put in core).
local AREAS = {
    "consts",    -- ngx.OK, ngx.HTTP_*, log levels, ngx.null
    "log",       -- ngx.log; num2str, the number format of every printing API
    "time",      -- ngx.now, ngx.time, ngx.http_time, ngx.parse_http_time ...
    "string",    -- ngx.md5, base64, quote_sql_str, escape_uri, decode/encode_args
    "headers",   -- ngx.header, ngx.resp.get_headers: the response headers' store
    "var",       -- ngx.var from the FastCGI params
    "resp",      -- the response on the wire: header block, 304, error pages
    "output",    -- ngx.print, say, flush, eof, send_headers
    "control",   -- ngx.exit, redirect, exec; ngx.location (not over FastCGI)
    "req",       -- ngx.req: method, URI, arguments, headers
    "req_body",  -- ngx.req: the request body
    "misc",      -- ngx.config, worker, sleep, get_phase, status, ctx, ndk
    "coroutine", -- coroutine.resume/wrap that pass I/O yields up
    "package",   -- require: Debian's module directories, OpenResty's names
}
for _, name in ipairs(AREAS) do
    helpers.load("ngx/" .. name .. ".lua")(ngx, core)
end

local take_output = core.take_output
local NO_HEADERS = core.NO_HEADERS
local error_response = core.error_response

-- A request's global table falls back to the shared globals: through
-- their read-only view once isolation.lua seals them (engine.py).
local env_mt = { __index = _G }

-- coroutine -> the context (request or timer) that owns it, for
-- isolation.lua's coroutine.resume: no request resumes another's.  Weak
-- both ways: LuaJIT has no ephemerons, so a weak key whose value (the
-- request) holds it (r.co) would never be collected.
local owners = setmetatable({}, { __mode = "kv" })

-- The one table of hooks between this file and the Lua layers the engine
-- loads after it (thread.lua, socket.lua, mk.lua, re.lua, resty_core.lua,
-- cgi.lua, isolation.lua, sandbox.lua): the request internals they need,
-- never reachable from a script.  Each layer takes what it needs when it
-- loads; the hooks marked "filled by" start as no-ops (or nil) here and
-- are replaced by the layer named.
local extensions = {
    -- from this file and ngx/
    IO = IO, -- the I/O yield marker
    current = function() return core.cur end, -- the request running now, or nil
    -- The context running now (the request, or a timer): what cosockets
    -- and light threads belong to.
    context = function() return core.cur_ctx end,
    -- which of config's init phases runs ("init", "init_worker"), if any
    phase = function() return core.phase end,
    -- log(level, message): an error-log line of the context running now
    log = core.log,
    -- Appends to the request's output without committing the headers,
    -- so they can still change until the first flush (mk.print).
    buffer = core.buffer,
    params = core.params_of, -- a request's FastCGI params (cgi.lua)
    env_mt = env_mt, -- isolation.lua
    owners = owners, -- isolation.lua
    cgi_marked = setmetatable({}, { __mode = "k" }), -- factories of "#!lua" files
    -- for thread.lua: contexts and their end (defined below), the raw
    -- resume (coroutine.resume passes I/O yields up), and which user
    -- coroutines wait for I/O (ngx/coroutine.lua)
    enter = nil,
    step = nil,
    finish = nil,
    finish_exit = nil,
    fail = nil,
    resume = co_resume,
    io_waiting = core.io_waiting,
    passing = core.passing,
    -- filled by cgi.lua: a CGI request's os/io/print, and "#!" lines
    cgi_wrap = function(r, fn) return fn end,
    is_cgi_shebang = function(line) return false end,
    -- filled by thread.lua: the step of a context with light threads,
    -- and the release of a request's semaphore waits when it ends
    thread_step = nil,
    release_parked = function(r) end,
    -- filled by socket.lua: what a request that ended let go of, and a
    -- killed light thread's socket
    close_sockets = function(r) end,
    socket_thread_killed = nil,
    -- filled by sandbox.lua (modules a sandboxed script may not require)
    -- and engine.py (true once the sandbox is installed), for isolation.lua
    hidden_modules = nil,
    sandboxed = nil,
}

-- Compile once per code-cache entry into a factory: calling it gives a
-- fresh closure, whose environment is the request's own global table.
local function compile(src, chunkname)
    local cgi_marked = false
    if byte(src, 1) == 35 then -- "#!": drop the line, keep the numbering
        cgi_marked = extensions.is_cgi_shebang(match(src, "^[^\n]*"))
        src = gsub(src, "^#[^\n]*", "", 1)
    end
    local f, err = loadstring(src, chunkname)
    if not f then
        return nil, err -- report the error of the script as written
    end
    if setfenv then
        f, err = loadstring("return function(...) " .. src .. "\nend", chunkname)
    else
        f, err = loadstring("local _ENV = ...; return function(...) " .. src .. "\nend",
                            chunkname)
    end
    if f and cgi_marked then
        extensions.cgi_marked[f] = true
    end
    return f, err
end

local function finish(r)
    if r.eof or r.timer then
        return "done", "", nil
    end
    return "done", take_output(r, true), nil
end

local function finish_exit(r, rc)
    if r.eof or r.timer then
        return "done", "", nil
    end
    if not r.header_sent and r.status == 0 and rc >= 200 then
        r.status = rc
    end
    if rc == 0 or r.header_sent or (rc >= 200 and rc < 300 and rc ~= 204) then
        return finish(r)
    end
    if rc >= 300 or rc == 204 then
        return "done", error_response(r, rc), nil
    end
    if rc < 0 then
        -- NGX_ERROR and friends: nginx would drop the connection; over
        -- FastCGI the nearest thing is a 500.
        return "done", error_response(r, 500), nil
    end
    return finish(r)
end

-- The entry thread failed: the traceback, and whether a response is out.
local function fail(r, err)
    if type(err) ~= "string" then
        err = tostring(err)
    end
    local ok, tb = pcall(traceback, r.co, err)
    if not ok then
        tb = err -- no memory left even for the traceback
    end
    if err == "not enough memory" and co_close then
        -- lua_memory_limit: free what the script held before Python (whose
        -- calls into Lua are not protected) sees the failure
        co_close(r.co)
        collectgarbage()
    end
    local response = r.emitted and "" or nil
    r.dead = true
    return "error", tb, response
end

-- The result of one resume of the entry thread: a command for Python, or
-- the end.  With light threads, thread.lua schedules them all.
local function step(r, ok, first, cmd, arg)
    if r.threads then
        return extensions.thread_step(r, ok, first, cmd, arg)
    end
    if not ok then
        return fail(r, first)
    end
    if first == IO then -- (never what a script returns: IO is private)
        if cmd == "exit" then
            r.dead = true
            return finish_exit(r, arg)
        end
        return cmd, arg, nil
    end
    if co_status(r.co) == "dead" then
        r.dead = true
        return finish(r)
    end
    -- a bare coroutine.yield() in the request itself: let others run
    return "sleep", 0, nil
end

local function new_request(head, now, handle)
    local env = setmetatable({}, env_mt)
    env._G = env
    return {
        -- params: fetched when first needed (params_of)
        env = env,
        status = 0,
        hkeys = NO_HEADERS,
        hvals = NO_HEADERS,
        out = {},
        nout = 0,
        nbuf = 0, -- bytes in out
        header_sent = false,
        emitted = false,
        eof = false,
        head = head,
        start_time = floor(now * 1000) / 1000,
        -- Python's integer handle of the request (its params, body and
        -- output), handed back on every call that needs them: params,
        -- body, log lines.  An integer, not the Python objects: handing
        -- Lua two objects cost hello's engine.run 2 us of its 6
        -- (bench/engine_run.py)
        handle = handle,
    }
end

-- A request's end, as start and drive hand it to Python: its sockets
-- and semaphore waits are let go of here, so that Python need not cross
-- over to look for them (it still does after a failure or a kill).
local function ended(r, cmd, arg, extra)
    if cmd == "done" then
        if r.cosocket_owner then
            extensions.close_sockets(r)
        end
        if r.parked then
            extensions.release_parked(r)
        end
    end
    return cmd, arg, extra
end

-- Python: r, cmd, arg, extra = start(factory, now, cgi, head, guard_kb, handle);
-- r is false when cmd is "done" (Python needs no handle on a request that
-- is over); nil, "memory" (and nothing started) when the VM holds more
-- than guard_kb (lua_memory_limit's share where a request may not start).
local function start(factory, now, cgi, head, guard_kb, handle)
    if guard_kb > 0 and collectgarbage("count") > guard_kb then
        return nil, "memory", nil, nil
    end
    core.now_cache = now
    local r = new_request(head, now, handle)
    local fn
    if setfenv then
        fn = factory()
        setfenv(fn, r.env)
    else
        fn = factory(r.env)
    end
    if cgi or extensions.cgi_marked[factory] then
        fn = extensions.cgi_wrap(r, fn) -- cgi.lua: os/io/print for this env only
    end
    local co = co_create(fn)
    r.co = co
    owners[co] = r
    core.cur = r
    core.cur_ctx = r
    local cmd, arg, extra = ended(r, step(r, co_resume(r.co)))
    if cmd == "done" then
        return false, cmd, arg, extra
    end
    return r, cmd, arg, extra
end

-- Before resuming a coroutine of the context `ctx` (a request or a timer).
local function enter(ctx, now)
    core.now_cache = now
    core.cur_ctx = ctx
    if ctx.timer then
        core.cur = nil
    else
        core.cur = ctx
    end
end

-- Python: cmd, arg = drive(r, now, value), r a request or a timer context
local function drive(r, now, value)
    enter(r, now)
    return ended(r, step(r, co_resume(r.co, value)))
end

-- The response for an error inside the script, when headers are not out.
local function abort(r)
    r.dead = true
    r.out = {}
    r.nout = 0
    r.nbuf = 0
    if core.cur == r then
        core.cur = nil
    end
    if core.cur_ctx == r then
        core.cur_ctx = nil
    end
end

-- Python: ok, err = run_phase(name, src, chunkname) runs config's
-- init_script (name "init": once per VM, before any request) or
-- init_worker_script ("init_worker": once the worker's loop runs) to its
-- end, in the VM's shared globals (what every request's global table falls
-- back to) and outside any context: nothing there may wait.  err is the
-- error with its traceback.
local function phase_error(e)
    if type(e) ~= "string" then
        e = tostring(e)
    end
    -- the script's own frames: not the xpcall below, nor Python's call
    return (gsub(traceback(e, 2), "\n%s*%[C%]: in function '?xpcall'?.*$", ""))
end

local function run_phase(name, src, chunkname)
    if byte(src, 1) == 35 then -- "#!": skipped, as luaL_loadfile does
        src = gsub(src, "^#[^\n]*", "", 1)
    end
    local f, err = loadstring(src, chunkname)
    if not f then
        return false, err
    end
    core.phase = name
    core.cur = nil
    core.cur_ctx = nil
    core.now_cache = py_update_time() -- ngx.now() there: the time it starts
    local ok
    ok, err = xpcall(f, phase_error)
    core.phase = nil
    return ok, err
end

extensions.enter = enter
extensions.step = step
extensions.finish = finish
extensions.finish_exit = finish_exit
extensions.fail = fail

return {
    compile = compile,
    start = start,
    drive = drive,
    abort = abort,
    run_phase = run_phase,
    extensions = extensions,
}
