-- ngx.print, ngx.say, ngx.flush, ngx.eof, ngx.send_headers (ngx_http_lua_output.c).
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local helpers = core.helpers
local type = type
local pairs = pairs
local select = select
local error = error
local floor = math.floor
local co_yield = coroutine.yield

local IO = core.IO
local commit_headers = core.commit_headers -- resp.lua
local no_request = core.no_request
local scalar_text = core.scalar_text -- log.lua
local params_of = core.params_of -- var.lua
local take_output = core.take_output -- resp.lua

-- Output held in the request's buffer is bounded (config's
-- write_buffer_high, output_buffer_limit): past FLUSH_AT bytes ngx.print
-- and ngx.say send it and wait for the front server as ngx.flush(true)
-- does; where the script cannot wait (a runtime without
-- coroutine.isyieldable, inside a C callback) it piles up to OUTPUT_LIMIT,
-- past which the request fails.
local FLUSH_AT = helpers.output_flush_size or 262144
local OUTPUT_LIMIT = helpers.output_buffer_limit or 0
local isyieldable = coroutine.isyieldable

local function spill(r)
    if isyieldable and isyieldable() then
        local data = take_output(r, false, true)
        if data ~= "" then
            co_yield(IO, "write", data)
        end
    elseif OUTPUT_LIMIT > 0 and r.nbuf > OUTPUT_LIMIT then
        -- level 2: the script's line (print and say tail-call down here)
        error("response output of " .. r.nbuf .. " bytes buffered while the script cannot"
              .. " wait for the client: over output_buffer_limit (" .. OUTPUT_LIMIT
              .. " bytes); call ngx.flush(true) where it can", 2)
    end
    return 1
end

-- Appends v's bytes to buf; false and a reason when v cannot be printed.
local function append_value(buf, v)
    local t = type(v)
    local text = scalar_text(v)
    if text then
        buf[#buf + 1] = text
    elseif t == "table" then
        local n = #v
        for k in pairs(v) do
            if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then
                return false, "non-array table found"
            end
        end
        for i = 1, n do
            local ok, err = append_value(buf, v[i])
            if not ok then
                return false, err
            end
        end
    else
        return false, "string, number, boolean, nil, ngx.null, or array table expected, "
                      .. "but got " .. t
    end
    return true
end

local function output(fname, newline, ...)
    local r = core.cur or no_request()
    if r.eof then
        return nil, "seen eof"
    end
    local n = select("#", ...)
    local out = r.out
    local nout = r.nout
    local nbuf = r.nbuf
    if n == 1 and type(...) == "string" then
        local s = ...
        nout = nout + 1
        out[nout] = s
        nbuf = nbuf + #s
    else
        local buf = {}
        for i = 1, n do
            local ok, err = append_value(buf, (select(i, ...)))
            if not ok then
                -- level 2: ngx.say tail-calls output, its frame is gone
                error("bad argument #" .. i .. " to '" .. fname .. "' (" .. err .. ")", 2)
            end
        end
        for i = 1, #buf do
            nout = nout + 1
            out[nout] = buf[i]
            nbuf = nbuf + #buf[i]
        end
    end
    if newline then
        nout = nout + 1
        out[nout] = "\n"
        nbuf = nbuf + 1
    end
    r.nout = nout
    r.nbuf = nbuf
    if not r.header_sent then
        commit_headers(r)
    end
    if nbuf >= FLUSH_AT then
        return spill(r)
    end
    return 1
end

function ngx.print(...)
    return output("print", false, ...)
end

function ngx.say(...)
    return output("say", true, ...)
end

function ngx.flush(wait)
    local r = core.cur or no_request()
    if r.eof then
        return nil, "seen eof"
    end
    if r.http10 == nil then
        -- lua_http10_buffering (on by default): an HTTP/1.0 response is
        -- sent whole, with a Content-Length, so ngx.flush is a no-op
        local params = params_of(r)
        r.http10 = false
        for i = 1, #params, 2 do
            if params[i] == "SERVER_PROTOCOL" then
                r.http10 = params[i + 1] == "HTTP/1.0"
            end
        end
    end
    if r.http10 then
        return nil, "buffering"
    end
    -- as ngx_http_lua_ngx_flush: nothing before the headers, nor before
    -- the first body bytes unless it waits (the status may still change);
    -- a CGI script's flush of its header block sends it
    if not r.cgi and not (r.header_sent and (wait or r.seen_body)) then
        local out = r.out
        for i = 1, r.nout do
            if out[i] ~= "" then
                r.seen_body = true
                break
            end
        end
        if not r.header_sent or not (wait or r.seen_body) then
            return nil, "nothing to flush"
        end
    end
    local data = take_output(r, false)
    if data ~= "" then
        co_yield(IO, "write", data)
    end
    return 1
end

function ngx.eof()
    local r = core.cur or no_request()
    if r.eof then
        return nil, "seen eof"
    end
    local data = take_output(r, true)
    r.eof = true
    if data ~= "" then
        co_yield(IO, "write", data)
    end
    return 1
end

function ngx.send_headers()
    local r = core.cur or no_request()
    if r.header_sent then
        return nil, "header already sent"
    end
    commit_headers(r)
    return 1
end

-- Appends to the request's output without committing the headers, so
-- they can still change until the first flush (mk.print).
function core.buffer(r, s)
    local nout = r.nout + 1
    r.out[nout] = s
    r.nout = nout
    local nbuf = r.nbuf + #s
    r.nbuf = nbuf
    if OUTPUT_LIMIT > 0 and nbuf > OUTPUT_LIMIT then
        error("response output of " .. nbuf .. " bytes buffered before its headers are"
              .. " sent: over output_buffer_limit (" .. OUTPUT_LIMIT .. " bytes)", 3)
    end
end
