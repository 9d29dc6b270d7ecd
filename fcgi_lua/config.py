"""The one Config object: defaults, TOML file, CLI flags, validated once.

Every option lives in ``OPTIONS`` (name, type, default, check, help); the
TOML file and the CLI both feed the same table, so a key that exists in one
exists in the other and errors always name the key and where it came from.
This module never starts anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Each default and registry is defined once, by the module that owns it.
from fcgi_lua.errorlog import DEFAULT_LOG_MAX_LINE, DEFAULT_LOG_REPEAT_LIMIT, MIN_LOG_MAX_LINE
from fcgi_lua.fastcgi import DEFAULT_MAX_PARAMS_BYTES, DEFAULT_MAX_PARAMS_COUNT
from fcgi_lua.limits import (
    DEFAULT_LUA_MEMORY_LIMIT,
    DEFAULT_MAX_INSTRUCTIONS,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SLOW_RESUME_WARNING,
    DEFAULT_WORKER_MEMORY_LIMIT,
    check_clients,
)
from fcgi_lua.lua.codecache import DEFAULT_RECOMPILE, DEFAULT_RECOMPILE_INTERVAL, RECOMPILE_POLICIES
from fcgi_lua.lua.runtimes import DEFAULT_RUNTIME, RUNTIMES
from fcgi_lua.lua.scheduler import DEFAULT_MAX_PENDING_TIMERS, DEFAULT_MAX_RUNNING_TIMERS

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A bad option: the message names the key and its source."""


MAX_WORKERS = 256


