-- ngx.socket.*: OpenResty's cosockets (TCP, unix stream, UDP), and the
-- Debian names of OpenResty's Lua libraries for `require`.
--
-- Loaded once per VM, after ngx.lua, by fcgi_lua/lua/cosocket/ (dispatch.py), which
-- passes its functions (C) and the driver's extension hooks.  The socket
-- objects, their argument checks and return conventions live here; the
-- connections, buffers, pools and timers live in Python, and Lua only
-- holds integer handles to them.  A method calls Python once; only when
-- the operation must wait does it yield the handle to the driver
-- (`IO, "cosocket", conn`), which resumes it with the result, or with nil:
-- then C.failure(conn) says why.
--
-- Names, arguments, results and error strings follow lua-nginx-module
-- 0.10.23; the differences are listed in docs/lua-api.md ("Cosockets").

local C, ext = ...

local type = type
local tostring = tostring
local tonumber = tonumber
local select = select
local error = error
local next = next
local setmetatable = setmetatable
local concat = table.concat
local insert = table.insert
local sub = string.sub
local byte = string.byte
local find = string.find
local format = string.format
local gsub = string.gsub
local lower = string.lower
local match = string.match
local gmatch = string.gmatch
local floor = math.floor
local co_yield = coroutine.yield
local co_running = coroutine.running
local io_open = io.open
local require = require

local IO = ext.IO
local current = ext.context -- the request, or the timer, a socket belongs to

local py_new_owner = C.new_owner
local py_release_owner = C.release_owner
local py_connect = C.connect
local py_connect_result = C.connect_result
local py_send = C.send
local py_receive = C.receive
local py_until = C["until"]
local py_receive_until = C.receive_until
local py_failure = C.failure
local py_keepalive = C.keepalive
local py_close = C.close
local py_handshake = C.handshake
local py_udp_setpeername = C.udp_setpeername
local py_udp_send = C.udp_send
local py_udp_receive = C.udp_receive
local py_udp_close = C.udp_close
local py_sockopt = C.sockopt
local py_valid_ip = C.valid_ip

-- read modes (cosocket/reading.py's LINE, SIZE, ALL, ANY)
local LINE, SIZE, ALL, ANY = 1, 2, 3, 5

-- Slots of a socket object: lua-nginx-module's own (ngx_http_lua_socket_tcp.c
-- SOCKET_*_INDEX; `pairs`/`ipairs` over a socket see the same entries,
-- t/062-count.t TEST 24).  The methods live in the shared metatable, whose
-- __index is itself, as in OpenResty.
local CONN = 1     -- the Python connection, nil when closed
local CTIMEOUT = 2 -- ms; nil or 0: the 60 s default
local KEY = 3      -- the pool name
local STIMEOUT = 4
local RTIMEOUT = 5
local CERT = 6     -- setclientcert's certificate and key
local PKEY = 7
local BIND = 8     -- bind's local address
local UTIMEOUT = 2 -- a UDP socket's (read) timeout

-- What OpenResty keeps in its C upstream struct, beside the object: the
-- request that connected it, how often its connection was reused, and
-- the light thread waiting to read on it / for its send to drain.  Weak
-- both ways: no cycle through a socket stored in ngx.ctx keeps either.
local req_of = setmetatable({}, { __mode = "kv" })
local reused_of = setmetatable({}, { __mode = "kv" })
local reading = setmetatable({}, { __mode = "kv" })
local writing = setmetatable({}, { __mode = "kv" })

local _M = {}

local phase = ext.phase -- "init_worker" while init_worker_script runs

local function no_request()
    if phase() == "init_worker" then -- OpenResty's fake request refuses cosockets
        error("API disabled in the context of init_worker_by_lua*", 3)
    end
    error("no request found", 3)
end

-- luaL_checktype(L, 1, LUA_TTABLE) of OpenResty's methods: a method
-- called with `.` instead of `:` (t/083-bad-sock-self.t).
local function check_self(self, name)
    if type(self) ~= "table" then
        error("bad argument #1 to '" .. name .. "' (table expected, got " .. type(self) .. ")", 3)
    end
end

