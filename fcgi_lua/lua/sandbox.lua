-- The sandbox (config `sandbox = true`), applied once per VM.
--
-- Loaded by fcgi_lua/limits.py after the prelude and its layers, which
-- keep private references to what they need (io.open for body files,
-- debug.traceback for error pages).  It changes the VM's shared globals,
-- so every request of the worker is sandboxed: no process spawning, no
-- debug library, no C loader, no binary chunks, and files only inside
-- the document root, the require path and fcgi-lua's own body files.
--
-- `allowed(path)` is Python's check (limits.PathConfinement): the path,
-- symlinks resolved, lies under one of the allowed directories.

local allowed = ...

local type = type
local error = error
local find = string.find
local gsub = string.gsub
local byte = string.byte
local io_open = io.open
local io_lines = io.lines
local os_remove = os.remove
local os_rename = os.rename
local load = load
local loadstring = loadstring or load
local loadfile = loadfile
local setfenv = setfenv

-- A file outside the allowed directories fails like a missing one.
local function confined(path, fname)
    if type(path) ~= "string" then
        error("bad argument #1 to '" .. fname .. "' (string expected, got " .. type(path) .. ")", 3)
    end
    if allowed(path) then
        return true
    end
    return false
end

local function outside(path)
    return nil, path .. ": Permission denied (outside the sandbox)", 13
end

os.execute = nil
os.exit = nil -- it would stop the worker, not the request
io.popen = nil
_G.debug = nil
package.loaded.debug = nil
package.loadlib = nil

function io.open(path, mode)
    if not confined(path, "open") then
        return outside(path)
    end
    return io_open(path, mode)
end

function io.lines(path, ...)
    if path ~= nil and not confined(path, "lines") then
        error(path .. ": Permission denied (outside the sandbox)", 2)
    end
    return io_lines(path, ...)
end

function os.remove(path)
    if not confined(path, "remove") then
        return outside(path)
    end
    return os_remove(path)
end

function os.rename(from, to)
    if not confined(from, "rename") then
        return outside(from)
    end
    if not confined(to, "rename") then
        return outside(to)
    end
    return os_rename(from, to)
end

-- Binary chunks can crash the VM: text only.
local function text_only(chunk)
    return type(chunk) ~= "string" or byte(chunk, 1) ~= 27
end

if setfenv then -- 5.1 / LuaJIT: load takes a function, loadstring a string
    _G.loadstring = function(s, name)
        if not text_only(s) then
            return nil, "binary chunks are not available in the sandbox"
        end
        return loadstring(s, name)
    end
    _G.load = function(chunk, name)
        if type(chunk) == "string" then
            return _G.loadstring(chunk, name)
        end
        local f, err = load(chunk, name)
        return f, err -- a reader function: LuaJIT's load refuses nothing, see docs
    end
else
    _G.load = function(chunk, name, mode, env)
        if mode ~= nil and mode ~= "t" then
            return nil, "binary chunks are not available in the sandbox"
        end
        if env == nil then
            return load(chunk, name, "t")
        end
        return load(chunk, name, "t", env)
    end
end

-- loadfile/dofile: inside the allowed directories, text only.  A chunk
-- they load sees the shared globals, as outside the sandbox.
_G.loadfile = function(path, ...)
    if path == nil or not confined(path, "loadfile") then
        return nil, tostring(path) .. ": Permission denied (outside the sandbox)"
    end
    local fh = io_open(path, "rb")
    if fh then
        local head = fh:read(1)
        fh:close()
        if head and byte(head) == 27 then
            return nil, "binary chunks are not available in the sandbox"
        end
    end
    return loadfile(path, ...)
end

_G.dofile = function(path)
    local f, err = _G.loadfile(path)
    if not f then
        error(err, 2)
    end
    return f()
end

-- require: Lua modules only from inside the allowed directories, whatever
-- a script does to package.path; C modules only from the configured cpath.
local pinned_path = package.path
local pinned_cpath = package.cpath
local searchers = package.searchers or package.loaders
local c_searchers = { searchers[3], searchers[4] }

local function search_lua(name)
    local file = gsub(name, "%.", "/")
    local tried = {}
    for template in string.gmatch(pinned_path, "[^;]+") do
        local path = gsub(template, "%?", file)
        local fh = io_open(path, "rb")
        if fh then
            fh:close()
            if confined(path, "require") then
                local f, err = _G.loadfile(path)
                if not f then
                    error("error loading module '" .. name .. "' from file '" .. path
                          .. "':\n\t" .. tostring(err), 3)
                end
                return f, path
            end
        end
        tried[#tried + 1] = "\n\tno file '" .. path .. "'"
    end
    return table.concat(tried)
end

local function pin_c(searcher)
    return function(name)
        package.cpath = pinned_cpath
        return searcher(name)
    end
end

searchers[2] = search_lua
for i = 1, 2 do
    if c_searchers[i] then
        searchers[i + 2] = pin_c(c_searchers[i])
    end
end

return find ~= nil
