"""Compiled scripts of one VM, by path, and when to compile them again.

Owns the recompile policies (config.py's ``recompile`` key takes its
values from here).  It must never run a script: the engine does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fcgi_lua.lua import failures

Recompile = Literal["mtime", "always", "never"]
RECOMPILE_POLICIES: tuple[Recompile, ...] = ("mtime", "always", "never")
DEFAULT_RECOMPILE: Recompile = "mtime"
# recompile = "mtime": a script's mtime is looked at (one stat) at most
# this often, like PHP's opcache.revalidate_freq
DEFAULT_RECOMPILE_INTERVAL = 1.0


class LuaCompileError(Exception):
    """A script could not be loaded: a syntax error, or an unreadable file."""


@dataclass(slots=True)
class _CachedChunk:
    mtime_ns: int
    size: int
    factory: Any
    checked: float  # time.monotonic() of the last stat that found it unchanged


class CodeCache:
    """Compiled scripts of one VM, by path.

    ``mtime``: recompile when the file's mtime or size changes, looked at
    (one stat) at most once per ``interval`` seconds per script, like
    PHP's opcache.revalidate_freq (0: on every request); ``always``: compile
    on every request (lua_code_cache off); ``never``: compile once and never
    look at the file again.
    """

    def __init__(
        self,
        compile_chunk: Callable[[bytes, bytes], Any],
        recompile: Recompile,
        interval: float = 0.0,
    ) -> None:
        if recompile not in RECOMPILE_POLICIES:
            raise ValueError(f"recompile must be mtime, always or never, not {recompile!r}")
        self._compile_chunk = compile_chunk
        self._recompile = recompile
        self._interval = interval
        self._chunks: dict[str, _CachedChunk] = {}
        self.compilations = 0

    def get(self, path: str) -> Any:
        chunk = self._chunks.get(path)
        now = time.monotonic()
        if chunk is not None and (
            self._recompile == "never" or now - chunk.checked < self._interval
        ):
            return chunk.factory
        try:
            st = os.stat(path)
            if (
                chunk is not None
                and self._recompile == "mtime"
                and chunk.mtime_ns == st.st_mtime_ns
                and chunk.size == st.st_size
            ):
                chunk.checked = now
                return chunk.factory
            with open(path, "rb") as f:
                source = f.read()
        except OSError as exc:
            reason = f"cannot open {path}: {exc.strerror}"
            raise LuaCompileError(failures.load_error(path, reason, syntax=False)) from exc
        result = self._compile_chunk(source, b"@" + os.fsencode(path))
        factory, err = result if isinstance(result, tuple) else (result, None)
        self.compilations += 1
        if factory is None:
            message = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
            message = failures.expand_short_src(message, path)
            raise LuaCompileError(failures.load_error(path, message, syntax=True))
        if self._recompile != "always":
            self._chunks[path] = _CachedChunk(st.st_mtime_ns, st.st_size, factory, now)
        return factory
