"""Which file a request runs: script resolution confined to the document root.

The front server names the script (SCRIPT_FILENAME, or DOCUMENT_ROOT +
SCRIPT_NAME; Apache's mod_proxy_fcgi prefixes SCRIPT_FILENAME with
``proxy:fcgi://HOST``, which is dropped).  We never trust that name: it
must stay inside ``root`` after symlinks are followed, contain no ``..``
segment or NUL byte, and carry an allowed extension.  This module only
looks at the file system; it never opens or runs a script.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Mapping, Sequence

# How long a resolved path is trusted without following its symlinks again,
# and how many are kept: a deployment that swaps a symlink is seen within a
# second; the cache cannot grow past a few hundred KB.
RESOLVE_CACHE_SECONDS = 1.0
RESOLVE_CACHE_SIZE = 4096

# Apache's mod_proxy_fcgi sends SCRIPT_FILENAME as
# "proxy:fcgi://localhost/srv/www/app.lua" (or "proxy:balancer://NAME/...")
# unless configured with "ProxyFCGIBackendType GENERIC": a quirk php-fpm
# strips too, so configs copied from PHP guides work unchanged.
APACHE_PROXY_PREFIX = re.compile(rb"proxy:(?:fcgi|balancer)://[^/]*(?=/)")


class ScriptRejected(Exception):
    """The request names no runnable script; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ScriptResolver:
    def __init__(self, root: str, extensions: Sequence[str]) -> None:
        self.root = os.path.realpath(root)
        self._root_prefix = self.root.rstrip("/") + "/"
        self.extensions = tuple(extensions)
        self._cache: dict[bytes, tuple[str, float]] = {}

    def resolve(self, params: Mapping[bytes, bytes]) -> str:
        """The real path of the script to run, or raise ScriptRejected."""
        raw = params.get(b"SCRIPT_FILENAME")
        if raw:
            cached = self._cache.get(raw)
            # Following symlinks costs an lstat per path component; a hot
            # script is re-checked at most once per RESOLVE_CACHE_SECONDS.
            if cached is not None and cached[1] > time.monotonic():
                return cached[0]
        real = self._resolve(raw, params)
        if raw:
            if len(self._cache) >= RESOLVE_CACHE_SIZE:
                self._cache.clear()
            self._cache[raw] = (real, time.monotonic() + RESOLVE_CACHE_SECONDS)
        return real

    def _resolve(self, raw: bytes | None, params: Mapping[bytes, bytes]) -> str:
        if not raw:
            script_name = params.get(b"SCRIPT_NAME")
            if not script_name:
                raise ScriptRejected(404, "no SCRIPT_FILENAME or SCRIPT_NAME param")
            document_root = params.get(b"DOCUMENT_ROOT") or self.root.encode()
            raw = document_root.rstrip(b"/") + b"/" + script_name.lstrip(b"/")
        elif prefix := APACHE_PROXY_PREFIX.match(raw):
            raw = raw[prefix.end() :]
        if b"\0" in raw:
            raise ScriptRejected(403, "NUL byte in script path")
        try:
            path = raw.decode("utf-8")
        except UnicodeDecodeError:
            path = raw.decode("latin-1")
        if ".." in path.split("/"):
            raise ScriptRejected(403, f"'..' in script path {path!r}")
        if not path.endswith(self.extensions):
            raise ScriptRejected(403, f"extension not allowed: {path!r}")
        real = os.path.realpath(path)
        if not real.startswith(self._root_prefix):
            if os.path.lexists(path):
                raise ScriptRejected(403, f"{path!r} is outside the document root")
            raise ScriptRejected(404, f"no such script {path!r}")
        if not real.endswith(self.extensions):
            raise ScriptRejected(403, f"{path!r} links to a file without an allowed extension")
        try:
            mode = os.stat(real).st_mode
        except OSError as exc:
            raise ScriptRejected(404, f"no such script {path!r}") from exc
        if not stat.S_ISREG(mode):
            raise ScriptRejected(404, f"{path!r} is not a regular file")
        return real
