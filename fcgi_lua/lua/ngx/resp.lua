-- The response on the wire: the CGI header block, the status line, nginx's
-- not_modified filter and its error pages (what nginx's header filter does).
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local helpers = core.helpers
local type = type
local error = error
local setmetatable = setmetatable
local concat = table.concat
local gsub = string.gsub
local format = string.format
local match = string.match
local gmatch = string.gmatch
local py_error_page = helpers.error_page
local reasons = helpers.reasons
local DEFAULT_TYPE = helpers.default_type

local params_of = core.params_of -- var.lua

local NO_BODY_STATUS = { [204] = true, [304] = true }

local function reason(status)
    return reasons[status] or "Unknown"
end

-- "Status: 200 OK\r\n" and the like, made once per status
local status_lines = setmetatable({}, {
    __index = function(t, status)
        local line = "Status: " .. format("%d", status) .. " " .. reason(status) .. "\r\n"
        if type(status) == "number" and status >= 100 and status <= 999 then
            t[status] = line
        end
        return line
    end,
})
local DEFAULT_TYPE_LINE = "Content-Type: " .. DEFAULT_TYPE .. "\r\n"

-- The CGI header block: "Status:" first (Monkey only honours it there),
-- then Content-Type, then the script's headers in the order first set;
-- then `body`, if given (one string made, not two).
local function header_block(r, status, content_length, streaming, error_type, body)
    local status_line = status_lines[status]
    local status_text = r.status_text -- CGI mode: the script's own (cgi.lua)
    if status_text and status == r.status and not error_type then
        status_line = "Status: " .. status_text .. "\r\n"
    end
    local hvals = r.hvals
    local ct = hvals["content-type"]
    local ct_line = ""
    if error_type then
        ct_line = "Content-Type: " .. error_type .. "\r\n"
    elseif ct then
        ct_line = "Content-Type: " .. ct[#ct] .. "\r\n"
    elseif not NO_BODY_STATUS[status] and not r.cgi then -- CGI: as the script said
        ct_line = DEFAULT_TYPE_LINE
    end
    local cl = hvals["content-length"]
    local cl_line = ""
    if content_length and (error_type or not cl) then
        cl_line = "Content-Length: " .. content_length .. "\r\n"
    elseif cl and not error_type then
        cl_line = "Content-Length: " .. cl[#cl] .. "\r\n"
    end
    local hkeys = r.hkeys
    if #hkeys == 0 and not streaming then -- the script set no other header
        return status_line .. ct_line .. cl_line .. "\r\n" .. (body or "")
    end
    local lines = { status_line, ct_line, cl_line }
    for i = 1, #hkeys do
        local key = hkeys[i]
        local h = hvals[key]
        if h and key ~= "content-type" and key ~= "content-length" and h.pos == i then
            local name = h.name
            for j = 1, #h do
                lines[#lines + 1] = name .. ": " .. h[j] .. "\r\n"
            end
        end
    end
    if streaming and not hvals["x-accel-buffering"] then
        -- stock nginx buffers FastCGI responses; a script that flushes
        -- means to stream.
        lines[#lines + 1] = "X-Accel-Buffering: no\r\n"
    end
    lines[#lines + 1] = "\r\n"
    lines[#lines + 1] = body
    return concat(lines)
end

local function commit_headers(r)
    r.header_sent = true
    if r.status == 0 then
        r.status = 200
    end
end

-- nginx's not_modified filter, which FastCGI responses never meet (nginx
-- runs it on upstream responses only when it caches them): a 200 whose
-- Last-Modified (exactly) and ETag match the request's If-Modified-Since
-- and If-None-Match (weak comparison, "*") becomes a 304 without a body.
local function etag_matches(list, etag)
    if list == "*" then
        return true
    end
    etag = gsub(etag, "^W/", "")
    for item in gmatch(list, "[^,]+") do
        local tag = gsub(gsub(item, "^%s+", ""), "%s+$", "")
        if gsub(tag, "^W/", "") == etag then
            return true
        end
    end
    return false
end


local function not_modified(r)
    -- only a response with a validator can be "not modified": the
    -- request's params are fetched for nothing else here
    local hvals = r.hvals
    local lm, etag = hvals["last-modified"], hvals["etag"]
    if not lm and not etag then
        return false
    end
    local ims, inm
    local params = params_of(r)
    for i = 1, #params, 2 do
        local k = params[i]
        if k == "HTTP_IF_MODIFIED_SINCE" then
            ims = params[i + 1]
        elseif k == "HTTP_IF_NONE_MATCH" then
            inm = params[i + 1]
        end
    end
    if not ims and not inm then
        return false
    end
    if ims then
        local t = lm and ngx.parse_http_time(lm[#lm])
        if not t or ngx.parse_http_time(ims) ~= t then
            return false
        end
    end
    if inm then
        if not etag or not etag_matches(inm, etag[#etag]) then
            return false
        end
    end
    return true
end

-- Everything printed so far, as wire bytes; the header block goes in
-- front of the first such chunk.  final: nothing more will be printed,
-- so a Content-Length can be given.  spilling: the output outgrew its
-- buffer (spill below), which is no sign that the script streams.
local function take_output(r, final, spilling)
    local body = ""
    local nout = r.nout
    if nout > 0 then
        r.nbuf = 0
        local out = r.out
        if nout == 1 then
            body = out[1]
        elseif nout == 2 then -- ngx.say's text and newline
            body = out[1] .. out[2]
        else
            body = concat(out, "", 1, nout)
        end
        if not final then -- else the request ends: nothing will be printed
            r.out = {}
        end
        r.nout = 0
    end
    if r.emitted then
        if r.head then
            return ""
        end
        return body
    end
    commit_headers(r)
    r.emitted = true
    if r.status == 200 and not r.cgi and not_modified(r) then
        r.status = 304
        r.head = true -- header only: later output is dropped too
    end
    local status = r.status
    local length
    if final and not NO_BODY_STATUS[status] then
        length = #body
    end
    local streaming = not final and not spilling
    if r.head or NO_BODY_STATUS[status] then
        return header_block(r, status, length, streaming)
    end
    return header_block(r, status, length, streaming, nil, body)
end

local function error_response(r, status)
    -- nginx's special response: the script's headers stay, the body is
    -- the default error page.
    r.header_sent = true
    r.emitted = true
    r.status = status
    if NO_BODY_STATUS[status] then
        return header_block(r, status, nil, false)
    end
    local page = py_error_page(status)
    if r.head then
        return header_block(r, status, #page, false, "text/html")
    end
    return header_block(r, status, #page, false, "text/html", page)
end

core.commit_headers = commit_headers
core.take_output = take_output
core.error_response = error_response
