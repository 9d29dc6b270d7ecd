"""The Lua engine of one worker: its VM, its code cache, and the loop that
runs a request's coroutine to completion.

The engine owns the Lua side of a request and nothing else: it never reads
FastCGI records nor resolves script paths (the server did both).  All of the
ngx API lives in ``ngx.lua``; Python is crossed once per resume, to perform
the I/O a coroutine yielded (sleep, write, body read: the command table of
``commands.py``), and for hashing (``strings.py``) and logging.  Loading
fcgi-lua's Lua files is ``loader.py``'s; sockets are ``cosocket/``'s.
"""

from __future__ import annotations

import asyncio
import fnmatch
import importlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from fcgi_lua import __version__, deadlines, limits, metrics
from fcgi_lua.body import Body
from fcgi_lua.forms import Multipart
from fcgi_lua.http import error_page, error_response, header_block, reason_phrase
from fcgi_lua.lua import cosocket, failures, guards, regex, scheduler, strings
from fcgi_lua.lua.codecache import DEFAULT_RECOMPILE, CodeCache, LuaCompileError, Recompile
from fcgi_lua.lua.commands import COMMANDS, body_failure
from fcgi_lua.lua.loader import load_chunk
from fcgi_lua.lua.runtimes import DEFAULT_RUNTIME, c_module_dir, is_luajit, new_runtime
from fcgi_lua.lua.shared_dicts import install as install_shared_dicts
from fcgi_lua.shdict import SharedDicts

if TYPE_CHECKING:
    from fcgi_lua.config import Config

log = logging.getLogger("fcgi_lua.lua")

# nginx's built-in default_type (Debian's stock nginx.conf says
# application/octet-stream instead); what a script gets when it sets none.
DEFAULT_CONTENT_TYPE = b"text/plain"

# ngx.STDERR .. ngx.DEBUG -> Python logging levels.
_LOG_LEVELS = (
    logging.CRITICAL,  # STDERR
    logging.CRITICAL,  # EMERG
    logging.CRITICAL,  # ALERT
    logging.CRITICAL,  # CRIT
    logging.ERROR,  # ERR
    logging.WARNING,  # WARN
    logging.INFO,  # NOTICE
    logging.INFO,  # INFO
    logging.DEBUG,  # DEBUG
)
_LOG_NAMES = b"stderr emerg alert crit error warn notice info debug".split()

_TRACEBACK = "\nstack traceback:\n"


class LuaRequest(Protocol):
    """What the engine needs of a request (the server's Request fits)."""

    @property
    def script_path(self) -> str: ...

    @property
    def params(self) -> Sequence[tuple[bytes, bytes]]: ...

    def var(self, name: bytes) -> bytes | None: ...

    @property
    def method(self) -> bytes:
        """REQUEST_METHOD ("" when the front server sent none)."""
        ...

    # The body (fcgi_lua.request.Request implements these).
    async def wait_body(self) -> None: ...

    @property
    def body_data(self) -> bytes | None: ...

    @property
    def body_path(self) -> str | None: ...

    def discard_body(self) -> None: ...

    @property
    def body(self) -> Body: ...

    def stream_body(self) -> str | None: ...

    async def multipart(self, max_parts: int) -> Multipart: ...


class OutputSink(Protocol):
    """Where a request's CGI response goes (STDOUT and STDERR records)."""

    async def write(self, data: bytes) -> None: ...

    def write_nowait(self, data: bytes) -> Awaitable[None] | None:
        """Write now; None, or what to await until the peer has read enough."""
        ...

    def stderr(self, data: bytes) -> None: ...


class LuaInitError(Exception):
    """init_script or init_worker_script failed; the message names the
    config key, then the file and line (and the Lua traceback)."""


def _ngx_log_level() -> int:
    """The ngx.* level (ngx.ERR ...) of what fcgi-lua's Lua log lets through."""
    level = log.getEffectiveLevel()
    if level <= logging.DEBUG:
        return 8  # ngx.DEBUG
    if level <= logging.INFO:
        return 7  # ngx.INFO
    if level <= logging.WARNING:
        return 5  # ngx.WARN
    if level <= logging.ERROR:
        return 4  # ngx.ERR
    return 3  # ngx.CRIT


_expand_short_src = failures.expand_short_src


def _is_head(params: Sequence[tuple[bytes, bytes]]) -> bool:
    for name, value in params:
        if name == b"REQUEST_METHOD":
            return value == b"HEAD"
    return False


class _TimerOrigin:
    """Stands for the request in a timer's commands and warnings: a timer
    has none (its commands never touch it)."""

    script_path = "an ngx.timer callback"
    params = ()


_TIMER = _TimerOrigin()
# The handle every timer's context gives (thread.lua): its log lines say
# "context: ngx.timer", its FCGI_STDERR goes nowhere.
_TIMER_HANDLE = 0
_NO_CONTEXT: tuple[Any, Any] = (None, None)


