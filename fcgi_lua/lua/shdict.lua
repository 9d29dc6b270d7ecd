-- ngx.shared.DICT: the zones declared in the config (`shared_dicts`),
-- shared by every worker of the host, with lua-nginx-module 0.10.23's
-- methods: lua-resty-core 0.1.25's argument checks for the ones it
-- implements (get, get_stale, set, safe_set, add, safe_add, replace,
-- delete, incr, ttl, expire, flush_all, capacity, free_space) and the C
-- module's for the others (lpush, rpush, lpop, rpop, llen, flush_expired,
-- get_keys).
--
-- Loaded once per VM, after ngx.lua, by fcgi_lua/shdict.py, which passes
-- the store's functions (C) and the zone ids by name.  A dict object is
-- `{id}` with the shared metatable, as nginx's is `{zone lightuserdata}`;
-- Lua holds no Python object but C's functions.  Each method is one call
-- to Python, which returns exactly what the method returns.

local C, zones = ...

local type = type
local tostring = tostring
local tonumber = tonumber
local error = error
local select = select
local rawget = rawget
local setmetatable = setmetatable
-- the raw one: isolation.lua hides the zones' metatable (__metatable)
local getmetatable = debug.getmetatable

local py_get = C.get
local py_get_stale = C.get_stale
local py_store = C.store
local py_incr = C.incr
local py_push = C.push
local py_pop = C.pop
local py_llen = C.llen
local py_ttl = C.ttl
local py_expire = C.expire
local py_flush_all = C.flush_all
local py_flush_expired = C.flush_expired
local py_get_keys = C.get_keys
local py_capacity = C.capacity
local py_free_space = C.free_space
-- nginx's limit is 65535 bytes; the store's may be lower (shdict.py)
local MAX_KEY_LEN = C.max_key_len or 65535
-- the zones' metatable (below): a table without it is no zone
local mt

-- lua-resty-core's check_zone
local function check_zone(zone)
    if not zone or type(zone) ~= "table" then
        error("bad \"zone\" argument", 3)
    end
    local id = rawget(zone, 1)
    if type(id) ~= "number" or getmetatable(zone) ~= mt then
        error("bad \"zone\" argument", 3)
    end
    return id
end

-- the C module's zone check (lpush ... get_keys); its luaL_error messages
-- carry no position (level 0)
local function check_zone_c(zone, name)
    if type(zone) ~= "table" then
        error("bad argument #1 to '" .. name .. "' (table expected, got "
              .. type(zone) .. ")", 0)
    end
    local id = rawget(zone, 1)
    if type(id) ~= "number" or getmetatable(zone) ~= mt then
        error("bad \"zone\" argument", 0)
    end
    return id
end

-- the C module's luaL_checklstring key
local function check_key_c(key, name)
    local t = type(key)
    if t == "number" then
        return tostring(key)
    end
    if t ~= "string" then
        error("bad argument #1 to '" .. name .. "' (string expected, got "
              .. t .. ")", 0)
    end
    return key
end

local function key_checks(key)
    if key == nil then
        return nil, "nil key"
    end
    if type(key) ~= "string" then
        key = tostring(key)
    end
    local key_len = #key
    if key_len == 0 then
        return nil, "empty key"
    end
    if key_len > MAX_KEY_LEN then
        return nil, "key too long"
    end
    return key
end

local function shdict_store(zone, op, key, value, exptime, flags)
    local id = check_zone(zone)
    if not exptime then
        exptime = 0
    elseif exptime < 0 then
        error('bad "exptime" argument', 3)
    end
    if not flags then
        flags = 0
    elseif type(flags) ~= "number" then
        flags = tonumber(flags)
        if not flags then
            error("cannot convert '" .. type(flags) .. "' to 'int'", 3)
        end
    end
    local err
    key, err = key_checks(key)
    if not key then
        return nil, err
    end
    local t = type(value)
    if t ~= "string" and t ~= "number" and t ~= "boolean" and value ~= nil then
        return nil, "bad value type"
    end
    return py_store(id, op, key, value, exptime, flags)
end

local function shdict_set(zone, key, value, exptime, flags)
    return shdict_store(zone, 0, key, value, exptime, flags)
end

local function shdict_safe_set(zone, key, value, exptime, flags)
    return shdict_store(zone, 0x0004, key, value, exptime, flags)
end

local function shdict_add(zone, key, value, exptime, flags)
    return shdict_store(zone, 0x0001, key, value, exptime, flags)
end

local function shdict_safe_add(zone, key, value, exptime, flags)
    return shdict_store(zone, 0x0005, key, value, exptime, flags)
end

local function shdict_replace(zone, key, value, exptime, flags)
    return shdict_store(zone, 0x0002, key, value, exptime, flags)
end

local function shdict_delete(zone, key)
    return shdict_store(zone, 0, key, nil)
end

local function shdict_get(zone, key)
    local id = check_zone(zone)
    local err
    key, err = key_checks(key)
    if not key then
        return nil, err
    end
    return py_get(id, key)
end

