-- The sandbox (config `sandbox = true`), applied once per VM.
--
-- Loaded by fcgi_lua/lua/engine.py after the prelude and its layers, which
-- keep private references to what they need (io.open for body files,
-- debug.traceback for error pages, ffi for resty.core), and before
-- isolation.lua seals the shared globals.  It changes the VM's shared
-- globals, so every request of the worker is sandboxed (docs/sandbox.md):
--
--   removed   os.execute, io.popen, os.exit, debug, package.loadlib,
--             string.dump, jit.* but its read-only fields, the C modules
--             that reach the file system (lfs, posix); ffi and
--             resty.core.base for scripts (modules on the package path
--             keep them)
--   confined  io.open, io.lines, io.input, io.output, os.remove,
--             os.rename, loadfile, dofile, require's Lua search: reads
--             under the document root and the package path, writes only
--             where configured (never where require looks), and the
--             request's own body files by name
--   text only load, loadstring, loadfile: no binary chunk, whether a
--             string or a reader function gives it
--   limited   collectgarbage: "count" and "step" only (stopping or
--             retuning the collector is the worker's business)
--
-- `allows_read(path)` and `allows_write(path)` are Python's checks
-- (limits.PathConfinement: exact files or directories, after realpath).

local allows_read, allows_write, extensions = ...

local type = type
local error = error
local tostring = tostring
local select = select
local concat = table.concat
local gsub = string.gsub
local byte = string.byte
local find = string.find
local io_open = io.open
local io_lines = io.lines
local io_input = io.input
local io_output = io.output
local os_remove = os.remove
local os_rename = os.rename
local load = load
local loadstring = loadstring or load
local collectgarbage = collectgarbage
local setfenv = setfenv
local current = extensions and extensions.current

local DENIED = "Permission denied (outside the sandbox)"

-- The running request's own body files: the spooled body and the
-- uploads, by the name ngx.req.get_body_file() and get_multipart() gave.
local function own_file(path)
    local r = current and current()
    if not r then
        return false
    end
    if r.body_file == path then
        return true
    end
    local done = r.multipart
    local files = done and done[1] and done[1].files
    if files then
        for i = 1, #files do
            if files[i].path == path then
                return true
            end
        end
    end
    return false
end

local function permitted(path, fname, write)
    if type(path) ~= "string" then
        error("bad argument #1 to '" .. fname .. "' (string expected, got " .. type(path) .. ")", 3)
    end
    if own_file(path) then
        return true
    end
    if write then
        return allows_write(path)
    end
    return allows_read(path)
end

local function outside(path)
    return nil, path .. ": " .. DENIED, 13
end

local function writes(mode)
    return type(mode) == "string" and find(mode, "[wa+]") ~= nil
end

os.execute = nil
os.exit = nil -- it would stop the worker, not the request
io.popen = nil
_G.debug = nil
package.loaded.debug = nil
package.loadlib = nil
string.dump = nil -- bytecode: only useful to load it back

function io.open(path, mode)
    if not permitted(path, "open", writes(mode)) then
        return outside(path)
    end
    return io_open(path, mode)
end

function io.lines(path, ...)
    if path ~= nil and not permitted(path, "lines", false) then
        error(path .. ": " .. DENIED, 2)
    end
    return io_lines(path, ...)
end

-- io.read, io.write and io.lines() go through the default files: these
-- are the only way to change them, so the checks here cover those too.
function io.input(file)
    if type(file) == "string" and not permitted(file, "input", false) then
        error(file .. ": " .. DENIED, 2)
    end
    return io_input(file)
end

function io.output(file)
    if type(file) == "string" and not permitted(file, "output", true) then
        error(file .. ": " .. DENIED, 2)
    end
    return io_output(file)
end

function os.remove(path)
    if not permitted(path, "remove", true) then
        return outside(path)
    end
    return os_remove(path)
end

function os.rename(from, to)
    if not permitted(from, "rename", true) then
        return outside(from)
    end
    if not permitted(to, "rename", true) then
        return outside(to)
    end
    return os_rename(from, to)
end

---------------------------------------------------------------- text chunks

-- Binary chunks can crash the VM or forge upvalues: text only, however
-- the chunk comes (a reader function's pieces are read first, so the
-- check sees what the loader would).
local function text_source(chunk)
    if type(chunk) == "function" then
        local parts, n = {}, 0
        while true do
            local piece = chunk()
            if piece == nil or piece == "" then
                break
            end
            if type(piece) ~= "string" then
                return nil, "reader function must return a string"
            end
            n = n + 1
            parts[n] = piece
        end
        chunk = concat(parts, "", 1, n)
    elseif type(chunk) ~= "string" then
        return nil, "bad argument #1 to 'load' (string expected, got " .. type(chunk) .. ")"
    end
    if byte(chunk, 1) == 27 then
        return nil, "binary chunks are not available in the sandbox"
    end
    return chunk
end

local function load_text(chunk, name, env)
    local src, err = text_source(chunk)
    if not src then
        return nil, err
    end
    if setfenv then -- 5.1 / LuaJIT
        local f
        f, err = loadstring(src, name)
        if f and env ~= nil then
            setfenv(f, env)
        end
        return f, err
    end
    if env == nil then
        return load(src, name, "t")
    end
    return load(src, name, "t", env)
end

_G.load = function(chunk, name, mode, env)
    if mode ~= nil and type(mode) == "string" and not find(mode, "t", 1, true) then
        return nil, "binary chunks are not available in the sandbox"
    end
    return load_text(chunk, name or (type(chunk) == "string" and chunk or "=(load)"), env)
end

if _G.loadstring then
    _G.loadstring = function(s, name)
        if type(s) ~= "string" then
            error("bad argument #1 to 'loadstring' (string expected, got " .. type(s) .. ")", 2)
        end
        return load_text(s, name or s)
    end
end

-- loadfile/dofile: inside the allowed directories, text only, the file
-- read once (no check-then-load race).  A chunk they load sees the
-- caller's globals, as load's (isolation.lua).
_G.loadfile = function(path, mode, env)
    if path == nil then
        return nil, "loadfile of stdin is not available in the sandbox"
    end
    if type(path) ~= "string" or not permitted(path, "loadfile", false) then
        return nil, tostring(path) .. ": " .. DENIED
    end
    local fh, err = io_open(path, "rb")
    if not fh then
        return nil, "cannot open " .. tostring(err)
    end
    local src = fh:read("*a") or ""
    fh:close()
    if byte(src, 1) == 35 then -- "#!": skipped as luaL_loadfile does, lines kept
        src = gsub(src, "^#[^\n]*", "", 1)
    end
    return _G.load(src, "@" .. path, mode, env)
end

_G.dofile = function(path)
    local f, err = _G.loadfile(path)
    if not f then
        error(err, 2)
    end
    return f()
end

---------------------------------------------------------------- collector

local GC_OPTIONS = { count = true, step = true, isrunning = true }

_G.collectgarbage = function(opt, ...)
    if opt == nil then
        opt = "collect"
    end
    if not GC_OPTIONS[opt] then
        error("collectgarbage(\"" .. tostring(opt) .. "\") is not available in the sandbox", 2)
    end
    return collectgarbage(opt, ...)
end

---------------------------------------------------------------- ffi, jit

-- ffi is every C function of the process, and a cdata pointer is raw
-- memory: no script gets either.  Modules on the package path (the
-- operator's, which no script can write) still load them, as they load C
-- modules from the cpath: resty.core, lua-resty-lrucache.  isolation.lua
-- hides these names from a script's require and package.loaded.
local HIDDEN = {
    ffi = true,
    ["jit.util"] = true,
    ["jit.profile"] = true,
    ["jit.opt"] = true,
    ["resty.core.base"] = true, -- get_string_buf & co. hand out cdata pointers
}
if extensions then
    extensions.hidden_modules = HIDDEN
end
if jit then
    -- jit.on would let compiled traces skip the instruction budget's
    -- hook, jit.util/jit.attach inspect the VM: only the facts remain.
    local facts = {
        version = jit.version,
        version_num = jit.version_num,
        os = jit.os,
        arch = jit.arch,
        status = jit.status,
    }
    _G.jit = facts
    package.loaded.jit = facts
end

---------------------------------------------------------------- require

-- require: Lua modules only from inside the allowed directories, whatever
-- a script does to package.path; C modules only from the configured
-- cpath, and not the ones that reach the file system around the checks.
local DENIED_C = { lfs = true, posix = true }
for name in pairs(DENIED_C) do
    package.loaded[name] = nil
    package.preload[name] = nil
end
for name in pairs(package.loaded) do
    if type(name) == "string" and find(name, "^posix[._]") then
        package.loaded[name] = nil
    end
end

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
            if permitted(path, "require", false) then
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
    return concat(tried)
end

local function pin_c(searcher)
    return function(name)
        if DENIED_C[name] or find(name, "^posix[._]") then
            return "\n\tmodule '" .. name .. "' is not available in the sandbox"
        end
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

return select("#", ...) > 0
