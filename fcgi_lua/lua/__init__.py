"""The Lua side of fcgi-lua: one VM per worker, one coroutine per request.

``LuaEngine(runtime=..., recompile=..., debug=..., log_to_stderr=...)`` is
created in the worker after the fork; ``await engine.run(request, sink)``
runs one request.  The ngx API itself is written in Lua (``ngx.lua``).
"""

from fcgi_lua.lua.engine import (
    COMMANDS,
    DEFAULT_CONTENT_TYPE,
    CodeCache,
    LuaCompileError,
    LuaEngine,
    LuaInitError,
    LuaRequest,
    OutputSink,
)
from fcgi_lua.lua.runtimes import DEFAULT_RUNTIME, RUNTIMES, UnknownRuntimeError

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