local function shdict_get_stale(zone, key)
    local id = check_zone(zone)
    local err
    key, err = key_checks(key)
    if not key then
        return nil, err
    end
    return py_get_stale(id, key)
end

local function shdict_incr(zone, key, value, init, init_ttl)
    local id = check_zone(zone)
    local err
    key, err = key_checks(key)
    if not key then
        return nil, err
    end
    if type(value) ~= "number" then
        local converted = tonumber(value)
        if not converted then
            -- what the FFI says when it gets a non-number
            error("cannot convert '" .. type(value) .. "' to 'double'", 2)
        end
        value = converted
    end
    if init then
        local typ = type(init)
        if typ ~= "number" then
            init = tonumber(init)
            if not init then
                error("bad init arg: number expected, got " .. typ, 2)
            end
        end
    else
        init = nil
    end
    if init_ttl ~= nil then
        local typ = type(init_ttl)
        if typ ~= "number" then
            init_ttl = tonumber(init_ttl)
            if not init_ttl then
                error("bad init_ttl arg: number expected, got " .. typ, 2)
            end
        end
        if init_ttl < 0 then
            error('bad "init_ttl" argument', 2)
        end
        if not init then
            error('must provide "init" when providing "init_ttl"', 2)
        end
    else
        init_ttl = 0
    end
    return py_incr(id, key, value, init, init_ttl)
end

local function shdict_ttl(zone, key)
    local id = check_zone(zone)
    local err
    key, err = key_checks(key)
    if not key then
        return nil, err
    end
    return py_ttl(id, key)
end

local function shdict_expire(zone, key, exptime)
    local id = check_zone(zone)
    if not exptime then
        error('bad "exptime" argument', 2)
    end
    local err
    key, err = key_checks(key)
    if not key then
        return nil, err
    end
    return py_expire(id, key, exptime)
end

local function shdict_flush_all(zone)
    py_flush_all(check_zone(zone))
end

local function shdict_capacity(zone)
    return py_capacity(check_zone(zone))
end

local function shdict_free_space(zone)
    return py_free_space(check_zone(zone))
end

-- The C module's list methods, flush_expired and get_keys.

local function c_key(key, name)
    if key == nil then
        return nil, "nil key"
    end
    key = check_key_c(key, name)
    local key_len = #key
    if key_len == 0 then
        return nil, "empty key"
    end
    if key_len > MAX_KEY_LEN then
        return nil, "key too long"
    end
    return key
end

local function push(name, left, ...)
    local n = select("#", ...)
    if n ~= 3 then
        error("expecting 3 arguments, but only seen " .. n, 0)
    end
    local zone, key, value = ...
    local id = check_zone_c(zone, name)
    local err
    key, err = c_key(key, name)
    if not key then
        return nil, err
    end
    local t = type(value)
    if t ~= "string" and t ~= "number" then
        return nil, "bad value type"
    end
    return py_push(id, key, value, left)
end

local function pop(name, left, ...)
    local n = select("#", ...)
    if n ~= 2 then
        error("expecting 2 arguments, but only seen " .. n, 0)
    end
    local zone, key = ...
    local id = check_zone_c(zone, name)
    local err
    key, err = c_key(key, name)
    if not key then
        return nil, err
    end
    if left == nil then
        return py_llen(id, key)
    end
    return py_pop(id, key, left)
end

local function check_count(name, ...)
    local n = select("#", ...)
    if n ~= 1 and n ~= 2 then
        error("expecting 1 or 2 argument(s), but saw " .. n, 0)
    end
    local zone, count = ...
    local id = check_zone_c(zone, name)
    if n == 2 then
        local converted = tonumber(count)
        if not converted then
            error("bad argument #1 to '" .. name .. "' (number expected, got "
                  .. type(count) .. ")", 0)
        end
        count = converted
    end
    return id, count
end

mt = {
    get = shdict_get,
    get_stale = shdict_get_stale,
    set = shdict_set,
    safe_set = shdict_safe_set,
    add = shdict_add,
    safe_add = shdict_safe_add,
    replace = shdict_replace,
    delete = shdict_delete,
    incr = shdict_incr,
    ttl = shdict_ttl,
    expire = shdict_expire,
    flush_all = shdict_flush_all,
    capacity = shdict_capacity,
    free_space = shdict_free_space,
    lpush = function(...) return push("lpush", true, ...) end,
    rpush = function(...) return push("rpush", false, ...) end,
    lpop = function(...) return pop("lpop", true, ...) end,
    rpop = function(...) return pop("rpop", false, ...) end,
    llen = function(...) return pop("llen", nil, ...) end,
    flush_expired = function(...)
        local id, count = check_count("flush_expired", ...)
        return py_flush_expired(id, count or 0)
    end,
    get_keys = function(...)
        local id, count = check_count("get_keys", ...)
        return py_get_keys(id, count or 1024)
    end,
}
mt.__index = mt

-- Every zone exists from the start, as in nginx (so pairs(ngx.shared) and
-- lua-resty-core's next(ngx.shared) see them).
local shared = {}
for name, id in pairs(zones) do
    shared[name] = setmetatable({ id }, mt)
end
ngx.shared = shared
