"""The VM side of fcgi_lua/limits.py: the instruction budget and the sandbox, loaded into Lua.

This module owns loading ``limits.lua`` (the count hook that enforces
``max_instructions``, and LuaJIT's soft ``lua_memory_limit``) and
``sandbox.lua`` (the shared globals stripped, file access confined by
``limits.PathConfinement``).  The limits themselves, their defaults and
the path policy are ``fcgi_lua.limits``'s.

What it must never do: decide a policy (which paths, which budget: the
engine passes them in) or run a request.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import Any

from fcgi_lua import limits
from fcgi_lua.lua.loader import load_chunk


def install_limits(lua: Any, max_instructions: int, soft_memory_limit: int) -> Any:
    """Load ``limits.lua`` into a fresh VM, before the prelude; returns its
    ``bind(context_fn)``.  ``soft_memory_limit`` (bytes, 0: none) is
    LuaJIT's lua_memory_limit, checked by the hook, at resumes and by the
    allocating builtins.  On LuaJIT this turns the JIT compiler off."""
    chunk = load_chunk(lua, "limits.lua")
    step = min(limits.HOOK_INTERVAL, max_instructions) if max_instructions else limits.HOOK_INTERVAL
    return chunk(max_instructions, step, soft_memory_limit / 1024)[b"bind"]


def install_sandbox(
    lua: Any,
    root: str,
    package_path: str,
    body_temp_dir: str = "",
    *,
    write_paths: Iterable[str] = (),
    private_paths: Iterable[str] = (),
    extensions: Any = None,
) -> None:
    """Load ``sandbox.lua``: the VM's shared globals lose os.execute,
    io.popen, debug, ffi...; a script reads files only under ``root`` and
    the directories of ``package_path`` (and its own request's body
    files), writes only under ``write_paths``, never under the package
    path, and never touches ``private_paths`` (fcgi-lua's own files: the
    shared-dict store, the metrics directory) nor the other requests'
    body files in ``body_temp_dir``.  ``extensions`` is ngx.lua's hook
    table (the running request's own body files)."""
    chunk = load_chunk(lua, "sandbox.lua")
    modules = limits.package_dirs(package_path)
    temps = {body_temp_dir or tempfile.gettempdir(), tempfile.gettempdir()}
    confinement = limits.PathConfinement(
        read=[root, *modules],
        write=write_paths,
        # A module plant: nothing written where require looks.  Body files
        # are the request's own (sandbox.lua lets those through by name).
        deny_write=[*modules, *limits.package_files(package_path)],
        deny=[*private_paths, *(os.path.join(t, limits.OWN_FILES) for t in temps)],
    )
    chunk(confinement.allows_read, confinement.allows_write, extensions)
