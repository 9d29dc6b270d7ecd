-- require: Debian's module directories and OpenResty's module names.
-- Loaded by ngx.lua (its AREAS list) as chunk(ngx, core).

local ngx, core = ...

local helpers = core.helpers
local find = string.find
local match = string.match

-- Debian installs pure-Lua modules (lua-nginx-cookie, lua-resty-*) under
-- /usr/share/lua/5.x, which lupa's built-in package.path lacks.
do
    local v = match(_VERSION, "%d+%.%d+") or "5.1"
    local dir = "/usr/share/lua/" .. v .. "/"
    if not find(package.path, dir .. "?.lua", 1, true) then
        package.path = package.path .. ";" .. dir .. "?.lua;" .. dir .. "?/init.lua"
    end
    -- Debian's Lua C modules (lua-cjson, lua-lpeg, lua-filesystem...) for
    -- this runtime's ABI (5.1 for LuaJIT); empty when C modules cannot
    -- load into this VM (runtimes.py: only the process's first runtime).
    local cdir = helpers.c_module_dir or ""
    if cdir ~= "" and not find(package.cpath, cdir .. "?.so", 1, true) then
        package.cpath = package.cpath .. ";" .. cdir .. "?.so"
    end
    -- OpenResty's names for modules Debian packages under another name;
    -- tried last, so a real resty.cookie on the path wins.
    local ALIASES = { ["resty.cookie"] = "nginx.cookie" }
    local searchers = package.searchers or package.loaders
    searchers[#searchers + 1] = function(name)
        local alias = ALIASES[name]
        if not alias then
            return "\n\tno alias for '" .. name .. "'"
        end
        return function() return require(alias) end
    end
end
