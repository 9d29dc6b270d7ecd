"""The registry of Lua runtimes lupa ships, by name.

This module only maps a name ("luajit21", "lua52"...) to a fresh
``LuaRuntime``, made to look like LuaJIT to scripts (``compat.lua`` on PUC
Lua); it never runs a script.  The runtime is created in the worker, after
the fork, so each worker owns exactly one VM.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import sysconfig
from importlib import resources
from typing import Any

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
    return runtime


# The runtime module whose symbols (lua_pushstring, luaL_checkstack...) are
# global in this process: the first one a VM is made of.  Lua C modules
# (cjson.so, lfs.so) are linked against no Lua library and resolve those
# symbols from the global namespace when require() dlopens them.  Only one
# runtime can be global, and a runtime module loaded after it would bind
# its own calls to the global one's functions (ELF interposition) and
# crash: so every runtime lupa ships is loaded first (RTLD_NOW binds each
# to itself for good), then the chosen one is promoted to global.  A
# worker uses one runtime; only tests mix them in one process.
_global_runtime: str | None = None


def _import_runtime(module_name: str) -> Any:
    global _global_runtime
    module = importlib.import_module(module_name)
    if _global_runtime is None:
        for other in RUNTIMES.values():
            with contextlib.suppress(ImportError):
                importlib.import_module(other)
        ctypes.CDLL(module.__file__, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
        _global_runtime = module_name
    return module


def c_modules_load(name: str) -> bool:
    """Whether Lua C modules can load into this runtime: only into the one
    runtime whose symbols are global in the process (the first used)."""
    return _global_runtime == RUNTIMES.get(name)


def c_module_dir(name: str) -> str:
    """Where Debian installs Lua C modules for this runtime's ABI
    (/usr/lib/x86_64-linux-gnu/lua/5.1/ for LuaJIT), or "" when C modules
    cannot load into it."""
    if not c_modules_load(name):
        return ""
    abi = "5.1" if is_luajit(name) else f"{name[3]}.{name[4]}"
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    lib = f"/usr/lib/{multiarch}" if multiarch else "/usr/lib"
    return f"{lib}/lua/{abi}/"


def is_luajit(name: str) -> bool:
    """LuaJIT: compiled traces ignore hooks, and no memory limit survives."""
    return name.startswith("luajit")
