-- CGI mode: a Lua script written for CGI runs unchanged (docs/cgi.md).
--
-- Loaded once per VM by fcgi_lua/lua/engine.py, the last of the layers
-- over ngx.lua, with the engine's helpers and ngx.lua's extension hooks.
-- A request in CGI mode gets, in its own global table, what a CGI process
-- has: its own `io`, `os`, `print` and `arg` (reads come from the request
-- body, writes are parsed as a CGI response, `os.getenv` answers the
-- request's CGI variables, `os.exit` ends the request), the script's
-- directory as its working directory for relative paths, and its own
-- `package`, `require`, `dofile`, `loadfile`: modules and chunks it loads
-- are loaded fresh for the request, run in its global table, and leave
-- nothing in the worker.  The VM's shared io, os, print and package are
-- never touched, except `os.exit` (see "the worker's os.exit").

local helpers, ext = ...

local type = type
local tostring = tostring
local tonumber = tonumber
local select = select
local error = error
local ipairs = ipairs
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local getmetatable = getmetatable
local rawequal = rawequal
local rawget = rawget
local setfenv = setfenv -- nil on Lua 5.2+
local loadstring = loadstring or load
local byte = string.byte
local concat = table.concat
local unpack = unpack or table.unpack
local sub = string.sub
local find = string.find
local match = string.match
local gmatch = string.gmatch
local gsub = string.gsub
local lower = string.lower
local format = string.format
local floor = math.floor
local io_open = io.open
local io_lines = io.lines
local io_type = io.type
local real_io = io
local real_os = os
local real_package = package
local real_G = _G
local getinfo = debug.getinfo -- before a sandbox removes debug
local ngx = ngx
local ngx_print = ngx.print
local ngx_flush = ngx.flush
local ngx_exit = ngx.exit
local ngx_log = ngx.log
local ERR = ngx.ERR
local ALERT = ngx.ALERT
local req = ngx.req

local shebang_enabled = helpers.cgi_shebang

-- A script that never ends its header block is not CGI output; past this
-- size it is refused rather than buffered (Apache's limit is 8 KiB a line).
local MAX_HEADER_BLOCK = 65536

local _M = { _VERSION = "0.1" }

---------------------------------------------------------------- the response

-- The end of the header block: the first empty line, LF or CRLF.  Returns
-- the length of the header part and where the body starts (minus one).
local function find_blank_line(buf)
    local s, e = find(buf, "^\r?\n")
    if s then
        return 0, e
    end
    s, e = find(buf, "\n\r?\n")
    if s then
        return s, e
    end
    return nil
end
_M.find_blank_line = find_blank_line

local function quote(s)
    if #s > 60 then
        s = sub(s, 1, 60) .. "..."
    end
    return '"' .. gsub(s, "%c", function(c) return format("\\x%02X", c:byte()) end) .. '"'
end

-- "Status: 404 Not Found\nContent-Type: text/html\n" -> 404, { {name, value}, ... },
-- "404 Not Found" (the Status line to pass on), or nil, why.  Location
-- without Status means 302, neither means 200, with the reason phrases
-- nginx gives such a CGI response: the front server sees what it would
-- see from the script run by fcgiwrap.
function _M.parse_header_block(head)
    local status, status_text
    local headers = {}
    local location = false
    for raw in gmatch(head, "[^\n]+") do
        local line = gsub(raw, "\r$", "")
        if find(line, "^[ \t]") and #headers > 0 then
            -- obsolete line folding: a continuation of the previous value
            local last = headers[#headers]
            last[2] = last[2] .. " " .. match(line, "^%s*(.-)%s*$")
        elseif line ~= "" then
            local name, value = match(line, "^([!#$%%&'*+%-.^_`|~%w]+)[ \t]*:[ \t]*(.-)[ \t]*$")
            if not name then
                return nil, "malformed header line " .. quote(line)
            end
            local key = lower(name)
            if key == "status" then
                local code = tonumber(match(value, "^(%d%d%d)"))
                if not code or code < 200 or code > 999 then
                    return nil, "bad Status header " .. quote(value)
                end
                status = code
                status_text = value
            else
                if key == "location" then
                    location = true
                end
                headers[#headers + 1] = { name, value }
            end
        end
    end
    if not status then
        status = location and 302 or 200
        status_text = location and "302 Moved Temporarily" or "200 OK"
    end
    return status, headers, status_text
end

local parse_header_block = _M.parse_header_block

-- Sets the parsed header block as the response's status and headers;
-- repeated names (Set-Cookie) keep every value, in order.
local function apply_headers(st, status, headers, status_text)
    st.r.status_text = status_text
    local groups, order = {}, {}
    for _, h in ipairs(headers) do
        local key = lower(h[1])
        local g = groups[key]
        if not g then
            g = { name = h[1], values = {} }
            groups[key] = g
            order[#order + 1] = key
        end
        g.values[#g.values + 1] = h[2]
    end
    ngx.status = status
    local header = ngx.header
    for _, key in ipairs(order) do
        local g = groups[key]
        header[g.name] = #g.values == 1 and g.values[1] or g.values
    end
end

local function script_name(st)
    return st.filename or "CGI script"
end

-- Output of the script: header block first, then body.  Returns true, or
-- nil and the reason the output is not a CGI response.
local function output(st, s)
    if st.headed then
        if s ~= "" then
            ngx_print(s)
        end
        return true
    end
    local buf = st.buf .. s
    local head_len, body_from = find_blank_line(buf)
    if not head_len then
        if #buf > MAX_HEADER_BLOCK then
            return nil, "CGI header block larger than " .. MAX_HEADER_BLOCK .. " bytes"
        end
        st.buf = buf
        return true
    end
    st.buf = ""
    local status, headers, status_text = parse_header_block(sub(buf, 1, head_len))
    if not status then
        return nil, "malformed CGI response: " .. headers
    end
    apply_headers(st, status, headers, status_text)
    st.headed = true
    local body = sub(buf, body_from + 1)
    if body ~= "" then
        ngx_print(body)
    end
    return true
end

-- The script ended (returned or os.exit): a header block without its
-- blank line is still taken as the whole response, if every line of it
-- is a header.
local function finish(st)
    local src = st.src
    if src and src.fh then
        src.fh:close()
        src.fh = nil
    end
    if st.headed then
        return
    end
    local buf = st.buf
    st.buf = ""
    if buf == "" then
        if ngx.headers_sent then
            return -- the script used ngx.say & co. instead
        end
        error(script_name(st) .. ": CGI script produced no output", 0)
    end
    local status, headers, status_text = parse_header_block(buf)
    if not status then
        error(script_name(st) .. ": malformed CGI response: " .. headers, 0)
    end
    apply_headers(st, status, headers, status_text)
    st.headed = true
end

---------------------------------------------------------------- the request body

local function body_source(st)
    local src = st.src
    if src then
        return src
    end
    req.read_body()
    local data = req.get_body_data()
    if data == nil then
        local path = req.get_body_file()
        if path then
            local fh, err = io_open(path, "rb")
            if not fh then
                ngx_log(ERR, "cannot open the request body file: ", err)
            else
                src = { fh = fh }
            end
        end
    end
    src = src or { data = data or "", pos = 1 }
    st.src = src
    return src
end

local function read_number(src)
    local data = src.data
    local s, e = find(data, "^%s*[-+]?[%w%.]+", src.pos)
    if not s then
        src.pos = #data + 1
        return nil
    end
    local n = tonumber(match(sub(data, s, e), "^%s*(.-)$"))
    src.pos = e + 1
    return n
end

-- One format of file:read on the in-memory body.
local function read_one(src, fmt)
    local data, pos = src.data, src.pos
    if type(fmt) == "number" then
        local n = floor(fmt)
        if pos > #data then
            return nil
        end
        if n <= 0 then
            return ""
        end
        local s = sub(data, pos, pos + n - 1)
        src.pos = pos + #s
        return s
    end
    if type(fmt) ~= "string" then
        error("bad argument #1 to 'read' (invalid option)", 3)
    end
    local c = sub(gsub(fmt, "^%*", ""), 1, 1)
    if c == "a" then
        src.pos = #data + 1
        return sub(data, pos)
    elseif c == "l" or c == "L" then
        if pos > #data then
            return nil
        end
        local nl = find(data, "\n", pos, true)
        if not nl then
            src.pos = #data + 1
            return sub(data, pos)
        end
        src.pos = nl + 1
        return sub(data, pos, c == "L" and nl or nl - 1)
    elseif c == "n" then
        return read_number(src)
    end
    error("bad argument #1 to 'read' (invalid format)", 3)
end

local function read(st, ...)
    local src = body_source(st)
    if src.fh then
        return src.fh:read(...)
    end
    local n = select("#", ...)
    if n == 0 then
        return read_one(src, "l")
    end
    if n == 1 then
        return read_one(src, (...))
    end
    local res = {}
    for i = 1, n do
        local v = read_one(src, (select(i, ...)))
        res[i] = v
        if v == nil then
            return unpack(res, 1, i)
        end
    end
    return unpack(res, 1, n)
end

---------------------------------------------------------------- file objects

local function write_values(fname, ...)
    local parts = {}
    for i = 1, select("#", ...) do
        local v = select(i, ...)
        local t = type(v)
        if t == "string" then
            parts[i] = v
        elseif t == "number" then
            parts[i] = format("%.14g", v)
        else
            error("bad argument #" .. i .. " to '" .. fname .. "' (string expected, got "
                  .. t .. ")", 3)
        end
    end
    return concat(parts)
end

local function new_files(st)
    local stdin, stdout, stderr = {}, {}, {}
    local files = { [stdin] = "stdin", [stdout] = "stdout", [stderr] = "stderr" }

    local methods = {}
    local mt = {
        __index = methods,
        __tostring = function(f) return "file (cgi " .. files[f] .. ")" end,
    }

    function methods.write(f, ...)
        local s = write_values("write", ...)
        if rawequal(f, stdout) then
            local ok, err = output(st, s)
            if not ok then
                error(err, 2)
            end
        elseif rawequal(f, stderr) then
            if s ~= "" then
                ngx_log(ERR, "CGI stderr: ", (gsub(s, "\n$", "")))
            end
        else
            return nil, "Bad file descriptor", 9
        end
        return f
    end

    function methods.read(f, ...)
        if not rawequal(f, stdin) then
            return nil, "Bad file descriptor", 9
        end
        return read(st, ...)
    end

    function methods.lines(f, ...)
        if not rawequal(f, stdin) then
            error("file is not readable", 2)
        end
        local n = select("#", ...)
        local fmts = { ... }
        return function()
            return read(st, unpack(fmts, 1, n))
        end
    end

    function methods.flush(f)
        if rawequal(f, stdout) and st.headed then
            ngx_flush()
        end
        return f
    end

    function methods.setvbuf()
        return true
    end

    function methods.close()
        return true -- the request's streams close when the request ends
    end

    function methods.seek()
        return nil, "Illegal seek", 29
    end

    setmetatable(stdin, mt)
    setmetatable(stdout, mt)
    setmetatable(stderr, mt)
    return stdin, stdout, stderr, files
end

---------------------------------------------------------------- the working directory

-- A CGI process runs in its script's directory (fcgiwrap chdirs there).
-- chdir is the worker's, shared by the requests it interleaves, so each
-- CGI request has its own: `dir`, against which the request's io, os and
-- loading functions resolve relative paths.

local function resolve(dir, path)
    if dir == nil or type(path) ~= "string" or path == "" or byte(path, 1) == 47 then
        return path
    end
    return dir .. path
end

-- Messages name the file as the script wrote it, as in a CGI process:
-- "data/x.txt: No such file or directory", not the resolved path.
local function as_given(err, full, path)
    if type(err) == "string" and full ~= path then
        local s, e = find(err, full, 1, true)
        if s then
            return sub(err, 1, s - 1) .. path .. sub(err, e + 1)
        end
    end
    return err
end

local function shell_quote(s)
    return "'" .. gsub(s, "'", "'\\''") .. "'"
end

---------------------------------------------------------------- io, os, print

local function new_io(st, dir)
    local stdin, stdout, stderr, files = new_files(st)
    local input, out = stdin, stdout
    local io = setmetatable({ stdin = stdin, stdout = stdout, stderr = stderr }, {
        __index = real_io,
    })
    st.stdout = stdout

    -- the shared io's functions are looked up at each call: a sandbox
    -- (sandbox.lua) replaces them after this file is loaded
    function io.open(path, mode)
        local full = resolve(dir, path)
        local fh, err, code = real_io.open(full, mode)
        if not fh then
            return nil, as_given(err, full, path), code
        end
        return fh
    end

    function io.write(...)
        return out:write(...)
    end

    function io.read(...)
        return input:read(...)
    end

    function io.lines(filename, ...)
        if filename == nil then
            return input:lines(...)
        end
        local full = resolve(dir, filename)
        local ok, iter = pcall(real_io.lines, full, ...)
        if not ok then
            error(as_given(iter, full, filename), 2)
        end
        return iter
    end

    function io.input(file)
        if file == nil then
            return input
        end
        if type(file) == "string" then
            local fh, err = io.open(file, "r")
            if not fh then
                error(err, 2)
            end
            file = fh
        end
        input = file
        return input
    end

    function io.output(file)
        if file == nil then
            return out
        end
        if type(file) == "string" then
            local fh, err = io.open(file, "w")
            if not fh then
                error(err, 2)
            end
            file = fh
        end
        out = file
        return out
    end

    function io.close(file)
        return (file or out):close()
    end

    function io.type(obj)
        if files[obj] then
            return "file"
        end
        return io_type(obj)
    end

    if dir and real_io.popen then
        function io.popen(cmd, ...)
            if type(cmd) == "string" then
                cmd = "cd " .. shell_quote(dir) .. " && " .. cmd
            end
            return real_io.popen(cmd, ...)
        end
    end

    return io
end

local function new_os(st, r, dir)
    local params = ext.params(r)
    local os = setmetatable({}, { __index = real_os })

    -- The request's CGI variables only: like fcgiwrap, the worker's own
    -- environment is not the script's.
    function os.getenv(name)
        if type(name) ~= "string" then
            error("bad argument #1 to 'getenv' (string expected, got " .. type(name) .. ")", 2)
        end
        for i = 1, #params, 2 do
            if params[i] == name then
                return params[i + 1]
            end
        end
        return nil
    end

    -- Ends the request (what was written is the response), not the worker,
    -- wherever it is called: modules and dofile'd chunks see this os too.
    function os.exit()
        finish(st)
        ngx_exit(0)
    end

    function os.remove(path)
        local full = resolve(dir, path)
        local ok, err, code = real_os.remove(full)
        if not ok then
            return nil, as_given(err, full, path), code
        end
        return ok
    end

    function os.rename(from, to)
        local full_from, full_to = resolve(dir, from), resolve(dir, to)
        local ok, err, code = real_os.rename(full_from, full_to)
        if not ok then
            return nil, as_given(as_given(err, full_from, from), full_to, to), code
        end
        return ok
    end

    if dir and real_os.execute then
        function os.execute(cmd, ...)
            if type(cmd) == "string" then
                cmd = "cd " .. shell_quote(dir) .. " && " .. cmd
            end
            return real_os.execute(cmd, ...)
        end
    end

    return os
end

local function new_print(st)
    return function(...)
        local n = select("#", ...)
        local parts = {}
        for i = 1, n do
            parts[i] = tostring((select(i, ...)))
        end
        parts[n + 1] = "\n"
        local ok, err = output(st, concat(parts, "\t", 1, n) .. "\n")
        if not ok then
            error(err, 2)
        end
    end
end

---------------------------------------------------------------- loading code

-- What package.loaded holds once fcgi-lua's layers are in (this file is
-- the last): the standard libraries and fcgi-lua's own modules (ngx.re,
-- ngx.semaphore, mk, ...), which a CGI request shares with the worker.
-- Any other module a CGI request requires is loaded for that request.
local builtin_loaded = {}
for name, module in pairs(package.loaded) do
    builtin_loaded[name] = module
end

-- Compiled chunks of the files CGI requests load, by resolved path: the
-- file is read on every load (as a CGI process would) and recompiled only
-- when its text or its chunk name changed.  A factory gives a fresh
-- closure per request, whose environment is that request's globals.
local chunk_cache = {}

local function strip_shebang(src)
    if byte(src, 1) == 35 then -- "#": skipped as luaL_loadfile does, lines kept
        return (gsub(src, "^#[^\n]*", "", 1))
    end
    return src
end

local function compile_factory(src, chunkname)
    local text = strip_shebang(src)
    local factory
    if setfenv then
        factory = loadstring("return function(...) " .. text .. "\nend", chunkname)
    else
        factory = loadstring("local _ENV = ...; return function(...) " .. text .. "\nend",
                             chunkname)
    end
    if factory then
        return factory
    end
    local _, err = loadstring(text, chunkname) -- the error of the code as written
    return nil, err
end

local function instantiate(factory, env)
    if setfenv then
        local fn = factory()
        setfenv(fn, env)
        return fn
    end
    return factory(env)
end

-- A chunk (from a file at `key`, or nil) compiled for the environment env.
local function load_chunk(src, chunkname, env, key)
    if byte(src, 1) == 27 then
        -- a binary chunk: the VM's load decides (a sandbox refuses it)
        local f, err
        if setfenv then
            f, err = real_G.loadstring(src, chunkname)
            if f then
                setfenv(f, env)
            end
        else
            f, err = real_G.load(src, chunkname, nil, env)
        end
        return f, err
    end
    local cached = key and chunk_cache[key]
    if cached and cached.src == src and cached.name == chunkname then
        return instantiate(cached.factory, env)
    end
    local factory, err = compile_factory(src, chunkname)
    if not factory then
        return nil, err
    end
    if key then
        chunk_cache[key] = { src = src, name = chunkname, factory = factory }
    end
    return instantiate(factory, env)
end

-- The source of a file, or nil and "cannot open path" as loadfile says it.
local function read_file(dir, path)
    local full = resolve(dir, path)
    local fh, err = real_io.open(full, "rb")
    if not fh then
        err = as_given(err, full, path)
        return nil, "cannot open " .. tostring(err), full
    end
    local src = fh:read("*a")
    fh:close()
    return src, nil, full
end

-- require's marker for a module being loaded (5.1's is a userdata): not a
-- table, so that module() in that module makes a fresh one.
local LOADING = function() end

local preload_mt = { __index = real_package.preload }
local real_require = require

local function new_loading(env, dir, st)
    local pkg = {}
    for k, v in pairs(real_package) do
        pkg[k] = v
    end
    local loaded = {}
    for name, module in pairs(builtin_loaded) do
        loaded[name] = module
    end
    loaded._G = env
    loaded.io = env.io
    loaded.os = env.os
    loaded.package = pkg
    pkg.loaded = loaded
    pkg.preload = setmetatable({}, preload_mt)

    local function loadfile(path, mode, chunk_env)
        local src, err, full
        if path == nil then -- stdin: the request body
            local stdin = env.io.stdin
            src = stdin:read("*a") or ""
            path = "=stdin"
        else
            src, err, full = read_file(dir, path)
            if not src then
                return nil, err
            end
            path = "@" .. path
        end
        return load_chunk(src, path, chunk_env or env, full)
    end

    local function dofile(path)
        local f, err = loadfile(path)
        if not f then
            error(err, 2)
        end
        return f()
    end

    -- package.searchpath (5.2+, LuaJIT 2.1): relative templates from dir
    local function searchpath(name, path, sep, rep)
        if sep == nil then
            sep = "."
        end
        if sep ~= "" then
            name = gsub(name, gsub(sep, "%p", "%%%0"), rep or "/")
        end
        name = gsub(name, "%%", "%%%%")
        local tried = {}
        for template in gmatch(path, "[^;]+") do
            local file = gsub(template, "%?", name)
            local fh = real_io.open(resolve(dir, file), "r")
            if fh then
                fh:close()
                return file
            end
            tried[#tried + 1] = "\n\tno file '" .. file .. "'"
        end
        return nil, concat(tried)
    end

    -- The request's own preload entries; the VM's (fcgi-lua's modules:
    -- resty.core, table.new, ffi ...) load once, through the VM's require.
    local function preload_searcher(name)
        local preload = pkg.preload
        local loader = rawget(preload, name)
        if loader ~= nil then
            return loader
        end
        if real_package.preload[name] ~= nil and getmetatable(preload) == preload_mt then
            return function() return real_require(name) end
        end
        loader = preload[name]
        if loader == nil then
            return "\n\tno field package.preload['" .. name .. "']"
        end
        return loader
    end

    -- Lua files on the request's package.path, relative entries from the
    -- script's directory, run in the request's globals.
    local function lua_searcher(name)
        local path = pkg.path
        if type(path) ~= "string" then
            error("'package.path' must be a string", 0)
        end
        local file, err = searchpath(name, path)
        if not file then
            return err
        end
        local src, full
        src, err, full = read_file(dir, file)
        local f
        if src then
            f, err = load_chunk(src, "@" .. file, env, full)
        end
        if not f then
            error("error loading module '" .. name .. "' from file '" .. file .. "':\n\t"
                  .. tostring(err), 0)
        end
        return f, file
    end

    -- The VM's C searchers, with the request's package.cpath for the time
    -- of the search (they read the shared package table's).  A C library
    -- is loaded once per process: its module is the worker's (luaL_register
    -- puts it in the worker's package.loaded anyway).
    local function with_cpath(searcher)
        return function(name)
            local shared_loaded = real_package.loaded
            if shared_loaded[name] ~= nil then
                return function() return shared_loaded[name] end
            end
            local shared = real_package.cpath
            real_package.cpath = pkg.cpath
            local ok, loader, extra = pcall(searcher, name)
            real_package.cpath = shared
            if not ok then
                error(loader, 0)
            end
            if type(loader) ~= "function" then
                return loader, extra
            end
            return function(...)
                local module = loader(...)
                if module == nil then
                    module = shared_loaded[name]
                end
                if module ~= nil and shared_loaded[name] == nil then
                    shared_loaded[name] = module
                end
                return module
            end, extra
        end
    end

    local searchers = {}
    local shared_searchers = real_package.loaders or real_package.searchers
    for i, searcher in ipairs(shared_searchers) do
        searchers[i] = (i == 3 or i == 4) and with_cpath(searcher) or searcher
    end
    searchers[1] = preload_searcher
    searchers[2] = lua_searcher
    if real_package.loaders then
        pkg.loaders = searchers
    end
    if real_package.searchers then
        pkg.searchers = searchers
    end
    if real_package.searchpath then
        pkg.searchpath = searchpath
    end

    local function require(name)
        if type(name) == "number" then
            name = tostring(name)
        elseif type(name) ~= "string" then
            error("bad argument #1 to 'require' (string expected, got " .. type(name) .. ")", 2)
        end
        local module = pkg.loaded[name]
        if module ~= nil then
            if rawequal(module, LOADING) then
                error("loop or previous error loading module '" .. name .. "'", 2)
            end
            return module
        end
        local list = pkg.loaders or pkg.searchers
        if type(list) ~= "table" then
            error("'package.loaders' must be a table", 2)
        end
        local tried = {}
        local loader, extra
        local i = 1
        while true do
            local searcher = list[i]
            if searcher == nil then
                error("module '" .. name .. "' not found:" .. concat(tried), 2)
            end
            loader, extra = searcher(name)
            if type(loader) == "function" then
                break
            elseif type(loader) == "string" then
                tried[#tried + 1] = loader
            end
            i = i + 1
        end
        local loaded_now = pkg.loaded
        loaded_now[name] = LOADING
        if setfenv then
            module = loader(name)
        else
            module = loader(name, extra)
        end
        if module ~= nil then
            loaded_now[name] = module
        end
        if rawequal(loaded_now[name], LOADING) then
            loaded_now[name] = true
        end
        return loaded_now[name]
    end

    env.package = pkg
    env.require = require
    env.loadfile = loadfile
    env.dofile = dofile

    -- Chunks loaded from strings see the request's globals too, as in a
    -- process whose globals are the script's.
    if setfenv then
        env.loadstring = function(s, chunkname)
            local f, err = real_G.loadstring(s, chunkname)
            if f then
                setfenv(f, env)
            end
            return f, err
        end
        env.load = function(chunk, chunkname, mode, chunk_env)
            local f, err = real_G.load(chunk, chunkname, mode, chunk_env)
            if f and chunk_env == nil then
                setfenv(f, env)
            end
            return f, err
        end
    else
        env.load = function(chunk, chunkname, mode, chunk_env)
            if chunk_env == nil then
                chunk_env = env
            end
            return real_G.load(chunk, chunkname, mode, chunk_env)
        end
        if real_G.loadstring then -- compat.lua's: text chunks only
            env.loadstring = function(s, chunkname)
                return real_G.load(s, chunkname, "t", env)
            end
        end
    end

    -- Lua 5.1's module(): the module table lives in the request.
    if real_G.module and setfenv then
        env.module = function(modname, ...)
            if type(modname) ~= "string" then
                error("bad argument #1 to 'module' (string expected, got " .. type(modname)
                      .. ")", 2)
            end
            local lt = pkg.loaded
            local m = lt[modname]
            if type(m) ~= "table" then
                m = env
                for part in gmatch(modname, "[^%.]+") do
                    local t = m[part]
                    if t == nil then
                        t = {}
                        m[part] = t
                    elseif type(t) ~= "table" then
                        error("name conflict for module '" .. modname .. "'", 2)
                    elseif m == env and rawget(env, part) == nil then
                        -- a shared global table (ngx, string): the request
                        -- extends its own view of it, never the worker's
                        t = setmetatable({}, { __index = t })
                        env[part] = t
                    end
                    m = t
                end
                lt[modname] = m
            end
            if m._NAME == nil then
                m._M = m
                m._NAME = modname
                m._PACKAGE = match(modname, "^(.*%.)[^%.]*$") or ""
            end
            setfenv(2, m)
            for i = 1, select("#", ...) do
                (select(i, ...))(m)
            end
        end
        pkg.seeall = function(m)
            local mt = getmetatable(m)
            if not mt then
                mt = {}
                setmetatable(m, mt)
            end
            mt.__index = env
        end
    end
end

---------------------------------------------------------------- hooks

local function param(params, name)
    for i = 1, #params, 2 do
        if params[i] == name then
            return params[i + 1]
        end
    end
    return nil
end

-- The request r runs the chunk main in CGI mode: its env gets the proxies.
function _M.wrap(r, main)
    local filename = param(ext.params(r), "SCRIPT_FILENAME")
    -- the script's directory: from the file the engine compiled ("@path")
    local source = getinfo(main, "S").source
    local path = sub(source, 1, 1) == "@" and sub(source, 2) or filename
    local dir = path and match(path, "^(.*/)[^/]*$")
    local st = { r = r, buf = "", headed = false, filename = filename or path }
    r.cgi = true -- no default Content-Type: the script's header block decides
    local env = r.env
    env.io = new_io(st, dir)
    env.os = new_os(st, r, dir)
    env.print = new_print(st)
    env.arg = { [0] = filename or path }
    new_loading(env, dir, st)
    return function(...)
        main(...)
        finish(st)
    end
end

-- "#!/usr/bin/lua5.1", "#!/usr/bin/env luajit", "#! /usr/local/bin/lua -e x"
-- mark CGI scripts; "#!/usr/bin/env resty" (OpenResty's CLI) does not.
function _M.is_cgi_shebang(line)
    if not shebang_enabled then
        return false
    end
    local prog, rest = match(line, "^#!%s*(%S+)%s*(.-)%s*$")
    if not prog then
        return false
    end
    local base = match(prog, "([^/]+)$")
    if base == "env" then
        base = nil
        for word in gmatch(rest, "%S+") do
            if sub(word, 1, 1) ~= "-" and not find(word, "=", 1, true) then
                base = match(word, "([^/]+)$")
                break
            end
        end
    end
    return base ~= nil and (find(base, "^lua[%d%.]*$") ~= nil
                            or find(base, "^luajit[%w%.%-]*$") ~= nil)
end

---------------------------------------------------------------- the worker's os.exit

-- Outside CGI mode os.exit ends the worker process, as in OpenResty (the
-- master starts another).  It says so first, naming the script, and exits
-- with SCRIPT_EXIT_STATUS, which the master reports as "ended by a
-- script's os.exit" (fcgi_lua/workers.py has the same number) instead of
-- a recycling (status 0) or a crash.  A sandbox removes os.exit.
local SCRIPT_EXIT_STATUS = 70 -- sysexits' EX_SOFTWARE
_M.SCRIPT_EXIT_STATUS = SCRIPT_EXIT_STATUS

local py_log = ext.log
local real_exit = os.exit
local current = ext.current
local current_context = ext.context

local function exiting_script()
    local r = current()
    if r then
        local params = ext.params(r)
        local filename = param(params, "SCRIPT_FILENAME")
        if filename then
            return filename
        end
        local name = param(params, "SCRIPT_NAME")
        if name then
            return (param(params, "DOCUMENT_ROOT") or "") .. name
        end
        return "a request"
    end
    if current_context() then
        return "an ngx.timer callback"
    end
    local phase = ext.phase and ext.phase()
    if phase then
        return phase .. "_script"
    end
    return "Lua code"
end

function os.exit(code)
    local where = ""
    local info = getinfo(2, "Sl")
    if info and info.currentline and info.currentline > 0 then
        where = " at " .. gsub(info.source, "^@", "") .. ":" .. info.currentline
    end
    py_log(ALERT, format("os.exit(%s) in %s%s: the worker process exits (ngx.exit ends a "
                          .. "request)", tostring(code), exiting_script(), where))
    real_exit(SCRIPT_EXIT_STATUS)
end

ext.cgi_wrap = _M.wrap
ext.is_cgi_shebang = _M.is_cgi_shebang
package.loaded["fcgi_lua.cgi"] = _M

return _M
