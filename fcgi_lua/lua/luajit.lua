-- The table.* modules of OpenResty's LuaJIT branch, where the runtime
-- lacks them: `require "table.isempty"`, "table.isarray", "table.nkeys",
-- "table.clone" (upstream LuaJIT, which lupa builds, has none of them),
-- and on the PUC runtimes also "table.new" and "table.clear" (LuaJIT 2.1
-- has both).  lua-resty-core's base, lrucache, mlcache, tablepool and
-- most of the modern ecosystem require them.
--
-- Loaded once per VM by fcgi_lua/lua/engine.py.  Each is a preload, as in
-- OpenResty; what the runtime preloads itself wins, and nothing is added
-- to the `table` global.

local next = next
local pairs = pairs
local type = type
local floor = math.floor
local huge = math.huge
local error = error

local preload = package.preload

local function check_table(t, name)
    if type(t) ~= "table" then
        error("bad argument #1 to '" .. name .. "' (table expected, got " .. type(t) .. ")", 3)
    end
end

local modules = {}

-- table.new(narr, nrec): the sizes are hints; a PUC table grows as needed.
function modules.new()
    return function(narr, nrec)
        return {}
    end
end

function modules.clear()
    return function(t)
        check_table(t, "clear")
        for k in next, t do
            t[k] = nil
        end
    end
end

function modules.isempty()
    return function(t)
        check_table(t, "isempty")
        return next(t) == nil
    end
end

-- OpenResty's: true when every key is an integral number (holes and
-- index 0 allowed, as LuaJIT keeps them in the array part); the empty
-- table is an array.
function modules.isarray()
    return function(t)
        check_table(t, "isarray")
        for k in next, t do
            if type(k) ~= "number" or k ~= floor(k) or k == huge or k == -huge then
                return false
            end
        end
        return true
    end
end

function modules.nkeys()
    return function(t)
        check_table(t, "nkeys")
        local n = 0
        for _ in next, t do
            n = n + 1
        end
        return n
    end
end

-- A shallow copy; the metatable is not copied (as OpenResty's).
function modules.clone()
    return function(t)
        check_table(t, "clone")
        local copy = {}
        for k, v in next, t do
            copy[k] = v
        end
        return copy
    end
end

-- LuaJIT registers its own (table.new, table.clear) in package.preload,
-- as OpenResty's branch does all six: those win.
for name, loader in pairs(modules) do
    local full = "table." .. name
    if not preload[full] and not package.loaded[full] then
        preload[full] = loader
    end
end
