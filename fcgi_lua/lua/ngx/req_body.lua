-- ngx.req's request body: read, discard, get and build it (ngx_http_lua_req_body.c).
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local helpers = core.helpers
local type = type
local tonumber = tonumber
local select = select
local error = error
local concat = table.concat
local sub = string.sub
local format = string.format
local floor = math.floor
local co_yield = coroutine.yield
local py_body_now = helpers.body_now

local IO = core.IO
local check_max = core.check_max -- string.lua
local no_request = core.no_request
local num2str = core.num2str -- log.lua
local params_of = core.params_of -- var.lua
local parse_args = core.parse_args -- string.lua
local req = ngx.req
local unavailable = core.unavailable -- control.lua

-- The body (docs/lua-api.md "Request body").  Python keeps the bytes (in
-- memory up to client_body_buffer_size, else in a temp file); the script
-- sees r.body_state: nil (not read), "memory" (r.body), "file"
-- (r.body_file) or "discarded".

function req.read_body()
    local r = core.cur or no_request()
    if r.body_state then
        return
    end
    -- a body that came with the params needs no wait
    local res = py_body_now(r.handle) or co_yield(IO, "read_body")
    if res.status then
        -- As nginx: a body too large (413), short or malformed (400), or one
        -- that could not be stored (500) ends the request with that status.
        r.body_state = "failed"
        return ngx.exit(res.status)
    end
    if res.file then
        r.body_state = "file"
        r.body_file = res.file
    else
        r.body_state = "memory"
        r.body = res.data
    end
end

function req.discard_body()
    local r = core.cur or no_request()
    if r.body_state then
        return -- already read: nothing to discard
    end
    r.body_state = "discarded"
    co_yield(IO, "discard_body")
end

function req.get_body_data(max_bytes)
    local r = core.cur or no_request()
    local body = r.body
    if r.body_state ~= "memory" or body == "" then
        return nil
    end
    if max_bytes ~= nil then
        local n = tonumber(max_bytes)
        if n == nil then
            error("bad argument #1 to 'get_body_data' (number expected, got "
                  .. type(max_bytes) .. ")", 2)
        end
        if n > 0 and n < #body then
            return sub(body, 1, n)
        end
    end
    return body
end

function req.get_body_file()
    local r = core.cur or no_request()
    if r.body_state ~= "file" then
        return nil
    end
    return r.body_file
end

