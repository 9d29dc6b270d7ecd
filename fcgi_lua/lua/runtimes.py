"""The registry of Lua runtimes lupa ships, by name.

This module only maps a name ("luajit21", "lua52"...) to a fresh
``LuaRuntime``, made to look like LuaJIT to scripts (``compat.lua`` on PUC
Lua); it never runs a script.  The runtime is created in the worker, after
the fork, so each worker owns exactly one VM.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import sys
import sysconfig
from importlib import resources
from typing import Any

log = logging.getLogger("fcgi_lua.lua")

# LuaJIT 2.1, as in OpenResty: real FFI, jit.*, table.new, string.buffer,
# and Debian's Lua C modules for the 5.1 ABI, so OpenResty's library
# ecosystem runs unmodified.  The limits hold by other means on it
# (docs/runtimes.md).
DEFAULT_RUNTIME = "luajit21"

RUNTIMES: dict[str, str] = {
    "luajit21": "lupa.luajit21",
    "luajit20": "lupa.luajit20",
    "lua51": "lupa.lua51",
    "lua52": "lupa.lua52",
    "lua53": "lupa.lua53",
    "lua54": "lupa.lua54",
    "lua55": "lupa.lua55",
}


class UnknownRuntimeError(ValueError):
    """The configuration named a Lua runtime that lupa does not provide."""


def _deny_attribute(obj: object, name: object, is_setting: bool) -> object:
    # Python callables handed to Lua must be callable and nothing else:
    # attribute access (fn.__globals__ ...) would let a script reach Python.
    raise AttributeError("access to Python attributes is not allowed from Lua")


def new_runtime(name: str, max_memory: int = 0) -> Any:
    """A fresh ``LuaRuntime`` of the named flavour, locked down.

    Strings cross as bytes (``encoding=None``), multiple returns unpack,
    and the ``python`` bridge module lupa installs is removed.  A PUC Lua
    gets ``compat.lua``: what LuaJIT has and it lacks (``unpack``, ``bit``,
    /usr/share/lua/5.1 on package.path...), for OpenResty's libraries.
    ``max_memory`` (bytes, 0: none) caps what the VM may allocate: past it
    an allocation fails with "not enough memory" (lua_memory_limit).
    """
    try:
        module_name = RUNTIMES[name]
    except KeyError:
        known = ", ".join(sorted(RUNTIMES))
        raise UnknownRuntimeError(f"unknown Lua runtime {name!r} (known: {known})") from None
    try:
        module = _import_runtime(module_name)
    except ImportError as exc:
        raise UnknownRuntimeError(f"Lua runtime {name!r} is not available: {exc}") from exc
    runtime = module.LuaRuntime(
        encoding=None,
        unpack_returned_tuples=True,
        register_eval=False,
        register_builtins=False,
        attribute_filter=_deny_attribute,
        max_memory=max_memory or None,
    )
    runtime.execute(b"python = nil; package.loaded.python = nil")
    if not is_luajit(name):
        source = resources.files("fcgi_lua.lua").joinpath("compat.lua").read_bytes()
        runtime.execute(source, name=b"@compat.lua")
    if not c_modules_load(name):
        _refuse_c_modules(runtime, name)
    return runtime


# The runtime module whose symbols (lua_pushstring, luaL_checkstack...) are
# global in this process: the first one imported.  Lua C modules (cjson.so,
# lfs.so) are linked against no Lua library and resolve those symbols from
# the global namespace when require() dlopens them, so only that runtime
# can load them.
_global_runtime: str | None = None


def _import_runtime(module_name: str) -> Any:
    global _global_runtime
    if module_name in sys.modules:
        return sys.modules[module_name]
    first = _global_runtime is None
    if first:
        load_c_symbols()
    # lupa's runtime modules export the same unversioned lua_* names.  A
    # runtime loaded after the global one would have its own calls bound to
    # the global runtime's functions and crash on its first state:
    # RTLD_DEEPBIND makes each module bind to its own symbols first.
    mode = os.RTLD_NOW | os.RTLD_DEEPBIND | (os.RTLD_GLOBAL if first else 0)
    flags = sys.getdlopenflags()
    sys.setdlopenflags(mode)
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.setdlopenflags(flags)
    if first:
        _global_runtime = module_name
    return module


# What ffi.C sees under OpenResty besides libc: nginx links OpenSSL
# (lua-resty-string's resty.md5 calls MD5_Init, lua-resty-jwt EVP_*,
# lua-resty-hmac HMAC_*), and exports its own ngx_hex_dump / ngx_atoi
# (resty.string), built here from fcgi_lua/_ngxsyms.c.  Loaded global
# before any runtime, so every runtime's ffi.C finds them.  OpenSSL by
# soname, newest first, as lua-resty-openssl looks for it: the copy
# Python's own hashlib and ssl already mapped is the one dlopen returns.
C_LIBRARIES = {
    "libcrypto": ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so"),
    "libssl": ("libssl.so.3", "libssl.so.1.1", "libssl.so"),
}
_c_symbols_missing: list[str] | None = None  # None: not tried yet


def load_c_symbols() -> list[str]:
    """Make OpenSSL's libcrypto/libssl and fcgi-lua's nginx helpers global
    (once per process); returns what could not be loaded, each with why."""
    global _c_symbols_missing
    if _c_symbols_missing is not None:
        return list(_c_symbols_missing)
    missing = _c_symbols_missing = []
    for lib, sonames in C_LIBRARIES.items():
        for soname in sonames:
            try:
                ctypes.CDLL(soname, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
                break
            except OSError:
                continue
        else:
            missing.append(f"{lib} (none of {', '.join(sonames)} loads)")
    flags = sys.getdlopenflags()
    sys.setdlopenflags(os.RTLD_NOW | os.RTLD_GLOBAL)
    try:
        importlib.import_module("fcgi_lua._ngxsyms")
    except ImportError as exc:
        missing.append(f"ngx_hex_dump, ngx_atoi (fcgi_lua._ngxsyms is not built: {exc})")
    finally:
        sys.setdlopenflags(flags)
    for what in missing:
        log.warning("ffi.C will lack %s", what)
    return list(missing)


def c_modules_load(name: str) -> bool:
    """Whether Lua C modules can load into this runtime: only into the one
    runtime whose symbols are global in the process (the first used)."""
    return _global_runtime == RUNTIMES.get(name)


def _abi_dir(name: str) -> str:
    abi = "5.1" if is_luajit(name) else f"{name[3]}.{name[4]}"
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    lib = f"/usr/lib/{multiarch}" if multiarch else "/usr/lib"
    return f"{lib}/lua/{abi}/"


def c_module_dir(name: str) -> str:
    """Where Debian installs Lua C modules for this runtime's ABI
    (/usr/lib/x86_64-linux-gnu/lua/5.1/ for LuaJIT), or "" when C modules
    cannot load into it."""
    return _abi_dir(name) if c_modules_load(name) else ""


# In a runtime that is not the global one, a C module would call the
# global runtime's lua_* with this runtime's state and crash the process:
# require of one fails with an error that says so, as package.loadlib does.
_REFUSE_C_MODULES = b"""
local runtime, owner, abi_dir = ...
local gsub, gmatch, find, io_open = string.gsub, string.gmatch, string.find, io.open
local why = "Lua C modules load only into the first Lua runtime this process"
    .. " created (" .. owner .. "), not into " .. runtime
