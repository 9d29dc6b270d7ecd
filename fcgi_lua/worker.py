"""A serving process: the worker's main loop.

Owns one process that serves requests, forked by the master
(``fcgi_lua.workers``) or alone (``workers = 1``): it creates the event
loop (uvloop) and the Lua VM in this process, after any fork; runs the
init scripts; starts the ``Server`` on the inherited (or its own) sockets;
beats the master's heartbeat; samples metrics; and turns signals into a
graceful or fast stop, a log reopen, or (alone) a refused reload.  Signal
handlers only queue: the stop happens on the loop.

It must never bind sockets for a master, fork, or watch other processes
(that is the master's job), nor parse the command line (``fcgi_lua.cli``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fcgi_lua import __version__, metrics
from fcgi_lua.accesslog import AccessLog
from fcgi_lua.config import Config
from fcgi_lua.listeners import listen_error_text
from fcgi_lua.server import Server
from fcgi_lua.workers import MasterWatch, reopen_log_files

log = logging.getLogger("fcgi_lua")


def run_loop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run on uvloop (libuv) when available, plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result: int = runner.run(main())
    return result


def make_engine(config: Config, worker_id: int = 0) -> Any:
    # The Lua VM is created here, in the process that serves (after any fork).
    from fcgi_lua.lua import LuaEngine

    engine = LuaEngine.from_config(config, worker_id, _open_shared_dicts(config))
    # OpenResty's init_by_lua_file, then init_worker_by_lua_file: called
    # with the loop running (its timers need it), before any request.  A
    # failed init_script raises LuaInitError: the worker must not serve.
    if config.init_script:
        engine.run_init_script(config.init_script)
    if config.init_worker_script:
        engine.run_init_worker_script(config.init_worker_script)
    return engine


def _open_shared_dicts(config: Config) -> Any:
    # ngx.shared.DICT: the store the master prepared, opened in this process
    # (an LMDB environment must never cross a fork).
    if not config.shared_dicts:
        return None
    from fcgi_lua import shdict

    path = shdict.store_path(config.shared_dict_path, config.listen)
    return shdict.SharedDicts(path, config.shared_dicts)


# -- serve ---------------------------------------------------------------------


async def serve(
    config: Config,
    sockets: Sequence[socket.socket] | None = None,
    worker_id: int = 0,
    heartbeat_fd: int | None = None,
) -> int:
    """One serving process: the only one (workers = 1) or a forked worker."""
    from fcgi_lua.lua import LuaInitError

    try:
        engine = make_engine(config, worker_id)
    except LuaInitError as exc:  # the master retries with a back-off
        log.error("%s", exc)
        log.error("init_script failed: pid %d exits without accepting requests", os.getpid())
        return 1
    recorder = metrics.start_worker(config.root)  # before Server: it reads it
    server = Server(config, engine)
    access_log = None
    if config.access_log != "off":
        try:
            access_log = AccessLog(config.access_log)
        except OSError as exc:
            log.error("cannot open access_log: %s", exc)
            return 1
        server.set_access_log(access_log)
    # Everything allocated so far (modules, the Lua VM's Python side) lives
    # as long as the worker: keep the collector off it, and collect young
    # objects less often; a request allocates few cycles.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        await server.start(sockets)
    except OSError as exc:
        log.error("%s", listen_error_text(exc))
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    timeout = config.shutdown_timeout

    def graceful() -> None:
        stop.set()

    def fast() -> None:
        nonlocal timeout
        timeout = 0.0
        stop.set()

    # Signal handlers only queue; the stop happens on the loop below.
    loop.add_signal_handler(signal.SIGTERM, graceful)
    loop.add_signal_handler(signal.SIGQUIT, graceful)
    loop.add_signal_handler(signal.SIGINT, fast if sockets is not None else graceful)
    loop.add_signal_handler(signal.SIGUSR1, reopen_log_files)
    if sockets is None:
        # A single process has no master to start new workers: a reload
        # cannot be graceful, and dying on SIGHUP (its default) drops
        # every request in flight.  Keep serving and say why.
        loop.add_signal_handler(signal.SIGHUP, _reload_needs_a_master)
    server.on_max_requests = graceful
    engine.on_exhausted = graceful  # lua_memory_limit: a VM too full to go on
    # the heartbeat; if the master dies, stop as gracefully as on SIGTERM
    watch = MasterWatch(heartbeat_fd, graceful) if heartbeat_fd is not None else None
    if watch is not None:
        watch.start()
    sampler: asyncio.TimerHandle | None = None
    if recorder is not None or access_log is not None:

        def sample() -> None:
            nonlocal sampler
            if recorder is not None:
                recorder.sample(server.in_flight, server.requests_served)
                recorder.lua_memory = engine.lua_memory()
                recorder.flush()
            if access_log is not None:
                access_log.flush()
            sampler = loop.call_later(metrics.FLUSH_INTERVAL, sample)

        sample()
    log.info(
        "fcgi-lua %s serving %s (runtime %s, pid %d)",
        __version__,
        config.root,
        config.lua_runtime,
        os.getpid(),
    )
    await stop.wait()
    log.info("stopping (pid %d)", os.getpid())
    # Pending ngx.timer callbacks run now (premature), alongside the
    # requests still finishing; both get the same timeout.
    await asyncio.gather(server.stop(timeout), engine.shutdown(timeout))
    if watch is not None:
        watch.stop()
    if sampler is not None:
        sampler.cancel()
    if recorder is not None:
        recorder.sample(0, server.requests_served)
    metrics.stop_worker()  # its last counts
    if access_log is not None:
        access_log.close()
    log.info("stopped (pid %d)", os.getpid())
    return 0


def _reload_needs_a_master() -> None:
    log.warning("SIGHUP ignored: reloading needs workers > 1 (a master); restart to reload")


def worker_main(
    config: Config, sockets: Sequence[socket.socket], worker_id: int, heartbeat_fd: int
) -> int:
    return run_loop(lambda: serve(config, sockets, worker_id, heartbeat_fd))
