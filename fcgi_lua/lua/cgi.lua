-- CGI mode: a Lua script written for CGI runs unchanged (docs/cgi.md).
--
-- Loaded once per VM by fcgi_lua/lua/engine.py, after ngx.lua, with the
-- engine's helpers and ngx.lua's extension hooks.  For a request in CGI
-- mode the request's own global table gets `io`, `os`, `print` and `arg`:
-- reads come from the request body, writes are parsed as a CGI response
-- (header block, blank line, body), `os.getenv` answers the request's CGI
-- variables and `os.exit` ends the request, never the worker.  The VM's
-- shared io, os and print are never touched, so modules loaded with
-- `require` keep the real ones.

local helpers, ext = ...

local type = type
local tostring = tostring
local tonumber = tonumber
local select = select
local error = error
local ipairs = ipairs
local setmetatable = setmetatable
local rawequal = rawequal
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
local ngx = ngx
local ngx_print = ngx.print
local ngx_flush = ngx.flush
local ngx_exit = ngx.exit
local ngx_log = ngx.log
local ERR = ngx.ERR
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

-- "Status: 404 Not Found\nContent-Type: text/html\n" -> 404, { {name, value}, ... }
-- or nil, why.  Location without Status means 302 (as nginx does for
-- FastCGI); neither means 200.
function _M.parse_header_block(head)
    local status
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
    end
    return status, headers
end

local parse_header_block = _M.parse_header_block

-- Sets the parsed header block as the response's status and headers;
-- repeated names (Set-Cookie) keep every value, in order.
local function apply_headers(status, headers)
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
    local status, headers = parse_header_block(sub(buf, 1, head_len))
    if not status then
        return nil, "malformed CGI response: " .. headers
    end
    apply_headers(status, headers)
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
    local status, headers = parse_header_block(buf)
    if not status then
        error(script_name(st) .. ": malformed CGI response: " .. headers, 0)
    end
    apply_headers(status, headers)
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

---------------------------------------------------------------- io, os, print

local function new_io(st)
    local stdin, stdout, stderr, files = new_files(st)
    local input, out = stdin, stdout
    local io = setmetatable({ stdin = stdin, stdout = stdout, stderr = stderr }, {
        __index = real_io,
    })
    st.stdout = stdout

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
        return real_io.lines(filename, ...) -- looked up now: the sandbox's
    end

    function io.input(file)
        if file == nil then
            return input
        end
        if type(file) == "string" then
            local fh, err = real_io.open(file, "r") -- the sandbox's, if any
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
            local fh, err = real_io.open(file, "w") -- the sandbox's, if any
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

    return io
end

local function new_os(st, r)
    local params = r.params
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

    -- Ends the request (what was written is the response), not the worker.
    function os.exit()
        finish(st)
        ngx_exit(0)
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

---------------------------------------------------------------- hooks

-- The request r runs the chunk main in CGI mode: its env gets the proxies.
function _M.wrap(r, main)
    local filename
    local params = r.params
    for i = 1, #params, 2 do
        if params[i] == "SCRIPT_FILENAME" then
            filename = params[i + 1]
            break
        end
    end
    local st = { buf = "", headed = false, filename = filename }
    r.cgi = true -- no default Content-Type: the script's header block decides
    local env = r.env
    env.io = new_io(st)
    env.os = new_os(st, r)
    env.print = new_print(st)
    env.arg = { [0] = filename }
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

ext.cgi_wrap = _M.wrap
ext.is_cgi_shebang = _M.is_cgi_shebang
package.loaded["fcgi_lua.cgi"] = _M

return _M