class LuaEngine:
    """One Lua VM (create it in the worker, after the fork) running requests.

    ``await engine.run(request, sink)`` runs one request to completion and
    may be awaited by many tasks at once: each request is a coroutine of
    the same VM, with its own global table.
    """

    @classmethod
    def from_config(
        cls, config: Config, worker_id: int = 0, shared_dicts: SharedDicts | None = None
    ) -> LuaEngine:
        """The engine of a worker, as ``config`` says (its keys are
        documented in docs/configuration.md); ``shared_dicts``: the store
        this process opened (fcgi_lua.worker)."""
        return cls(
            runtime=config.lua_runtime,
            recompile=config.recompile,  # type: ignore[arg-type]  # validated by Config
            recompile_interval=config.recompile_interval,
            debug=config.debug,
            log_to_stderr=config.log_to_fcgi_stderr,
            worker_id=worker_id,
            worker_count=config.workers,
            root=config.root,
            cgi_patterns=config.cgi_patterns,
            cgi_shebang=config.cgi_shebang,
            lua_package_path=config.lua_package_path,
            lua_package_cpath=config.lua_package_cpath,
            slow_resume_warning=config.slow_resume_warning,
            max_pending_timers=config.max_pending_timers,
            max_running_timers=config.max_running_timers,
            max_instructions=config.max_instructions,
            request_timeout=config.request_timeout,
            lua_memory_limit=config.lua_memory_limit,
            sandbox=config.sandbox,
            sandbox_write_paths=config.sandbox_write_paths,
            body_temp_dir=config.client_body_temp_path,
            shared_dicts=shared_dicts,
            output_flush_size=config.write_buffer_high,
            output_buffer_limit=config.output_buffer_limit,
        )

    def __init__(
        self,
        runtime: str = DEFAULT_RUNTIME,
        recompile: Recompile = DEFAULT_RECOMPILE,
        debug: bool = False,
        log_to_stderr: bool = False,
        *,
        recompile_interval: float = 0.0,
        default_type: bytes = DEFAULT_CONTENT_TYPE,
        worker_id: int = 0,
        worker_count: int = 1,
        root: str = "",
        cgi_patterns: Sequence[str] = (),
        cgi_shebang: bool = True,
        slow_resume_warning: float = limits.DEFAULT_SLOW_RESUME_WARNING,
        lua_package_path: str = "",
        lua_package_cpath: str = "",
        max_pending_timers: int = scheduler.DEFAULT_MAX_PENDING_TIMERS,
        max_running_timers: int = scheduler.DEFAULT_MAX_RUNNING_TIMERS,
        max_instructions: int = 0,
        request_timeout: float = 0.0,
        lua_memory_limit: int = 0,
        sandbox: bool = False,
        sandbox_write_paths: Sequence[str] = (),
        body_temp_dir: str = "",
        shared_dicts: SharedDicts | None = None,
        output_flush_size: int = 256 * 1024,
        output_buffer_limit: int = 0,
    ) -> None:
        self.runtime_name = runtime
        # limits (fcgi_lua/limits.py); 0 turns each off
        self.max_instructions = max_instructions
        self.request_timeout = request_timeout
        self.lua_memory_limit = lua_memory_limit
        self._memory_guard = lua_memory_limit * limits.MEMORY_FULL_SHARE
        # LuaJIT's allocator cannot fail safely under lupa: its limit is
        # the soft one of lua/limits.lua, PUC Lua's is the allocator's.
        self._soft_memory = is_luajit(runtime)
        # Called when a memory kill leaves the VM too full to go on: the
        # worker should stop gracefully (the master starts a fresh one).
        self.on_exhausted: Callable[[], None] | None = None
        # 0 disables the warning: no resume is longer than infinity.
        self.slow_resume_warning = slow_resume_warning if slow_resume_warning > 0 else float("inf")
        self.debug = debug
        self.log_to_stderr = log_to_stderr
        self._lua = new_runtime(runtime, 0 if self._soft_memory else lua_memory_limit)
        self._lua_error = _lua_error(self._lua)
        # request_timeout's deadlines, on the loop's own timer (made on the
        # first request that waits: asyncio.get_running_loop() is a getpid()
        # syscall on Python 3.11, not paid per request)
        self._expiries: deadlines.Expiries | None = None
        # what the VM may hold when a request starts (ngx.lua's start checks)
        self._guard_kb = self._memory_guard / 1024 if lua_memory_limit else 0.0
        lua = self._lua
        # The collector's pace: a cycle starts as soon as the last one ends
        # (pause 100, not 200) and works 4x the allocation rate.  10,000
        # sleeping requests peaked about 20 MB lower (the requests finishing
        # around them leave garbage faster than the default pace frees it);
        # hello and redis INCR measured no slower (bench/README.md).
        # Not on LuaJIT: there a cycle that starts as soon as the last one
        # ends re-marks a growing heap over and over (130,000 1 KB strings
        # into a table: 4.6 s at pause 100, 0.23 s at LuaJIT's default 200).
        if not self._soft_memory:
            lua.execute(
                b'pcall(collectgarbage, "setpause", 100) pcall(collectgarbage, "setstepmul", 400)'
            )
        # before the prelude: every coroutine it creates carries the hook
        soft_limit = lua_memory_limit if self._soft_memory else 0
        bind_budget = (
            guards.install_limits(lua, max_instructions, soft_limit)
            if max_instructions or soft_limit
            else None
        )
        # nginx's prefix, for ngx.config.prefix() and $prefix in the package
        # paths: the directory fcgi-lua was started in (relative paths mean it)
        prefix = os.path.join(os.getcwd(), "")
        helpers = lua.table_from(
            {
                b"prefix": os.fsencode(prefix),
                b"log": self._log,
                b"error_page": error_page,
                b"update_time": time.time,
                b"params": self._params,
                b"var": self._var,
                b"body_now": self._body_now,
                b"body_build": self._body_build,
                **strings.FUNCTIONS,
                b"reasons": lua.table_from(
                    {code: reason_phrase(code).encode("ascii") for code in range(100, 1000)}
                ),
                b"default_type": default_type,
                b"null": _Null(),
                b"debug": debug,
                b"pid": os.getpid(),
                b"worker_id": worker_id,
                b"worker_count": worker_count,
                b"worker_pids": lambda: lua.table_from(worker_pids(worker_count)),
                b"version": __version__.encode(),
                b"runtime": runtime.encode(),
                b"root": os.fsencode(root),
                b"cgi_shebang": cgi_shebang,
                b"c_module_dir": c_module_dir(runtime).encode(),
                # resty_core.lua: resty.core.time, ngx.errlog, ngx.process
                b"monotonic": time.monotonic,
                b"log_level": _ngx_log_level,
                b"graceful_exit": self._graceful_exit,
                b"master_pid": os.getppid(),
                # ngx.print's bounds (config's write_buffer_high, output_buffer_limit)
                b"output_flush_size": output_flush_size,
                b"output_buffer_limit": output_buffer_limit,
                # ngx.lua's API areas, fcgi_lua/lua/ngx/*.lua
                b"load": lambda name: load_chunk(lua, os.fsdecode(name)),
            }
        )
        driver = load_chunk(lua, "ngx.lua")(helpers)
        self._context = driver[b"extensions"][b"context"]  # the one running now
        if bind_budget is not None:
            bind_budget(self._context)
        # The mk.* API over the ngx API.
        self._load_layer("mk.lua", helpers, driver[b"extensions"])
        self._cgi = CgiMarker(root, cgi_patterns)
        # ngx.socket.* and require "resty.X" (socket.lua, cosocket/)
        self.cosockets = cosocket.install(lua, driver[b"extensions"])
        # ngx.re.* and require "ngx.re" (re.lua, regex.py)
        self.regexes = regex.install(lua, driver[b"extensions"])
        # ngx.shared.DICT (shdict.lua, fcgi_lua/shdict.py): the store is
        # opened by the caller, in this process; it outlives no engine
        self.shared_dicts = shared_dicts
        install_shared_dicts(lua, shared_dicts)
        set_package_paths(lua, lua_package_path, lua_package_cpath, prefix)
        # ngx.thread, ngx.timer, ngx.semaphore, ngx.on_abort (thread.lua,
        # scheduler.py): contexts with several coroutines, or no request
        self.timers = scheduler.Timers(
            self._run_timer, self._drop_timer, max_pending_timers, max_running_timers
        )
        # what a coroutine may yield, and how: the table, with this
        # engine's own semaphore parking
        self._commands = {
            **COMMANDS,
            b"park": self.timers.parking.perform,
            b"sleep": self._sleep,
        }
        threads = self._load_threads(driver[b"extensions"])
        self._drive_thread = threads[b"drive_thread"]
        self._client_abort = threads[b"client_abort"]
        self._start_timer = threads[b"start_timer"]
        self._drop_timer_lua = threads[b"drop_timer"]
        self._release = threads[b"release"]
        # resty.core and the ngx.* modules of lua-resty-core, and the
        # table.* modules of OpenResty's LuaJIT (resty_core.lua, luajit.lua);
        # CGI mode last: it takes fcgi-lua's own modules as a CGI request's
        # built-ins (cgi.lua)
        for layer in ("luajit.lua", "resty_core.lua", "cgi.lua"):
            self._load_layer(layer, helpers, driver[b"extensions"])
        self._start = driver[b"start"]
        self._drive = driver[b"drive"]
        self._abort = driver[b"abort"]
        self._run_phase = driver[b"run_phase"]  # init_script, init_worker_script
        self.cache = CodeCache(driver[b"compile"], recompile, recompile_interval)
        # The status page and the slow-request log ask for these; taken
        # before a sandbox removes debug.  running: request -> its context.
        self.running: dict[Any, Any] = {}
        # What ngx.lua's request tables stand for in Python: handle -> the
        # request and the sink its output and FCGI_STDERR go to, from the
        # request's start to its end.  Lua holds the integer (r.handle) and
        # hands it back to the helpers that need the request (params, body,
        # log lines), as cosockets' handles do.
        self._requests: dict[int, tuple[Any, OutputSink | None]] = {_TIMER_HANDLE: (_TIMER, None)}
        self._handles = itertools.count(1)
        # (one value: 5.2's collectgarbage("count") adds the bytes past the last KB)
        self._traceback_of, self._memory_kb = lua.execute(
            b"local traceback, collectgarbage = debug.traceback, collectgarbage\n"
            b"return function(r) return traceback(r.co, '', 0) end,\n"
            b"       function() return (collectgarbage('count')) end"
        )
        self._collect = lua.execute(
            b"local collectgarbage = collectgarbage\n"
            b"return function() collectgarbage() return (collectgarbage('count')) end"
        )
        # Last: the layers above keep private references.  Isolation
        # (read-only shared globals and ngx, docs/sandbox.md) is sealed
        # after the sandbox changed the globals; it keeps debug for itself.
        extensions = driver[b"extensions"]
        isolation = self._load_layer("isolation.lua", helpers, extensions)
        if sandbox:
            path = lua.globals().package.path.decode("utf-8", "replace")
            guards.install_sandbox(
                lua,
                root,
                path,
                body_temp_dir,
                write_paths=sandbox_write_paths,
                private_paths=limits.private_paths(shared_dicts),
                extensions=extensions,
            )
            extensions[b"sandboxed"] = True
        isolation[b"seal"]()

    def _load_layer(self, name: str, helpers: Any, extensions: Any) -> Any:
        return load_chunk(self._lua, name)(helpers, extensions)

    def _load_threads(self, extensions: Any) -> Any:
        chunk = load_chunk(self._lua, "thread.lua")
        functions = self.timers.functions()
        functions[b"timer"] = _TIMER_HANDLE
        return chunk(self._lua.table_from(functions), extensions)

    # -- helpers called from Lua ---------------------------------------------

    def _params(self, handle: int) -> tuple[bytes, ...]:
        """The params of request ``handle`` as ngx.lua keeps them, name,
        value, name, value, ... (returned as that many values: Lua's { ... }
        makes the table faster than table_from); asked once per request, and
        only by a script that reads a variable or a header."""
        return tuple(itertools.chain.from_iterable(self._requests[handle][0].params))

    def _var(self, handle: int, name: bytes) -> bytes | None:
        """One variable of request ``handle`` by its lower-case name
        (Request.var): what ngx.var asks while the script has not needed
        all the params (one crossing and a dict lookup, 0.3 us, against 2.4
        us for all of them and 1.6 us more to index them in Lua)."""
        request: LuaRequest = self._requests[handle][0]
        return request.var(name)

    def _body_now(self, handle: int) -> Any:
        """ngx.req.read_body() of a body that has all come (it came with the
        params, or was refused): its result without a wait; else nil."""
        request = self._requests[handle][0]
        body = request.body
        if not body.settled:
            return None
        if body.error is not None and not body.discarded:
            return self._lua.table_from(body_failure(request, body.error))
        path = request.body_path
        if path is not None:
            return self._lua.table_from({b"file": os.fsencode(path)})
        return self._lua.table_from({b"data": request.body_data or b""})

    def _body_build(self, handle: int, data: Any = None) -> Any:
        """ngx.req.init_body / append_body / finish_body / set_body_data
        (ngx/req_body.lua): with ``data``, append it to the body the script
        builds in a temp file, -> its path (or nil, why not); without, remove that
        file (a new body replaces it) -> the request's
        client_body_buffer_size (init_body's default buffer)."""
        request = self._requests[handle][0]
        body = request.body
        if data is None:
            body.drop_built()
            return body.buffer_size
        try:
            return os.fsencode(body.write_built(bytes(data)))
        except OSError as exc:
            log.error("%s: cannot write the request body: %s", request.script_path, exc)
            return None, str(exc).encode("utf-8", "replace")

    @property
    def requests_held(self) -> int:
        """How many requests' handles the engine holds now (those started
        and not ended): 0 between requests, whatever they did."""
        return len(self._requests) - 1  # the timers' handle stays

    async def _sleep(self, request: LuaRequest, sink: OutputSink, seconds: Any) -> None:
        """ngx.sleep: on the worker's heap of deadlines (cosockets' too)."""
        await self.cosockets.deadlines().sleep(seconds)

    def _graceful_exit(self) -> None:
        # ngx.process.signal_graceful_exit(): the worker stops gracefully
        # and the master starts a fresh one (as after a memory kill)
        if self.on_exhausted is not None:
            self.on_exhausted()

    def _log(self, level: int, message: bytes, handle: int | None = None) -> None:
        """A line of ngx.log (ngx/log.lua's log) from the context ``handle``
        (a request's, a timer's; None outside any context)."""
        # (.get: a line from a context that ended has no request to name)
        request, sink = (
            self._requests.get(handle, _NO_CONTEXT) if handle is not None else _NO_CONTEXT
        )
        level = int(level)
        text = message.decode("utf-8", "replace")
        python_level = _LOG_LEVELS[level]
        if log.isEnabledFor(python_level):  # the context is built only for a line logged
            log.log(python_level, "%s%s", *self._log_line(text, request))
        if self.log_to_stderr and sink is not None:
            sink.stderr(b"[" + _LOG_NAMES[level] + b"] " + message + b"\n")

    def _log_line(self, text: str, request: Any) -> tuple[str, str]:
        """An ngx.log line (or a light thread's error) and the context it
        ends with in the error log: the request's, as OpenResty's lines."""
        if request is None:  # init_script, init_worker_script, a timer's first resume
            return text, ""
        if _TRACEBACK in text:  # a light thread's error (thread.lua)
            text = failures.clean_traceback(_expand_short_src(text, request.script_path))
        if request is _TIMER:
            return text, ", context: ngx.timer"
        return text, failures.request_context(request.params)

    # -- running a request ---------------------------------------------------

    async def run(self, request: LuaRequest, sink: OutputSink) -> None:
        """Run ``request`` to completion, writing its CGI response to ``sink``."""
        rest = self.start(request, sink)
        if rest is not None:
            await rest

    def start(self, request: LuaRequest, sink: OutputSink) -> Awaitable[None] | None:
        """Run ``request`` up to its first wait, writing to ``sink``.  None
        if it ended there (most requests: its response is written); else
        what finishes it, for the caller to await (in a task of its own)."""
        try:
            factory = self.cache.get(request.script_path)
        except LuaCompileError as exc:
            return self._fail(request, sink, str(exc), emitted=False, prefix="")
        lua_error = self._lua_error
        head = request.method == b"HEAD"
        cgi = self._cgi(request.script_path)
        handle = next(self._handles)
        requests = self._requests
        requests[handle] = (request, sink)
        waits = False  # then _run_waiting lets go of the handle
        # Each resume is timed: one that runs long without yielding is a
        # blocking call (os.execute, io.popen, LuaSocket) or a long loop.
        perf_counter = time.perf_counter
        try:
            began = perf_counter()
            # one crossing: the params follow only if the script asks
            r, cmd, arg, extra = self._start(
                factory, time.time(), cgi, head, self._guard_kb, handle
            )
            if cmd == b"memory":  # the VM is nearly full: collect, then start or refuse
                if not self._make_room(request):
                    return self._fail(
                        request, sink, "not enough memory (lua_memory_limit)", emitted=False
                    )
                began = perf_counter()
                r, cmd, arg, extra = self._start(factory, time.time(), cgi, head, 0, handle)
            elapsed = perf_counter() - began
            if elapsed > self.slow_resume_warning:
                self._warn_slow(request, elapsed)
            if cmd == b"done":
                # Over in its first resume (most requests that wait for
                # nothing): nothing to time out, nothing left open (start
                # let go of it).
                return sink.write_nowait(arg) if arg else None
            waits = True
            return self._run_waiting(request, sink, r, handle, cmd, arg, extra)
        except lua_error as exc:
            self._limit_kill(request, None, exc)
            reason = str(exc) or ("not enough memory" if isinstance(exc, MemoryError) else "")
            return self._fail(request, sink, f"{request.script_path}: {reason}", emitted=False)
        finally:
            if not waits:
                del requests[handle]

    def _make_room(self, request: LuaRequest) -> bool:
        """The VM holds more than a request may start with: a collection
        (a limit kill); whether there is room now."""
        self._limit_kill(request, None, "not enough memory: before the request started")
        return self._memory_used() <= self._memory_guard

    async def _run_waiting(
        self,
        request: LuaRequest,
        sink: OutputSink,
        r: Any,
        handle: int,
        cmd: Any,
        arg: Any,
        extra: Any,
    ) -> None:
        """The rest of a request whose first resume yielded: perform what it
        waits for, under request_timeout, until it ends."""
        lua_error = self._lua_error
        self.running[request] = r  # for traceback(): the slow-request log
        # request_timeout: the task is cancelled at the deadline; a wait
        # (sleep, socket, body) ends there.  Lua that never yields is the
        # instruction budget's job.
        expiries = None
        if self.request_timeout > 0:
            expiries = self._expiries
            if expiries is None or not expiries.loop().is_running():
                loop = asyncio.get_running_loop()
                expiries = self._expiries = deadlines.Expiries(loop, self.request_timeout, _expire)
            expiries.add(request, r, asyncio.current_task(expiries.loop()))
        released = False
        try:
            cmd, arg, extra, released = await self._perform(r, request, sink, cmd, arg, extra)
        except asyncio.CancelledError:
            self._abort(r)
            if not r[b"timed_out"]:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            cmd, arg, extra = b"timeout", None, None
        except lua_error as exc:
            # a failure in the driver itself (e.g. a bad header value
            # caught while building the header block)
            self._abort(r)
            self._limit_kill(request, r, exc)
            await self._fail(request, sink, f"{request.script_path}: {exc}", emitted=False)
            return
        except BaseException:
            self._abort(r)
            raise
        finally:
            if expiries is not None:
                expiries.discard(request)
            if not released:  # else the driver did (ngx.lua's ended)
                self.cosockets.release(r)  # sockets left open die with the request
                self._release(r)  # and semaphore waits
            self.running.pop(request, None)
            del self._requests[handle]
        if cmd == b"done":
            if arg:
                await sink.write(arg)
        elif cmd == b"error":
            message = arg.decode("utf-8", "replace")
            killed = self._limit_kill(request, r, message)
            if killed and not message.startswith(request.script_path):
                message = f"{request.script_path}: {message}"  # the log names the script
            await self._fail(request, sink, message, emitted=extra is not None)
        elif cmd == b"timeout":
            await self._time_out(request, sink, emitted=bool(r[b"emitted"]))
        else:
            self._abort(r)
            await self._fail(request, sink, f"unknown command {cmd!r} yielded", emitted=False)

    async def _perform(
        self, ctx: Any, request: Any, sink: Any, cmd: Any, arg: Any, extra: Any
    ) -> tuple[Any, Any, Any, bool]:
        """Perform what the coroutines of ``ctx`` (a request or a timer) yield
        until it ends; returns the last (cmd, arg, extra): "done" or "error",
        and whether the driver already let go of what the context held."""
        commands = self._commands
        perf_counter = time.perf_counter
        slow = self.slow_resume_warning
        while True:  # one coroutine: each command in turn
            handler = commands.get(cmd)
            if handler is None:
                break
            value = await handler(request, sink, arg)
            if type(value) is dict:  # a result with several parts: a Lua table
                value = self._lua.table_from(value, recursive=True)
            began = perf_counter()
            cmd, arg, extra = self._drive(ctx, time.time(), value)
            elapsed = perf_counter() - began
            if elapsed > slow:
                self._warn_slow(request, elapsed)
        if cmd == b"threads":  # light threads: thread.lua schedules them
            cmd, arg, extra = await self._perform_threads(ctx, request, sink, arg, extra)
            return cmd, arg, extra, False
        return cmd, arg, extra, cmd == b"done"

    async def _perform_threads(
        self, ctx: Any, request: Any, sink: Any, ops: Any, nops: Any
    ) -> tuple[Any, Any, Any]:
        """Several coroutines wait at once: each command is a task, and the
        thread whose command completes first is resumed first."""
        tasks: dict[int, asyncio.Task[Any]] = {}
        aborted = False
        perf_counter = time.perf_counter
        slow = self.slow_resume_warning
        try:
            self._start_ops(ops, nops, tasks, request, sink)
            while True:
                if not tasks:  # cannot happen: waits form a tree whose leaves are tasks
                    return b"error", b"every light thread waits and none can wake", None
                try:
                    await asyncio.wait(list(tasks.values()), return_when=asyncio.FIRST_COMPLETED)
                except asyncio.CancelledError:
                    # the front server aborted the request: its on_abort
                    # handler runs, the request goes on (once)
                    result = (
                        None
                        if aborted or ctx[b"timed_out"]
                        else self._client_abort(ctx, time.time())
                    )
                    if result is None:
                        raise
                    aborted = True
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    sink = _DISCARD  # the client is gone
                    self._requests[ctx[b"handle"]] = (request, sink)
                    cmd, arg, extra = result
                    if cmd != b"threads":
                        return cmd, arg, extra
                    self._start_ops(arg, extra, tasks, request, sink)
                    continue
                for tid, task in list(tasks.items()):
                    if not task.done() or tasks.get(tid) is not task:
                        continue  # still waiting, or killed meanwhile
                    del tasks[tid]
                    try:
                        value = task.result()
                    except Exception:
                        if not aborted:
                            raise
                        value = None  # a write to the vanished client
                    if type(value) is dict:
                        value = self._lua.table_from(value, recursive=True)
                    began = perf_counter()
                    cmd, arg, extra = self._drive_thread(ctx, time.time(), tid, value)
                    elapsed = perf_counter() - began
                    if elapsed > slow:
                        self._warn_slow(request, elapsed)
                    if cmd != b"threads":
                        return cmd, arg, extra
                    self._start_ops(arg, extra, tasks, request, sink)
        finally:
            for task in tasks.values():
                if task.done():
                    if not task.cancelled():
                        task.exception()  # retrieved: no "never retrieved" noise
                else:
                    task.cancel()

    def _start_ops(
        self, ops: Any, nops: Any, tasks: dict[int, asyncio.Task[Any]], request: Any, sink: Any
    ) -> None:
        """Start the commands thread.lua listed (id, cmd, arg, ...)."""
        for i in range(1, int(nops) + 1, 3):
            tid = int(ops[i])
            cmd = ops[i + 1]
            if cmd == b"kill":  # ngx.thread.kill: its wait is abandoned
                killed = tasks.pop(tid, None)
                if killed is not None:
                    killed.cancel()
                continue
            handler = self._commands.get(cmd)
            if handler is None:
                raise RuntimeError(f"unknown command {cmd!r} yielded")
            tasks[tid] = asyncio.ensure_future(handler(request, sink, ops[i + 2]))

    # -- init_script, init_worker_script (config) ---------------------------------

    def run_init_script(self, path: str) -> None:
        """Config's init_script (OpenResty's init_by_lua_file): run once,
        before any request, in the VM's shared globals, the ones every
        request's global table falls back to.  Raises LuaInitError: the
        worker must not serve without it."""
        self._run_init_file("init_script", b"init", path)

    def run_init_worker_script(self, path: str) -> bool:
        """Config's init_worker_script (init_worker_by_lua_file): run once
        the worker's event loop runs (it may start ngx.timer timers), before
        it accepts requests.  As in OpenResty an error is logged and the
        worker serves anyway; returns whether the script ran to its end."""
        try:
            self._run_init_file("init_worker_script", b"init_worker", path)
        except LuaInitError as exc:
            log.error("%s", exc)
            return False
        return True

    def _run_init_file(self, key: str, phase: bytes, path: str) -> None:
        path = os.path.abspath(path)
        try:
            with open(path, "rb") as f:
                source = f.read()
        except OSError as exc:
            raise LuaInitError(f"{key} error: cannot open {path}: {exc.strerror}") from exc
        try:
            ok, err = self._run_phase(phase, source, b"@" + os.fsencode(path))
        except (self._lua_error, MemoryError) as exc:  # raised outside Lua's protection
            ok, err = False, str(exc) or "not enough memory"
        if not ok:
            message = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
            raise LuaInitError(f"{key} error: {_expand_short_src(message, path)}")

    # -- timers (ngx.timer) ------------------------------------------------------

    async def _run_timer(self, timer_id: int, premature: bool, keep: bool) -> None:
        """Run timer ``timer_id``'s callback in its own context, no request."""
        lua_error = self._lua_error
        try:
            ctx, cmd, arg, extra = self._start_timer(timer_id, premature, time.time(), keep)
        except lua_error as exc:
            log.error("lua failed to run timer: %s, context: ngx.timer", exc)
            return
        try:
            cmd, arg, extra, _ = await self._perform(ctx, _TIMER, None, cmd, arg, extra)
        except lua_error as exc:
            self._abort(ctx)
            log.error("lua entry thread aborted: %s, context: ngx.timer", exc)
            return
        except BaseException:
            self._abort(ctx)
            raise
        finally:
            self.cosockets.release(ctx)
            self._release(ctx)
        if cmd == b"error":
            log.error(
                "lua entry thread aborted: runtime error: %s, context: ngx.timer",
                failures.clean_traceback(arg.decode("utf-8", "replace")),
            )
        elif cmd != b"done":
            log.error("unknown command %r yielded by a timer", cmd)

    def _drop_timer(self, timer_id: int, keep: bool) -> str:
        where = self._drop_timer_lua(timer_id, keep)
        return where.decode("utf-8", "replace") if isinstance(where, bytes) else str(where)

    async def shutdown(self, timeout: float) -> None:
        """The worker stops: pending timers run now with premature = true,
        running ones get ``timeout`` seconds (ngx.worker.exiting() is true)."""
        await self.timers.shutdown(timeout)

    # -- limits (fcgi_lua/limits.py) -----------------------------------------------

    def _limit_kill(self, request: LuaRequest, ctx: Any, failure: object) -> str | None:
        """Whether a failure was a limit's kill; if so, count it (and after
        a memory kill, collect).  Returns the limit's kind."""
        limit = self.lua_memory_limit
        if not limit:
            return self._classify(request, ctx, failure, full=False)
        full = self._memory_used() > limit * limits.MEMORY_FULL_SHARE
        if self._soft_memory:  # no allocator cap to lift
            return self._classify(request, ctx, failure, full=full)
        lua = self._lua
        # lupa pushes values (even a table key) outside Lua's protected
        # mode, where a failed allocation aborts the process: no cap while
        # Python looks at the failure and frees what the request held.
        lua.set_max_memory(0)
        try:
            return self._classify(request, ctx, failure, full=full)
        finally:
            lua.set_max_memory(limit)

    def _classify(
        self, request: LuaRequest, ctx: Any, failure: object, *, full: bool
    ) -> str | None:
        kind = None
        limit = ctx[b"limit"] if ctx is not None else None
        if limit == b"instructions":
            kind = "instructions"
        elif (
            limit == b"memory"
            or full
            or isinstance(failure, MemoryError)
            or str(failure).startswith("not enough")
        ):
            kind = "memory"
        if kind is None:
            return None
        metrics.limit_kill(kind, request.script_path)
        if kind == "memory":
            ctx = ctx if ctx is not None else self._context()
            if ctx is not None:
                self._abort(ctx)  # the driver lets go of it
                ctx[b"co"] = None  # and so does run(): the stack is garbage
            self._collect_after_kill(request.script_path)
        return kind

    def _collect_after_kill(self, script: str) -> None:
        """A full collection (the cap is lifted: LuaJIT has no emergency
        collection); recycle the worker if the VM is still nearly full."""
        limit = self.lua_memory_limit
        self._collect()
        used = self._memory_used()
        if used > limit * limits.MEMORY_RECYCLE_SHARE:
            log.error(
                "%s: the Lua VM still holds %d of its %d bytes (lua_memory_limit) after a "
                "collection; recycling this worker",
                script,
                used,
                limit,
            )
            if self.on_exhausted is not None:
                self.on_exhausted()

    async def _time_out(self, request: LuaRequest, sink: OutputSink, *, emitted: bool) -> None:
        log.error(
            "%s: request timed out after %g s (request_timeout); its coroutine, light "
            "threads and sockets were closed%s",
            request.script_path,
            self.request_timeout,
            failures.request_context(request.params),
        )
        metrics.limit_kill("timeout", request.script_path)
        if not emitted:  # else: headers are out, all we can do is end it
            await sink.write(error_response(504, head=_is_head(request.params)))

    def traceback(self, request: LuaRequest) -> str | None:
        """Where ``request``'s Lua code is now (it is suspended: only one
        coroutine runs at a time, and not while Python asks); None when it
        is not running Lua (not started, or over)."""
        ctx = self.running.get(request)
        if ctx is None:
            return None
        text = self._traceback_of(ctx)  # "\nstack traceback:\n\t..."
        if isinstance(text, bytes):
            # the script's frames, as in an error's traceback (failures.py)
            script = request.script_path
            where = _expand_short_src(text.decode("utf-8", "replace"), script)
            cleaned = failures.clean_traceback(where, script)
            return cleaned.strip()
        return None

    def _memory_used(self) -> int:
        """Bytes the VM holds, as its limit counts them: the allocator's
        count on PUC Lua, the collector's on LuaJIT (the soft limit)."""
        if self._soft_memory:
            return self.lua_memory()
        used: int = self._lua.get_memory_used()
        return used

    def lua_memory(self) -> int:
        """Bytes the VM holds now (collectgarbage("count"): cheap, no collection)."""
        return int(self._memory_kb() * 1024)

    def collect_garbage(self) -> int:
        """A full collection now; the bytes the VM still holds.  The server
        calls it when a burst is over: an idle VM allocates nothing, so its
        incremental collector would leave the burst's garbage in place."""
        return int(self._collect() * 1024)

    def _warn_slow(self, request: LuaRequest, seconds: float) -> None:
        log.warning(
            "%s: one resume ran %.3f s without yielding: a blocking call (os.execute, "
            "io.popen, LuaSocket...) or a long computation stalls every request of this worker",
            request.script_path,
            seconds,
        )

    async def _fail(
        self,
        request: LuaRequest,
        sink: OutputSink,
        message: str,
        *,
        emitted: bool,
        prefix: str = "lua entry thread aborted: runtime error: ",
    ) -> None:
        """Log a request's failure (``prefix`` "" for a script that does not
        load: its message says so) and answer 500 unless headers are out."""
        script = request.script_path
        message = failures.clean_traceback(_expand_short_src(message, script), script)
        text = prefix + message
        log.error("%s%s", text, failures.request_context(request.params))
        metrics.lua_error(request.script_path)
        if self.log_to_stderr:
            sink.stderr(b"[error] " + text.encode("utf-8", "replace") + b"\n")
        if emitted:
            return  # headers are out: all we can do is end the response
        head = _is_head(request.params)
        if self.debug:
            body = (message + "\n").encode("utf-8", "replace")
            block = header_block(
                500,
                [(b"Content-Type", b"text/plain"), (b"Content-Length", str(len(body)).encode())],
            )
        else:
            body = error_page(500)
            block = header_block(
                500,
                [(b"Content-Type", b"text/html"), (b"Content-Length", str(len(body)).encode())],
            )
        await sink.write(block if head else block + body)