def default_workers() -> int:
    """One worker per CPU this process may run on, as nginx's
    ``worker_processes auto``: the affinity mask (taskset, a container's
    cpuset) rather than ``os.cpu_count()``, which counts every CPU of the
    host.  Neither sees a CPU quota (``docker --cpus``, a Kubernetes
    limit): set ``workers`` there."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    return max(1, min(count, MAX_WORKERS))


@dataclass
class Config:
    """Every option of fcgi-lua.  docs/configuration.md documents each."""

    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:9000"])
    root: str = ""
    # Worker processes; 1 is a single process with no master (cli.py).
    workers: int = field(default_factory=default_workers)
    debug: bool = False
    # nginx workers usually run as another user (www-data, nobody) than the
    # responder; 0666 lets them connect.  Tighten it with a shared group.
    socket_mode: int = 0o666
    # Owner and group (names or numeric ids) given to Unix sockets; ""
    # leaves them to the process.  Changing the owner needs root.
    socket_owner: str = ""
    socket_group: str = ""
    # TCP peers allowed to connect (IP addresses, CIDR blocks); [] allows
    # every peer.  Others are closed at accept, with a log line.
    allowed_clients: list[str] = field(default_factory=list)
    extensions: list[str] = field(default_factory=lambda: [".lua"])
    lua_runtime: str = ""
    recompile: str = DEFAULT_RECOMPILE
    # recompile = "mtime": look at a script's mtime at most this often
    # (seconds; 0: every request), like PHP's opcache.revalidate_freq.
    recompile_interval: float = DEFAULT_RECOMPILE_INTERVAL
    # Why these: fcgi_lua/fastcgi/_limits.py.
    max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES
    max_params_count: int = DEFAULT_MAX_PARAMS_COUNT
    # Bodies above this get 413 without being stored (nginx's default is 1m).
    client_max_body_size: int = 1024 * 1024
    # Bodies up to this size stay in memory, larger ones go to a temp file.
    # nginx's default is two memory pages (8k on x86-64, 16k on other 64-bit
    # platforms); 16k keeps a typical form in memory everywhere.
    client_body_buffer_size: int = 16 * 1024
    # Where spooled bodies and uploads go; "" is the system temp dir
    # ($TMPDIR or /tmp).  Keep it off tmpfs for large uploads: tmpfs is RAM.
    client_body_temp_path: str = ""
    # Answered to FCGI_GET_VALUES; FCGI_MAX_REQS is also the cap on
    # requests in flight per worker: beyond it a request gets 503.
    # max_conns is also the cap on open connections per worker (lowered at
    # start to leave a quarter of RLIMIT_NOFILE to cosockets and files: at
    # the descriptor limit libuv accepts and closes a connection silently).
    max_conns: int = 1024
    # A connection with no request in progress is closed after this many
    # seconds of silence: longer than nginx's upstream keepalive_timeout
    # (60 s), so nginx, which knows when it reuses one, closes first.
    idle_timeout: float = 75.0
    # A request whose records stop coming before its params and body are
    # complete, or a front server that stops reading our responses: closed
    # after this many seconds without progress (nginx's
    # fastcgi_read_timeout and send_timeout are 60 s).  0 turns each off.
    read_timeout: float = 60.0
    write_timeout: float = 60.0
    # Pending connections the kernel queues per listening socket (capped by
    # net.core.somaxconn): a burst of connects beyond it fails at once.
    backlog: int = 4096
    max_reqs: int = 1024
    log_level: str = "info"
    error_log: str = "stderr"
    # Bytes one error log line may take (OpenResty's ~4 kB; why:
    # fcgi_lua/errorlog.py), and lines of one kind of WARNING per 10 s
    # before the rest are counted instead (0: no limit).
    log_max_line: int = DEFAULT_LOG_MAX_LINE
    log_repeat_limit: int = DEFAULT_LOG_REPEAT_LIMIT
    # Mirror ngx.log lines into FCGI_STDERR so they land in nginx's error log.
    log_to_fcgi_stderr: bool = False
    # Graceful stop: in-flight requests get this long, then are cancelled.
    shutdown_timeout: float = 10.0
    # A worker is recycled (gracefully) after this many requests; 0: never.
    max_requests: int = 0
    # A worker whose event loop has not sent a heartbeat for this long
    # (a script stuck in a blocking call) is killed and replaced.
    worker_hang_timeout: float = 30.0
    # Log a warning when one resume of a request's coroutine (the Lua code
    # between two yields) runs longer than this many seconds: a blocking
    # call stalls the whole worker.  0 disables it (why 0.1: lua/engine.py,
    # DEFAULT_SLOW_RESUME_WARNING).
    slow_resume_warning: float = DEFAULT_SLOW_RESUME_WARNING
    # ngx.timer limits per worker, lua-nginx-module's defaults
    # (lua_max_pending_timers, lua_max_running_timers): a script that
    # creates timers in a loop cannot exhaust the worker.
    max_pending_timers: int = DEFAULT_MAX_PENDING_TIMERS
    max_running_timers: int = DEFAULT_MAX_RUNNING_TIMERS
    # A connection stops being read while more than this many bytes of
    # its responses wait in the socket's write buffer.
    write_buffer_high: int = 256 * 1024
    # Bytes of a request's output ngx.print/ngx.say may hold before the
    # front server has them: past write_buffer_high they are sent and the
    # script waits like ngx.flush(true); only where it cannot wait (a
    # runtime without coroutine.isyieldable, a C callback) does output
    # pile up, and past this the request fails.  16 MB is far more than a
    # page built in memory, and bounds max_reqs stuck requests.
    output_buffer_limit: int = 16 * 1024 * 1024
    # CGI mode (docs/cgi.md): scripts whose path relative to root matches
    # one of these globs, or whose first line is a "#!...lua" shebang.
    cgi_patterns: list[str] = field(default_factory=lambda: ["*.cgi.lua", "cgi-bin/*"])
    cgi_shebang: bool = True
    # require's search paths, as nginx's lua_package_path/lua_package_cpath
    # ("" keeps the default; ";;" in a value stands for it).
    lua_package_path: str = ""
    lua_package_cpath: str = ""
    # Limits (why these defaults: fcgi_lua/limits.py); 0 turns each off.
    max_instructions: int = DEFAULT_MAX_INSTRUCTIONS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    # PUC Lua's allocator enforces it, LuaJIT's soft limit checks it
    # (docs/runtimes.md); the master kills a worker past worker_memory_limit.
    lua_memory_limit: int = DEFAULT_LUA_MEMORY_LIMIT
    worker_memory_limit: int = DEFAULT_WORKER_MEMORY_LIMIT
    # Remove os.execute, io.popen, debug...; confine files to root and the
    # require path (docs/lua-api.md, "Limits and sandbox").
    sandbox: bool = False
    # Directories a sandboxed script may write under (never the package
    # path); [] is nowhere.
    sandbox_write_paths: list[str] = field(default_factory=list)
    # ngx.shared.DICT zones, name -> size in bytes (nginx's lua_shared_dict),
    # shared by every worker; kept in one LMDB store under shared_dict_path
    # ("" is a directory in the system temp dir keyed by user and listen).
    shared_dicts: dict[str, int] = field(default_factory=dict)
    shared_dict_path: str = ""
    # Paths the responder answers itself, like PHP-FPM's pm.status_path and
    # ping.path (docs/operations.md); "" is off.  status_path turns metrics on.
    status_path: str = ""
    ping_path: str = ""
    ping_response: str = "pong"
    # Where workers share their metrics (prometheus-client's multiprocess
    # directory); "" is a private temp dir removed at exit.
    metrics_dir: str = ""
    # "off" or a file: one line per request (fcgi_lua/accesslog.py).
    access_log: str = "off"
    # Log a WARNING with the Lua traceback of a request running longer than
    # this many seconds; 0 is off.
    slow_request_threshold: float = 0.0
    # Lua files run by every worker's VM before it serves (OpenResty's
    # init_by_lua_file / init_worker_by_lua_file; docs/lua-api.md,
    # "Init scripts"); "" is none.
    init_script: str = ""
    init_worker_script: str = ""

    def validate(self, sources: Mapping[str, str] | str = "config") -> None:
        """Check every option once; ``sources`` names where each key came
        from (a file, "command line"), or is one name for all of them."""
        for spec in OPTIONS.values():
            value = getattr(self, spec.name)
            problem = spec.check(value) if spec.check else None
            if problem:
                where = sources if isinstance(sources, str) else sources.get(spec.name, "config")
                raise ConfigError(f"{where}: {spec.name}: {problem} (got {toml_repr(value)})")
        if self.worker_memory_limit and self.worker_memory_limit <= self.lua_memory_limit:
            # the backstop must sit above the Lua heap it backs up, or every
            # VM that fills its own limit would cost its whole worker
            where = (
                sources
                if isinstance(sources, str)
                else sources.get("worker_memory_limit", sources.get("lua_memory_limit", "config"))
            )
            raise ConfigError(
                f"{where}: worker_memory_limit: must be 0 or more than lua_memory_limit "
                f"({self.lua_memory_limit}) (got {self.worker_memory_limit})"
            )

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Option:
    """One key: its TOML type (``kind``), how a value is read (``read``:
    "size" takes 8k/1m, "mode" an octal string; "" the kind alone) and the
    check of a read value, which returns the problem or None."""

    name: str
    kind: type
    check: Callable[[Any], str | None] | None = None
    read: str = ""


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _check_listen(value: list[str]) -> str | None:
    if not value:
        return "needs at least one address"
    for address in value:
        try:
            parse_listen(address)
        except ValueError as exc:
            return str(exc)
    return None


def _check_root(value: str) -> str | None:
    if not value:
        return "is required (the document root scripts are confined to)"
    if not os.path.isdir(value):
        return "is not a directory"
    return None


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _check_temp_path(value: str) -> str | None:
    if value and not os.path.isdir(value):
        return "is not a directory"
    if value and not os.access(value, os.W_OK | os.X_OK):
        return "is not writable"
    return None


def _check_workers(value: int) -> str | None:
    return None if 1 <= value <= MAX_WORKERS else f"must be between 1 and {MAX_WORKERS}"


def _check_extensions(value: list[str]) -> str | None:
    if not value or any(not ext.startswith(".") for ext in value):
        return "must be a non-empty list of extensions like '.lua'"
    return None


def _check_mode(value: int) -> str | None:
    return None if 0 <= value <= 0o777 else "must be a file mode between 0 and 0777"


def _check_uri_path(value: str) -> str | None:
    if value and (not value.startswith("/") or any(c in value for c in "?# ")):
        return "must be empty or a path like '/fcgi-status'"
    return None


# nginx refuses lua_shared_dict zones under 8k ("invalid lua shared dict size").
MIN_SHARED_DICT_SIZE = 8192
SHARED_DICT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def _check_shared_dicts(value: dict[str, int]) -> str | None:
    for name, size in value.items():
        if not SHARED_DICT_NAME.fullmatch(name):
            return f"{name}: a zone name is a letter or _ then up to 63 letters, digits, _ . -"
        if size < MIN_SHARED_DICT_SIZE:
            return f"{name}: size must be at least 8k"
    return None


def _check_shared_dict_path(value: str) -> str | None:
    parent = os.path.dirname(os.path.abspath(value)) if value else ""
    if value and not os.path.isdir(parent):
        return f"{parent} is not a directory"
    return None


def _check_memory_limit(value: int) -> str | None:
    # below this a worker cannot even load the ngx API
    if value and value < 4 * 1024 * 1024:
        return "must be 0 (no limit) or at least 4m"
    return None


def _check_lua_file(value: str) -> str | None:
    if value and not os.path.isfile(value):
        return "is not a file"
    if value and not os.access(value, os.R_OK):
        return "is not readable"
    return None


def _check_log_max_line(value: int) -> str | None:
    if value < MIN_LOG_MAX_LINE:
        return f"must be at least {MIN_LOG_MAX_LINE}"
    return None


def _check_runtime(value: str) -> str | None:
    names = sorted(RUNTIMES)
    return None if not value or value in RUNTIMES else f"must be one of {', '.join(names)}"


def _check_write_paths(value: list[str]) -> str | None:
    for path in value:
        if not os.path.isabs(path) or not os.path.isdir(path):
            return f"{path}: not an absolute path to a directory"
    return None


OPTIONS: dict[str, Option] = {
    spec.name: spec
    for spec in (
        Option("listen", list, _check_listen),
        Option("root", str, _check_root),
        Option("workers", int, _check_workers),
        Option("debug", bool),
        Option("socket_mode", int, _check_mode, read="mode"),
        Option("extensions", list, _check_extensions),
        Option("lua_runtime", str, _check_runtime),
        Option("recompile", str, _one_of(RECOMPILE_POLICIES)),
        Option("recompile_interval", float, _not_negative),
        Option("max_params_bytes", int, _positive, read="size"),
        Option("max_params_count", int, _positive),
        Option("client_max_body_size", int, _positive, read="size"),
        Option("client_body_buffer_size", int, _positive, read="size"),
        Option("client_body_temp_path", str, _check_temp_path),
        Option("max_conns", int, _positive),
        Option("idle_timeout", float, _not_negative),
        Option("read_timeout", float, _not_negative),
        Option("write_timeout", float, _not_negative),
        Option("backlog", int, _positive),
        Option("max_reqs", int, _positive),
        Option("log_level", str, _one_of(LOG_LEVELS)),
        Option("error_log", str),
        Option("log_max_line", int, _check_log_max_line, read="size"),
        Option("log_repeat_limit", int, _not_negative),
        Option("log_to_fcgi_stderr", bool),
        Option("shutdown_timeout", float, _positive),
        Option("max_requests", int, _not_negative),
        Option("worker_hang_timeout", float, _positive),
        Option("slow_resume_warning", float, _not_negative),
        Option("max_pending_timers", int, _positive),
        Option("max_running_timers", int, _positive),
        Option("write_buffer_high", int, _positive, read="size"),
        Option("output_buffer_limit", int, _not_negative, read="size"),
        Option("cgi_patterns", list),
        Option("cgi_shebang", bool),
        Option("lua_package_path", str),
        Option("lua_package_cpath", str),
        Option("max_instructions", int, _not_negative),
        Option("request_timeout", float, _not_negative),
        Option("lua_memory_limit", int, _check_memory_limit, read="size"),
        Option("worker_memory_limit", int, _check_memory_limit, read="size"),
        Option("sandbox", bool),
        Option("sandbox_write_paths", list, _check_write_paths),
        Option("socket_owner", str),
        Option("socket_group", str),
        Option("allowed_clients", list, check_clients),
        Option("shared_dicts", dict, _check_shared_dicts),
        Option("shared_dict_path", str, _check_shared_dict_path),
        Option("status_path", str, _check_uri_path),
        Option("ping_path", str, _check_uri_path),
        Option("ping_response", str),
        Option("metrics_dir", str),
        Option("access_log", str),
        Option("slow_request_threshold", float, _not_negative),
        Option("init_script", str, _check_lua_file),
        Option("init_worker_script", str, _check_lua_file),
    )
}
assert set(OPTIONS) == {f.name for f in dataclasses.fields(Config)}


def parse_listen(address: str) -> tuple[str, str | int]:
    """``unix:/path`` -> ("unix", path); ``host:port`` -> (host, port)."""
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            raise ValueError(f"{address!r}: unix socket path is empty")
        return "unix", path
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r}: expected unix:/path or host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_size(value: str | int) -> int:
    """nginx-style sizes: 1024, "8k", "1m", "1g"."""
    if isinstance(value, int):
        return value
    text = value.strip().lower()
    scale = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(text[-1:], 1)
    digits = text[:-1] if scale != 1 else text
    if not digits.isdigit():
        raise ValueError(f"{value!r} is not a size like 512, 8k or 1m")
    return int(digits) * scale


def toml_repr(value: Any) -> str:
    """A value as the user wrote it in TOML (true, "two", [2]), not as
    Python prints it (True, 'two')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_repr(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {toml_repr(item)}" for key, item in value.items()) + "}"
    return str(value)