-- ngx.req.set_body_data / init_body / append_body / finish_body: the body
-- the script sees from now on (get_body_data, get_body_file, get_post_args,
-- $request_body, Content-Length), as OpenResty's content phase sees it; the
-- front server has sent the request already, so nothing else changes.  A
-- body built past init_body's buffer goes to a temp file of the request's
-- own (Python's body_build helper), removed when the request ends.
local py_body_build = helpers.body_build

local function body_request(fname, nargs, want, ...)
    if nargs ~= want and not (want == 1 and fname == "init_body" and nargs == 0) then
        error((fname == "init_body" and "expecting 0 or 1 argument but seen "
               or fname == "finish_body" and "expecting 0 argument but seen "
               or "expecting 1 arguments but seen ") .. nargs, 3)
    end
    local data = ...
    if want == 1 and fname ~= "init_body" then
        if type(data) == "number" then
            data = num2str(data)
        elseif type(data) ~= "string" then
            error("bad argument #1 to '" .. fname .. "' (string expected, got "
                  .. type(data) .. ")", 3)
        end
    end
    local r = core.cur or no_request()
    return r, data
end

-- what nginx's headers_in.content_length becomes: $http_content_length,
-- $content_length and get_headers()["content-length"]
local function set_body_length(r, n)
    local value = format("%d", n)
    local params, out = params_of(r), {}
    for i = 1, #params, 2 do
        local k = params[i]
        if k ~= "CONTENT_LENGTH" and k ~= "HTTP_CONTENT_LENGTH" then
            out[#out + 1] = k
            out[#out + 1] = params[i + 1]
        end
    end
    out[#out + 1] = "CONTENT_LENGTH"
    out[#out + 1] = value
    out[#out + 1] = "HTTP_CONTENT_LENGTH"
    out[#out + 1] = value
    r.params = out
    r.header_list, r.vars = nil, nil
end

local function check_body_read(r)
    local state = r.body_state
    if state == "discarded" then
        error("request body already discarded asynchronously", 3)
    elseif not state or state == "failed" then
        error("request body not read yet", 3)
    end
end

function req.set_body_data(...)
    local r, data = body_request("set_body_data", select("#", ...), 1, ...)
    check_body_read(r)
    r.new_body = nil
    py_body_build(r.handle)
    r.body_state, r.body, r.body_file = "memory", data, nil
    set_body_length(r, #data)
end

function req.init_body(...)
    local r, size = body_request("init_body", select("#", ...), 1, ...)
    check_body_read(r)
    local default = py_body_build(r.handle)
    if select("#", ...) == 1 then
        local n = tonumber(size)
        if n == nil then
            error("bad argument #1 to 'init_body' (number expected, got " .. type(size) .. ")", 2)
        end
        n = n >= 0 and floor(n) or -floor(-n) -- luaL_checkinteger truncates
        if n < 0 then
            error("bad size argument: " .. format("%d", n), 2)
        end
        size = n
    else
        size = default
    end
    -- size 0: every append goes to the file (nginx's request_body_in_file_only)
    r.new_body = { size = size, parts = {}, used = 0, length = 0 }
    r.body_state, r.body, r.body_file = "memory", "", nil
end

local function spill(r, data)
    local path, err = py_body_build(r.handle, data)
    if not path then
        error("fail to write file", 3)
    end
    r.new_body.file = path
end

function req.append_body(...)
    local r, data = body_request("append_body", select("#", ...), 1, ...)
    local nb = r.new_body
    if not nb then
        error("request_body not initialized", 2)
    end
    nb.length = nb.length + #data
    if nb.size == 0 then
        spill(r, data)
        return
    end
    -- nginx fills a buffer of `size` bytes and writes it out when full and
    -- more comes: a body of exactly `size` bytes stays in memory
    local parts, room = nb.parts, nb.size - nb.used
    while #data > 0 do
        if room == 0 then
            spill(r, concat(parts))
            parts = {}
            nb.parts, nb.used, room = parts, 0, nb.size
        end
        local piece = #data <= room and data or sub(data, 1, room)
        parts[#parts + 1] = piece
        nb.used = nb.used + #piece
        room = room - #piece
        data = sub(data, #piece + 1)
    end
end

function req.finish_body(...)
    local r = body_request("finish_body", select("#", ...), 0)
    local nb = r.new_body
    if not nb then
        error("request_body not initialized", 2)
    end
    if nb.file then
        spill(r, concat(nb.parts))
        r.body_state, r.body, r.body_file = "file", nil, nb.file
        nb.parts, nb.used = {}, 0
    else
        r.body_state, r.body, r.body_file = "memory", concat(nb.parts), nil
    end
    set_body_length(r, nb.length)
end

function req.get_post_args(max)
    local r = core.cur or no_request()
    max = check_max(max, "get_post_args", 1)
    local state = r.body_state
    if state == "memory" then
        return parse_args(r.body, max)
    elseif state == "file" then
        -- as OpenResty: read it with get_body_file()
        return nil, "request body in temp file not supported"
    elseif state == "discarded" or state == "socket" then
        return {}
    end
    return nil, "request body not read yet"
end

-- fcgi-lua extension: the body as multipart/form-data.
--   res, err = ngx.req.get_multipart(max_parts?)
--   res.fields[name] = "value" or {"v1", "v2"}
--   res.files = { {name=, filename=, content_type=, size=, path=}, ... }
function req.get_multipart(max)
    local r = core.cur or no_request()
    max = check_max(max, "get_multipart", 1)
    local done = r.multipart
    if done then
        return done[1], done[2]
    end
    req.read_body()
    if r.body_state == "discarded" then
        return nil, "request body discarded"
    elseif r.body_state == "socket" then
        return nil, "request body read by ngx.req.socket"
    end
    local res = co_yield(IO, "multipart", max)
    if res.status then
        return ngx.exit(res.status)
    end
    if res.err then
        done = { nil, res.err }
    else
        done = { { fields = res.fields, files = res.files }, res.truncated and "truncated" or nil }
    end
    r.multipart = done
    return done[1], done[2]
end

-- ngx.req.socket: socket.lua (the body's stream reads like a cosocket)
req.set_body_file = unavailable("ngx.req.set_body_file")