def worker_pids(worker_count: int) -> list[int]:
    """ngx.worker.pids(): this process alone without a master (workers = 1),
    else the master's live children (the workers; after a reload, also the
    old ones still finishing their requests), read from /proc (Linux)."""
    own = os.getpid()
    if worker_count <= 1:
        return [own]
    master = os.getppid()
    pids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{master}/task"):
            with open(f"/proc/{master}/task/{task}/children", "rb") as f:
                pids.extend(int(pid) for pid in f.read().split())
    except (OSError, ValueError):
        return [own]
    pids.sort()
    return pids if own in pids else [own, *pids]


def set_package_paths(lua: Any, path: str, cpath: str, prefix: str = "") -> None:
    """``lua_package_path`` / ``lua_package_cpath`` as nginx's directives:
    the value replaces the search path, ``;;`` in it stands for the
    default one (lupa's, plus Debian's /usr/share/lua/5.x), and ``$prefix``
    or ``${prefix}`` for ``prefix`` (ngx.config.prefix())."""
    package = lua.globals().package
    for key, value in ((b"path", path), (b"cpath", cpath)):
        if value:
            value = value.replace("$prefix", prefix).replace("${prefix}", prefix)
            default = package[key].decode("utf-8", "replace").strip(";")
            package[key] = value.replace(";;", ";" + default + ";").strip(";").encode()


