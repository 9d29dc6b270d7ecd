"""Limits that protect a worker from its scripts, and the sandbox switch.

This module owns the defaults (each with its reason), the sandbox's path
policy (``PathConfinement``), the worker's RSS check and the check of a
TCP peer against ``allowed_clients``.  Loading the Lua side of the
instruction budget (``lua/limits.lua``) and of the sandbox
(``lua/sandbox.lua``) into a VM is ``fcgi_lua.lua.guards``'s.  It never
runs a request: the engine and the server call in here.
docs/lua-api.md ("Limits and sandbox") and docs/runtimes.md say what each
runtime guarantees.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import os
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("fcgi_lua.limits")

# Lua VM instructions one request (or one run of a timer) may execute, all
# its coroutines and resumes together.  PUC Lua (5.2, the default, as
# 5.4/5.5) runs 300 to 430 M simple instructions per second on the CI
# container, so 100 M is a quarter to a third of a second of pure Lua:
# some 100x what a heavy page (templating a large table, a JSON encode)
# needs, and the longest a runaway loop stalls the other requests of its
# worker.  0 turns the budget off.
DEFAULT_MAX_INSTRUCTIONS = 100_000_000

# The count hook runs every this many instructions.  Its cost is one Lua
# call per interval (on lua52 the budget costs nothing measurable; 5.4's
# hook machinery itself doubles CPU-bound time: docs/runtimes.md), and the
# budget is exact to within one interval.
HOOK_INTERVAL = 10_000

# Wall-clock seconds a request may run, waits included (a cosocket that
# never answers, a sleep in a loop).  nginx gives up on the response after
# fastcgi_read_timeout (60 s) of silence; ending the request at the same
# point frees its coroutine and sockets instead of working for nobody.
DEFAULT_REQUEST_TIMEOUT = 60.0

# A resume (the Lua code a request runs between two yields) longer than this
# is logged: it held up every other request of the worker that long.  A
# script's resume normally takes microseconds; 100 ms is a stall users see,
# and well above what a busy machine's scheduling adds.  0 disables it.
DEFAULT_SLOW_RESUME_WARNING = 0.1

# Bytes of Lua memory one worker's VM may hold (0: unlimited).  The VM
# needs about 0.6 MB for the API, a request a few KB to a few hundred KB;
# 256 MB leaves room for max_reqs (1024) requests of 100 KB each in flight
# plus large shared data built by init scripts, and bounds the Lua heap of
# the whole responder to workers x 256 MB when a script allocates without
# end.  PUC Lua's allocator enforces it; on LuaJIT, whose allocator cannot
# fail safely, it is the soft limit of lua/limits.lua (docs/runtimes.md).
DEFAULT_LUA_MEMORY_LIMIT = 256 * 1024 * 1024

# Bytes of resident memory (RSS) one worker process may reach before the
# master kills and replaces it (0: no check): the hard backstop behind the
# Lua memory limit, for what no Lua-side check sees (a LuaJIT string built
# by `..` in a few instructions, a leak in a C module or in Python).  A
# worker's baseline is 40 to 60 MB (Python, uvloop, the VM); 1 GiB is that
# plus four full 256 MB Lua heaps, so a VM at its limit that also holds a
# large body or LuaJIT's kept string buffer (up to the size of the last
# big string) never trips it, while a runaway still ends before it takes
# a small host's memory.  Checked by the master every MEMORY_CHECK_INTERVAL
# from /proc, so it also works while the worker is stuck in one C call.
DEFAULT_WORKER_MEMORY_LIMIT = 1024 * 1024 * 1024

# Seconds between the master's RSS checks: /proc/<pid>/statm is one small
# read per worker; at 0.25 s a worker allocating at memcpy speed (a few
# GB/s) overshoots the limit by about a second's worth of its growth at worst.
MEMORY_CHECK_INTERVAL = 0.25

# After a memory kill the VM is collected; if its live data still fills
# more than this share of the limit (the script stored what it allocated
# in shared globals or a module), the worker is recycled.
MEMORY_RECYCLE_SHARE = 0.8

# A VM fuller than this share of its limit is collected (cap lifted)
# before a request starts and after any Lua failure: lupa allocates
# outside Lua's protected mode, where running out would abort the worker.
MEMORY_FULL_SHARE = 0.9


def resident_bytes(pid: int) -> int | None:
    """A process's resident set size, from /proc (Linux); None when it
    cannot be read (gone, or no /proc)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            fields = f.read().split()
    except OSError:
        return None
    return int(fields[1]) * PAGE_SIZE


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def private_paths(shared_dicts: Any = None) -> list[str]:
    """fcgi-lua's own files no sandboxed script may open wherever they
    are: the shared-dict store (an LMDB file a script could corrupt) and
    the metrics directory (prometheus-client's, named by its variable)."""
    paths = [os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")]
    if shared_dicts is not None:
        paths.append(shared_dicts.path)
    return [p for p in paths if p]


# fcgi-lua's own files in the temp dirs: every request's spooled bodies
# and uploads (fcgi_lua/body.py), the default shared-dict store
# (shdict.py) and metrics directory (metrics.py).  No sandboxed script
# opens one by name, except its own request's body files (sandbox.lua
# lets those through before asking Python).
OWN_FILES = "fcgi-lua-*"


class PathConfinement:
    """Called from Lua with a path: may a sandboxed script read it (or
    write it)?  Every entry is an exact file or a directory, compared
    after ``realpath`` on both sides, never as a string prefix
    (``/srv/www`` does not allow ``/srv/www-private``).  A file that does
    not exist yet is judged by where it would be.  ``deny`` wins over
    everything (an fnmatch pattern is allowed in its last part), then
    ``deny_write`` over ``write``; writing implies reading."""

    def __init__(
        self,
        read: Iterable[str] = (),
        write: Iterable[str] = (),
        deny: Iterable[str] = (),
        deny_write: Iterable[str] = (),
    ) -> None:
        self.read = _real_entries(read)
        self.write = _real_entries(write)
        self.deny = _real_entries(deny)
        self.deny_write = _real_entries(deny_write)

    def allows_read(self, path: bytes | str) -> bool:
        real = _real(path)
        if real is None or _matches(real, self.deny):
            return False
        return _matches(real, self.read) or _matches(real, self.write)

    def allows_write(self, path: bytes | str) -> bool:
        real = _real(path)
        if real is None or _matches(real, self.deny) or _matches(real, self.deny_write):
            return False
        return _matches(real, self.write)

    __call__ = allows_read


def _real(path: bytes | str) -> str | None:
    name = os.fsdecode(path)
    if not name or "\0" in name:
        return None
    return os.path.realpath(name)


def _real_entries(entries: Iterable[str]) -> tuple[str, ...]:
    # "/" is never an entry: it would allow everything (a root = "/" config)
    real = (os.path.realpath(e) for e in entries if e)
    return tuple(dict.fromkeys(e for e in real if e != "/"))


def _matches(real: str, entries: tuple[str, ...]) -> bool:
    for entry in entries:
        if real == entry or real.startswith(entry + os.sep):
            return True
        if "*" in entry and fnmatch.fnmatchcase(real, entry):
            return True
    return False


def package_files(package_path: str) -> list[str]:
    """The fixed files of a Lua search path ("/srv/init.lua" in "/srv/?.lua;/srv/init.lua")."""
    return [t for t in package_path.split(";") if t.startswith("/") and "?" not in t]


def package_dirs(package_path: str) -> list[str]:
    """The directories of a Lua search path ("/srv/lib/?.lua;;" -> /srv/lib)."""
    dirs = []
    for template in package_path.split(";"):
        head = template.split("?", 1)[0]
        if template and "?" in template and head.startswith("/"):
            directory = head if head.endswith("/") else head.rsplit("/", 1)[0] + "/"
            if directory != "/" and directory not in dirs:
                dirs.append(directory)
    return dirs


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientFilter:
    """``allowed_clients`` for TCP listeners: addresses and CIDR blocks."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.networks: list[Network] = [ipaddress.ip_network(a, strict=False) for a in allowed]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def check_clients(value: list[str]) -> str | None:
    """Config check: every entry is an IP address or a CIDR block."""
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not an IP address or CIDR block"
    return None