local function c_file(name)
    local cpath = package.cpath .. ";" .. abi_dir .. "?.so"
    local file, root = gsub(name, "%.", "/"), gsub(name, "%..*", "")
    for template in gmatch(cpath, "[^;]+") do
        for _, f in ipairs({ file, root }) do
            local path = gsub(template, "%?", f)
            local fh = io_open(path, "rb")
            if fh then
                fh:close()
                return path
            end
        end
    end
end
local function refuse(name)
    local path = c_file(name)
    if path then
        error("cannot load C module '" .. name .. "' (" .. path .. "): " .. why, 0)
    end
    return "\\n\\tno C module for '" .. name .. "' (" .. why .. ")"
end
local searchers = package.searchers or package.loaders
searchers[3] = refuse
searchers[4] = function(name) return "" end
package.loadlib = function(path) return nil, path .. ": " .. why, "open" end
"""


def _refuse_c_modules(runtime: Any, name: str) -> None:
    owner = next((k for k, v in RUNTIMES.items() if v == _global_runtime), "none")
    refuse = runtime.execute(b"return function(...) " + _REFUSE_C_MODULES + b" end")
    refuse(name.encode(), owner.encode(), _abi_dir(name).encode())


def is_luajit(name: str) -> bool:
    """LuaJIT: compiled traces ignore hooks, and no memory limit survives."""
    return name.startswith("luajit")