-- The connection behind a socket object, or nil once it is closed; raises
-- (for the method's caller) outside a request, for a bad self, and for a
-- socket made by another request, as OpenResty does ("bad request").
local function live_conn(self, name)
    local r = current()
    if not r then
        error("no request found", 3)
    end
    if type(self) ~= "table" then
        error("bad argument #1 to '" .. name .. "' (table expected, got " .. type(self) .. ")", 3)
    end
    local conn = self[CONN]
    if conn and req_of[self] ~= r then
        error("bad request", 3)
    end
    return conn
end

local function owner_of(r)
    local owner = r.cosocket_owner
    if not owner then
        owner = py_new_owner()
        r.cosocket_owner = owner
    end
    return owner
end

-- ngx.lua, when a request (or a timer) ends: close what it left open.
ext.close_sockets = function(r)
    local owner = r.cosocket_owner
    if owner then
        r.cosocket_owner = nil
        py_release_owner(owner)
    end
end

-- Hand `obj` to the driver until its operation completes.
local function wait(obj)
    return co_yield(IO, "cosocket", obj)
end

-- Whether another light thread waits on this socket in the same direction
-- (`reading` or `writing`): OpenResty's cosockets are full duplex, one
-- reader and one writer at a time ("socket busy reading"/"socket busy writing").
local function busy(self, waits)
    return waits[self] ~= nil
end

-- coroutine -> the socket object it waits on
local waiting_on = setmetatable({}, { __mode = "k" })

-- Wait (in `reading` or `writing`) until the operation on `conn` completes.
local function wait_in(self, waits, conn)
    local co = co_running()
    waits[self] = co
    waiting_on[co] = self
    local value = wait(conn)
    waiting_on[co] = nil
    waits[self] = nil
    return value
end

-- thread.lua: ngx.thread.kill of a light thread waiting on a socket closes
-- that socket, as lua-nginx-module does (its pending operation is torn
-- down with it): the other threads then get "closed".
ext.socket_thread_killed = function(co)
    local self = waiting_on[co]
    if not self then
        return
    end
    waiting_on[co] = nil
    reading[self] = nil
    writing[self] = nil
    local conn = self[CONN]
    if conn then
        self[CONN] = nil
        py_close(conn)
    end
end

local function num2str(n)
    if n == floor(n) and n >= -2147483648 and n <= 2147483647 then
        return format("%d", n)
    end
    return format("%.14g", n)
end

-- ngx_http_lua_copy_str_in_table, strict: nested arrays of strings and
-- numbers only.
local function flatten(t, buf, fname)
    local n = #t
    if next(t, n > 0 and n or nil) ~= nil then
        error("bad argument #1 to '" .. fname .. "' (non-array table found)", 4)
    end
    for i = 1, n do
        local v = t[i]
        local tv = type(v)
        if tv == "string" then
            buf[#buf + 1] = v
        elseif tv == "number" then
            buf[#buf + 1] = num2str(v)
        elseif tv == "table" then
            flatten(v, buf, fname)
        else
            error("bad argument #1 to '" .. fname .. "' (bad data type " .. tv .. " found)", 4)
        end
    end
    return buf
end

local function to_bytes(data, fname)
    local t = type(data)
    if t == "string" then
        return data
    elseif t == "number" then
        return num2str(data)
    elseif t == "table" then
        return concat(flatten(data, {}, fname))
    elseif t == "nil" then
        return "nil"
    elseif t == "boolean" then
        return data and "true" or "false"
    end
    error("bad argument #1 to '" .. fname .. "' (string, number, boolean, nil, "
          .. "or array table expected, got " .. t .. ")", 3)
end

-- ngx_parse_url's refusals, for the host part of connect/setpeername.
local function bad_host(host)
    if host == "" then
        return 'failed to parse host name "": no host'
    end
    if find(host, "[^%w%.%-_:%[%]]") then
        return 'failed to parse host name "' .. host .. '": invalid host'
    end
    return nil
end

local function check_timeout(v)
    local t = tonumber(v) or 0
    t = t >= 0 and floor(t) or -floor(-t)
    if t < 0 or t >= 2147483648 then
        error("bad timeout value", 3)
    end
    return t
end

-- Where connect/setpeername goes: host, port (nil for unix:), pool key;
-- or nil and the error.
local function peer(host, port, nargs, pool)
    if nargs >= 2 and tonumber(port) then
        port = floor(tonumber(port))
        if port < 0 or port > 65535 then
            return nil, nil, nil, "bad port number: " .. port
        end
        local err = bad_host(host)
        if err then
            return nil, nil, nil, err
        end
        return host, port, pool or (host .. ":" .. port)
    end
    if #host >= 5 and lower(sub(host, 1, 5)) == "unix:" then
        return sub(host, 6), nil, pool or host
    end
    return nil, nil, nil, "missing the port number"
end

---------------------------------------------------------------- TCP

local tcp = {}
tcp.__index = tcp

function tcp.connect(self, ...)
    local nargs = select("#", ...)
    if nargs < 1 or nargs > 3 then
        error("ngx.socket connect: expecting 2, 3, or 4 arguments (including the object), "
              .. "but seen " .. (nargs + 1), 2)
    end
    local r = current()
    if not r then
        no_request()
    end
    if type(self) ~= "table" then
        error("bad argument #1 to 'connect' (table expected, got " .. type(self) .. ")", 2)
    end
    local host, port = ...
    if type(host) ~= "string" then
        if type(host) ~= "number" then
            error("bad argument #1 to 'connect' (string expected, got " .. type(host) .. ")", 2)
        end
        host = tostring(host)
    end
    local pool, pool_size, backlog
    local opts = select(nargs, ...)
    if nargs >= 2 and type(opts) == "table" then
        pool_size = opts.pool_size
        if type(pool_size) == "number" or tonumber(pool_size) then
            pool_size = floor(tonumber(pool_size))
            if pool_size <= 0 then
                error("bad argument #" .. nargs .. " to 'connect' (bad \"pool_size\" option "
                      .. "value: " .. pool_size .. ")", 2)
            end
        elseif pool_size ~= nil then
            error("bad argument #" .. nargs .. " to 'connect' (bad \"pool_size\" option "
                  .. "type: " .. type(pool_size) .. ")", 2)
        end
        backlog = tonumber(opts.backlog)
        if backlog then
            backlog = floor(backlog)
            if backlog < 0 then
                error("bad argument #" .. nargs .. " to 'connect' (bad \"backlog\" option "
                      .. "value: " .. backlog .. ")", 2)
            end
        end
        pool = opts.pool
        local tp = type(pool)
        if tp == "number" then
            pool = tostring(pool)
        elseif tp ~= "string" and tp ~= "nil" then
            error("bad argument #" .. nargs .. " to 'connect' (bad \"pool\" option type: "
                  .. tp .. ")", 2)
        end
        nargs = nargs - 1
    end
    local req = req_of[self]
    if req and req ~= r then
        error("bad request", 2)
    end
    local old = self[CONN]
    if old then
        -- reconnecting closes the previous connection first
        self[CONN] = nil
        py_close(old)
    end
    local key, err
    host, port, key, err = peer(host, port, nargs, pool)
    if not host then
        return nil, err
    end
    req_of[self] = r
    self[KEY] = key
    local conn, reused = py_connect(owner_of(r), key, host, port, pool_size, backlog,
                                    self[CTIMEOUT], self[BIND])
    if not conn then
        return nil, reused
    end
    if reused == false then
        reused = wait(conn)
        if reused == nil then
            return nil, (py_failure(conn))
        end
        if reused > 0 then -- a backlog wait ended with a pooled connection
            conn = py_connect_result(conn)
        end
    end
    self[CONN] = conn
    reused_of[self] = reused
    return 1
end

function tcp.send(self, ...)
    local nargs = select("#", ...)
    if nargs ~= 1 then
        error("expecting 2 arguments (including the object), but got " .. (nargs + 1), 2)
    end
    local conn = live_conn(self, "send")
    if not conn then
        return nil, "closed"
    end
    if busy(self, writing) then
        return nil, "socket busy writing"
    end
    local data = to_bytes((...), "send")
    if data == "" then
        return 0
    end
    local sent, err = py_send(conn, data, self[STIMEOUT])
    if sent == true then -- err: the handle of the wait for the peer to drain
        sent = wait_in(self, writing, err)
        if sent == nil then
            return nil, (py_failure(err))
        end
    end
    if sent then
        return sent
    end
    return nil, err
end

-- data, or nil, err, partial (as many values as lua-nginx-module gives)
local function finish_read(self, conn, data, err, partial)
    if data == true then
        data = wait_in(self, reading, conn)
        if data == nil then
            return nil, py_failure(conn)
        end
    end
    if data ~= nil then
        return data
    end
    if err ~= nil and partial == nil then
        return nil, err
    end
    return nil, err, partial
end

function tcp.receive(self, ...)
    local nargs = select("#", ...)
    if nargs > 1 then
        error("expecting 1 or 2 arguments (including the object), but got " .. (nargs + 1), 2)
    end
    local conn = live_conn(self, "receive")
    if not conn then
        return nil, "closed"
    end
    if busy(self, reading) then
        return nil, "socket busy reading"
    end
    local mode, size = LINE, 0
    if nargs == 1 then
        local pat = ...
        local n = tonumber(pat)
        if n then
            if n < 0 then
                error("bad argument #1 to 'receive' (bad number argument)", 2)
            end
            size = floor(n)
            if size == 0 then
                return ""
            end
            mode = SIZE
        elseif type(pat) == "string" then
            if pat == "*a" then
                mode = ALL
            elseif pat ~= "*l" then
                if #pat ~= 2 or byte(pat) ~= 42 then
                    error("bad argument #1 to 'receive' (bad pattern argument: " .. pat .. ")", 2)
                end
                error("bad argument #1 to 'receive' (bad pattern argument)", 2)
            end
        else
            error("bad argument #1 to 'receive' (bad argument)", 2)
        end
    end
    return finish_read(self, conn, py_receive(conn, mode, size, self[RTIMEOUT]))
end

function tcp.receiveuntil(self, ...)
    local nargs = select("#", ...)
    if nargs < 1 or nargs > 2 then
        error("expecting 2 or 3 arguments (including the object), but got " .. (nargs + 1), 2)
    end
    check_self(self, "receiveuntil")
    local pattern, opts = ...
    if type(pattern) ~= "string" then
        if type(pattern) ~= "number" then
            error("bad argument #1 to 'receiveuntil' (string expected, got "
                  .. type(pattern) .. ")", 2)
        end
        pattern = tostring(pattern)
    end
    local inclusive = false
    if nargs == 2 then
        if type(opts) ~= "table" then
            error("bad argument #2 to 'receiveuntil' (table expected, got " .. type(opts) .. ")", 2)
        end
        local v = opts.inclusive
        if type(v) == "boolean" then
            inclusive = v
        elseif v ~= nil then
            error('bad "inclusive" option value type: ' .. type(v), 2)
        end
    end
    local r = current()
    if not r then
        no_request()
    end
    if pattern == "" then
        return nil, "pattern is empty"
    end
    local state = py_until(owner_of(r), pattern, inclusive)
    return function(...)
        local n = select("#", ...)
        if n > 1 then
            error("expecting 0 or 1 argument, but seen " .. n, 2)
        end
        local size = 0
        if n == 1 then
            local v = ...
            size = tonumber(v)
            if not size then
                error("bad argument #1 to '?' (number expected, got " .. type(v) .. ")", 2)
            end
            size = size > 0 and floor(size) or 0
        end
        local conn = self[CONN]
        if not conn then
            return nil, "closed"
        end
        local r = current()
        if not r then
            no_request()
        end
        if req_of[self] ~= r then
            error("bad request", 2)
        end
        if busy(self, reading) then
            return nil, "socket busy reading"
        end
        return finish_read(self, conn, py_receive_until(conn, state, size, self[RTIMEOUT]))
    end
end

function tcp.close(self, ...)
    if select("#", ...) ~= 0 then
        error("expecting 1 argument (including the object) but seen "
              .. (select("#", ...) + 1), 2)
    end
    local conn = live_conn(self, "close")
    if not conn then
        return nil, "closed"
    end
    self[CONN] = nil
    return py_close(conn)
end

function tcp.settimeout(self, ...)
    local nargs = select("#", ...)
    if nargs ~= 1 then
        error("ngx.socket settimeout: expecting 2 arguments (including the object) but seen "
              .. (nargs + 1), 2)
    end
    check_self(self, "settimeout")
    local t = check_timeout((...))
    self[CTIMEOUT] = t
    self[STIMEOUT] = t
    self[RTIMEOUT] = t
end

function tcp.settimeouts(self, ...)
    local nargs = select("#", ...)
    if nargs ~= 3 then
        error("ngx.socket settimeouts: expecting 4 arguments (including the object) but seen "
              .. (nargs + 1), 2)
    end
    check_self(self, "settimeouts")
    local c, s, rd = ...
    self[CTIMEOUT] = check_timeout(c)
    self[STIMEOUT] = check_timeout(s)
    self[RTIMEOUT] = check_timeout(rd)
end

function tcp.setkeepalive(self, ...)
    local nargs = select("#", ...)
    if nargs > 2 then
        error("expecting 1 to 3 arguments (including the object), but got " .. (nargs + 1), 2)
    end
    local timeout, size = ...
    if timeout ~= nil then
        local t = tonumber(timeout)
        if not t then
            error("bad argument #1 to 'setkeepalive' (number expected, got "
                  .. type(timeout) .. ")", 2)
        end
        timeout = floor(t)
    end
    if size ~= nil then
        local s = tonumber(size)
        if not s then
            error("bad argument #2 to 'setkeepalive' (number expected, got " .. type(size) .. ")",
                  2)
        end
        size = floor(s)
    end
    local conn = live_conn(self, "setkeepalive")
    if not conn then
        return nil, "closed"
    end
    local ok, err = py_keepalive(conn, self[KEY], timeout, size)
    if ok then
        self[CONN] = nil
        return 1
    end
    if ok == false then
        error("bad argument #" .. nargs .. " to 'setkeepalive' (" .. err .. ")", 2)
    end
    return nil, err
end

function tcp.getreusedtimes(self, ...)
    if select("#", ...) ~= 0 then
        error("expecting 1 argument (including the object), but got "
              .. (select("#", ...) + 1), 2)
    end
    check_self(self, "getreusedtimes")
    if not self[CONN] then
        return nil, "closed"
    end
    return reused_of[self] or 0
end

function tcp.sslhandshake(self, reused_session, server_name, ssl_verify, send_status_req)
    local conn = live_conn(self, "sslhandshake")
    if not conn then
        return nil, "closed"
    end
    if server_name ~= nil and type(server_name) ~= "string" then
        error("bad server name type", 2)
    end
    if self[CERT] ~= nil then
        -- only ngx.ssl's parse_pem_cert / parse_pem_priv_key make them, and
        -- fcgi-lua has no ngx.ssl (TLS ends at the front server)
        return nil, "client certificates are not supported by fcgi-lua (no ngx.ssl)"
    end
    local hs, err = py_handshake(conn, server_name, ssl_verify, self[CTIMEOUT])
    if not hs then
        return nil, err
    end
    if not wait(hs) then
        self[CONN] = nil -- a failed handshake closes the connection
        return nil, (py_failure(hs))
    end
    -- No session object to reuse (Python's ssl keeps it inside): true
    -- stands for it, and a reused_session argument is ignored.
    return true
end

-- lua-resty-core's socket.lua: a client certificate and key for the next
-- sslhandshake, as ngx.ssl's cdata (none: clears them).
function tcp.setclientcert(self, cert, pkey)
    if not cert and not pkey then
        self[CERT] = nil
        self[PKEY] = nil
        return true
    end
    if not cert or not pkey then
        return nil, "client certificate must be supplied with corresponding private key"
    end
    if type(cert) ~= "cdata" then
        return nil, "bad cert arg: cdata expected, got " .. type(cert)
    end
    if type(pkey) ~= "cdata" then
        return nil, "bad pkey arg: cdata expected, got " .. type(pkey)
    end
    self[CERT] = cert
    self[PKEY] = pkey
    return true
end

-- lua-resty-core's getoption / setoption: the connection's socket options.
local OPTIONS = { keepalive = 1, reuseaddr = 2, ["tcp-nodelay"] = 3, sndbuf = 4, rcvbuf = 5 }

local function socket_option(self, option, value, nargs)
    local conn = self[CONN]
    if not conn then
        error("socket is never created nor connected", 3)
    end
    if option == nil then
        return nil, 'missing the "option" argument'
    end
    if nargs == 2 and value == nil then
        return nil, 'missing the "value" argument'
    end
    local index = OPTIONS[option]
    if index == nil then
        return nil, "unsupported option " .. tostring(option)
    end
    return py_sockopt(conn, index, value)
end

function tcp.getoption(self, option)
    return socket_option(self, option, nil, 1)
end

function tcp.setoption(self, option, value)
    local v = value
    if type(v) == "boolean" then
        v = v and 1 or 0
    end
    local ok, err = socket_option(self, option, v, 2)
    if ok == nil then
        return nil, err
    end
    return true
end

-- receiveany(max): whatever has arrived, at most max bytes, waiting only
-- while nothing has.
function tcp.receiveany(self, ...)
    local nargs = select("#", ...)
    if nargs ~= 1 then
        error("expecting 2 arguments (including the object), but got " .. (nargs + 1), 2)
    end
    local conn = live_conn(self, "receiveany")
    if not conn then
        return nil, "closed"
    end
    if busy(self, reading) then
        return nil, "socket busy reading"
    end
    local max = tonumber((...))
    if not max or floor(max) <= 0 then
        error("bad argument #2 to 'receiveany' (bad max argument)", 2)
    end
    return finish_read(self, conn, py_receive(conn, ANY, floor(max), self[RTIMEOUT]))
end

-- bind(address): the local IP address the next connect starts from.
function tcp.bind(self, ...)
    local nargs = select("#", ...)
    if nargs ~= 1 then
        error("expecting 2 arguments, but got " .. (nargs + 1), 2)
    end
    if not current() then
        no_request()
    end
    check_self(self, "bind")
    local addr = ...
    if type(addr) ~= "string" then
        if type(addr) ~= "number" then
            error("bad argument #2 to 'bind' (string expected, got " .. type(addr) .. ")", 2)
        end
        addr = tostring(addr)
    end
    if not py_valid_ip(addr) then
        return nil, "bad address"
    end
    self[BIND] = addr
    return true
end

---------------------------------------------------------------- UDP

local udp = {}
udp.__index = udp

function udp.setpeername(self, ...)
    local nargs = select("#", ...)
    if nargs < 1 or nargs > 2 then
        error("expecting 2 or 3 arguments (including the object), but seen " .. (nargs + 1), 2)
    end
    local r = current()
    if not r then
        no_request()
    end
    local host, port = ...
    if type(host) ~= "string" then
        if type(host) ~= "number" then
            error("bad argument #1 to 'setpeername' (string expected, got "
                  .. type(host) .. ")", 2)
        end
        host = tostring(host)
    end
    check_self(self, "setpeername")
    local req = req_of[self]
    if req and req ~= r then
        error("bad request", 2)
    end
    local _, err
    host, port, _, err = peer(host, port, nargs, nil)
    if not host then
        return nil, err
    end
    local old = self[CONN]
    self[CONN] = nil
    req_of[self] = r
    local conn = py_udp_setpeername(owner_of(r), old, host, port)
    if not wait(conn) then
        return nil, (py_failure(conn))
    end
    self[CONN] = conn
    return 1
end

function udp.send(self, ...)
    if select("#", ...) ~= 1 then
        error("expecting 2 arguments (including the object), but got "
              .. (select("#", ...) + 1), 2)
    end
    local conn = live_conn(self, "send")
    if not conn then
        return nil, "closed"
    end
    return py_udp_send(conn, to_bytes((...), "send"))
end

function udp.receive(self, ...)
    local nargs = select("#", ...)
    if nargs > 1 then
        error("expecting 1 or 2 arguments (including the object), but got " .. (nargs + 1), 2)
    end
    local size = ...
    if size ~= nil then
        local n = tonumber(size)
        if not n then
            error("bad argument #1 to 'receive' (number expected, got " .. type(size) .. ")", 2)
        end
        size = floor(n)
    end
    local conn = live_conn(self, "receive")
    if not conn then
        return nil, "closed"
    end
    local data, err = py_udp_receive(conn, size, self[UTIMEOUT])
    if data == true then
        data = wait(conn)
        if data == nil then
            return nil, (py_failure(conn))
        end
    end
    if data then
        return data
    end
    return nil, err
end

function udp.settimeout(self, ...)
    if select("#", ...) ~= 1 then
        error("ngx.socket settimeout: expecting 2 arguments (including the object) but seen "
              .. (select("#", ...) + 1), 2)
    end
    check_self(self, "settimeout")
    self[UTIMEOUT] = check_timeout((...))
end

function udp.close(self)
    local conn = live_conn(self, "close")
    if not conn then
        return nil, "closed"
    end
    self[CONN] = nil
    return py_udp_close(conn)
end

---------------------------------------------------------------- ngx.socket

function _M.tcp(...)
    if select("#", ...) ~= 0 then
        error("expecting zero arguments, but got " .. select("#", ...), 2)
    end
    if not current() then
        no_request()
    end
    return setmetatable({}, tcp)
end

function _M.udp(...)
    if select("#", ...) ~= 0 then
        error("expecting zero arguments, but got " .. select("#", ...), 2)
    end
    if not current() then
        no_request()
    end
    return setmetatable({}, udp)
end

_M.stream = _M.tcp

function _M.connect(...)
    local sock = _M.tcp()
    local ok, err = sock:connect(...)
    if not ok then
        return nil, err
    end
    return sock
end

ngx.socket = _M

---------------------------------------------------------------- ngx.req.socket

-- The request body as a stream (lua-nginx-module keeps it beside the TCP
-- cosocket too): the reads of a TCP socket object over a Python reader of
-- the STDIN records (cosocket/reading.py's BodyReader).  Over FastCGI the front
-- server owns the client connection, so there is no raw mode.
local reqsock = {
    receive = tcp.receive,
    receiveany = tcp.receiveany,
    receiveuntil = tcp.receiveuntil,
    settimeout = tcp.settimeout,
    settimeouts = tcp.settimeouts,
}
reqsock.__index = reqsock
local request = ext.current -- the request (never a timer)

ngx.req.socket = function(...)
    local nargs = select("#", ...)
    if nargs > 1 then
        error("expecting zero arguments, but got " .. nargs, 2)
    end
    local r = request()
    if not r then
        no_request()
    end
    if nargs == 1 and (...) then
        error("ngx.req.socket(true) is not available in fcgi-lua: over FastCGI the front "
              .. "server owns the client connection (no raw request socket)", 2)
    end
    local state = r.body_state
    if state == "discarded" then
        -- OpenResty's while nginx discards it ("no body" once it has: only
        -- for a body that came with the request head)
        return nil, "request body discarded"
    elseif state then
        return nil, "request body already exists"
    end
    local res = co_yield(IO, "req_socket", owner_of(r))
    if res.err then
        if res.err ~= "no body" then
            r.body_state = "failed"
        end
        return nil, res.err
    end
    r.body_state = "socket"
    local sock = setmetatable({ [CONN] = res.handle }, reqsock)
    req_of[sock] = r
    return sock
end

---------------------------------------------------------------- require

-- OpenResty names its libraries resty.X; Debian packages them as
-- nginx/X.lua under /usr/share/lua/5.x (lua-nginx-redis, -memcached,
-- -dns, -websocket, -cookie).  resty.X is an alias of nginx.X when no
-- real resty/X.lua exists: the standard searchers (and ngx/package.lua's
-- aliases) run first.
local DEBIAN_LUA = "/usr/share/lua/" .. (match(_VERSION, "%d+%.%d+") or "5.1") .. "/"

if not find(package.path, DEBIAN_LUA .. "?.lua", 1, true) then
    package.path = package.path .. ";" .. DEBIAN_LUA .. "?.lua;" .. DEBIAN_LUA .. "?/init.lua"
end

local function search_path(name)
    local file = gsub(name, "%.", "/")
    for template in gmatch(package.path, "[^;]+") do
        local path = gsub(template, "%?", file)
        local f = io_open(path, "rb")
        if f then
            f:close()
            return path
        end
    end
    return nil
end

local function debian_searcher(name)
    local rest = match(name, "^resty%.(.+)$")
    if not rest then
        return nil
    end
    local alias = "nginx." .. rest
    local path = search_path(alias)
    if not path then
        return "\n\tno Debian module '" .. alias .. "'"
    end
    return function() return require(alias) end, path
end

insert(package.searchers or package.loaders, debian_searcher)

return _M