_EXPECTED = {bool: "true or false", float: "a number", str: "a string"}


def coerce(spec: Option, value: Any, source: str) -> Any:
    """Turn a TOML or CLI value into the option's type, or fail naming it."""
    where = f"{source}: {spec.name}"
    got = f"(got {toml_repr(value)})"
    if spec.kind is bool or spec.kind is str:
        if isinstance(value, spec.kind):
            return value
    elif spec.kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif spec.kind is int:
        if spec.read == "mode" and isinstance(value, str):
            try:
                return int(value, 8)
            except ValueError as exc:
                raise ConfigError(f'{where}: expected an octal mode like "0660" {got}') from exc
        if spec.read == "size" and isinstance(value, str):
            try:
                return parse_size(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        expected = "a size like 512, 8k or 1m" if spec.read == "size" else "a whole number"
        raise ConfigError(f"{where}: expected {expected} {got}")
    elif spec.kind is dict:  # name -> size (shared_dicts)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table of name = size {got}")
        sizes = {}
        for name, size in value.items():
            if isinstance(size, bool) or not isinstance(size, (int, str)):
                raise ConfigError(
                    f"{where}: {name}: expected a size like 10m (got {toml_repr(size)})"
                )
            try:
                sizes[name] = parse_size(size)
            except ValueError as exc:
                raise ConfigError(f"{where}: {name}: {exc}") from exc
        return sizes
    elif spec.kind is list:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            return list(items)
        raise ConfigError(f"{where}: expected a list of strings {got}")
    raise ConfigError(f"{where}: expected {_EXPECTED[spec.kind]} {got}")


def _unknown(key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, OPTIONS, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]!r}?" if close else " (docs/configuration.md lists them)"
    return ConfigError(f"{source}: unknown key {key!r}{hint}")


def apply(
    values: dict[str, Any], sources: dict[str, str], given: Mapping[str, Any], source: str
) -> None:
    """Read ``given`` (one file's or the command line's keys) into
    ``values``, remembering in ``sources`` where each came from."""
    for key, value in given.items():
        spec = OPTIONS.get(key)
        if spec is None:
            raise _unknown(key, source)
        values[key] = coerce(spec, value, source)
        sources[key] = source


def load(path: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file, then CLI overrides; validated once."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        apply(values, sources, data, path)
    if overrides:
        apply(values, sources, overrides, "command line")
    if not values.get("lua_runtime"):
        values["lua_runtime"] = DEFAULT_RUNTIME
    config = Config(**values)
    # a key left at its default is blamed on where the options came from
    for name in OPTIONS:
        sources.setdefault(name, path or "command line")
    config.validate(sources)
    return config
