"""The one way fcgi-lua's own Lua files are compiled into a VM.

This module owns ``load_chunk``: a file of this package (``ngx.lua``,
``socket.lua``, ``limits.lua``, ngx.lua's API areas ``ngx/log.lua`` ...)
read from the package's resources and compiled in the VM under its own
name (``@ngx.lua``, ``@ngx/log.lua``, so that tracebacks and error
messages name it), with the same call on every runtime
(``loadstring`` on 5.1 and LuaJIT, ``load`` on 5.2 and later).

What it must never do: run the chunk (each caller runs it with its own
arguments), or load a script of the user's (those go through the code
cache, ``codecache.py``).
"""

from __future__ import annotations

from importlib import resources
from typing import Any


def load_chunk(lua: Any, filename: str) -> Any:
    """``filename`` of fcgi_lua.lua compiled in ``lua``: the chunk, a Lua
    function; RuntimeError naming the file if it does not compile."""
    source = resources.files("fcgi_lua.lua").joinpath(filename).read_bytes()
    loaded = lua.eval(b"loadstring or load")(source, b"@" + filename.encode())
    chunk, err = loaded if isinstance(loaded, tuple) else (loaded, None)
    if chunk is None:
        raise RuntimeError(f"cannot load {filename}: {err!r}")
    return chunk