class CgiMarker:
    """Which scripts run in CGI mode (docs/cgi.md): those whose path,
    relative to the document root, matches one of ``cgi_patterns``
    (fnmatch; ``*`` crosses ``/``).  The ``#!lua`` first-line marker is
    checked in Lua, when the chunk is compiled."""

    def __init__(self, root: str, patterns: Sequence[str]) -> None:
        self._root = os.path.realpath(root) if root else ""
        self._patterns = tuple(patterns)
        self._known: dict[str, bool] = {}

    def __call__(self, path: str) -> bool:
        if not self._patterns:
            return False
        known = self._known.get(path)
        if known is None:
            rel = path
            if self._root and path.startswith(self._root + os.sep):
                rel = path[len(self._root) + 1 :]
            known = any(fnmatch.fnmatchcase(rel, p) for p in self._patterns)
            if len(self._known) < 10_000:  # bounded: paths come from requests
                self._known[path] = known
        return known


class _DiscardSink:
    """Where output goes once the client went away (after ngx.on_abort)."""

    async def write(self, data: bytes) -> None:
        return None

    def write_nowait(self, data: bytes) -> None:
        return None

    def stderr(self, data: bytes) -> None:
        return None


_DISCARD = _DiscardSink()


class _Null:
    """ngx.null where the runtime cannot make the NULL light userdata (PUC Lua,
    LuaJIT 2.0; ngx.lua): a unique userdata that prints as one."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "userdata: NULL"


def _expire(ctx: Any, task: asyncio.Task[Any] | None) -> None:
    """request_timeout reached: mark the request, cancel its task."""
    if task is not None and not task.done() and not ctx[b"dead"]:
        ctx[b"timed_out"] = True
        task.cancel()


def _lua_error(runtime: Any) -> type[BaseException]:
    module = importlib.import_module(type(runtime).__module__)
    error: type[BaseException] = module.LuaError
    return error
