"""The Lua side of fcgi-lua: one VM per worker, one coroutine per request.

``LuaEngine.from_config(config)`` is created in the worker after the fork;
``engine.start(request, sink)`` runs one request up to its first wait
(``await engine.run(request, sink)``: to its end).  The ngx API itself is
written in Lua (``ngx.lua``).

The engine's names are imported when first used, so that the light
modules of this package (``runtimes``, ``scheduler``, ``codecache``),
whose defaults and registries config.py imports, do not load the engine
and its Python dependencies with them (``fcgi-lua --help`` stays fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fcgi_lua.lua.runtimes import DEFAULT_RUNTIME, RUNTIMES, UnknownRuntimeError

if TYPE_CHECKING:
    from fcgi_lua.lua.codecache import CodeCache, LuaCompileError
    from fcgi_lua.lua.commands import COMMANDS
    from fcgi_lua.lua.engine import (
        DEFAULT_CONTENT_TYPE,
        LuaEngine,
        LuaInitError,
        LuaRequest,
        OutputSink,
    )

_LAZY = {
    "COMMANDS": "fcgi_lua.lua.commands",
    "DEFAULT_CONTENT_TYPE": "fcgi_lua.lua.engine",
    "LuaEngine": "fcgi_lua.lua.engine",
    "LuaInitError": "fcgi_lua.lua.engine",
    "LuaRequest": "fcgi_lua.lua.engine",
    "OutputSink": "fcgi_lua.lua.engine",
    "CodeCache": "fcgi_lua.lua.codecache",
    "LuaCompileError": "fcgi_lua.lua.codecache",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "COMMANDS",
    "DEFAULT_CONTENT_TYPE",
    "DEFAULT_RUNTIME",
    "RUNTIMES",
    "CodeCache",
    "LuaCompileError",
    "LuaEngine",
    "LuaInitError",
    "LuaRequest",
    "OutputSink",
    "UnknownRuntimeError",
]
