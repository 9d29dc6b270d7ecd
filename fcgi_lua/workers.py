"""The prefork master: bind once, fork workers, watch them, reload, stop.

The master is plain synchronous Python: no event loop and no Lua VM, so a
fork copies nothing a worker must not share.  Each worker creates its own
uvloop loop and Lua VM after the fork and serves on the inherited sockets.

Signal handlers only queue the signal and wake the loop (a self-pipe); the
loop handles it in ``handle_<signal>``.  Workers prove their event loop is
alive by writing a byte to a pipe every HEARTBEAT_INTERVAL; one that stays
silent for ``worker_hang_timeout`` (a script stuck in a blocking call) is
killed and replaced, and so is one whose resident memory passes
``worker_memory_limit`` (the backstop of the Lua memory limit: read from
/proc, so it holds while the worker is stuck in one C call).

A worker whose master is gone (killed with SIGKILL) stops as gracefully as
on SIGTERM: ``MasterWatch``.

Signals: SIGHUP reload (config re-read; new workers start, old ones finish
their requests), SIGTERM/SIGQUIT graceful stop, SIGINT fast stop, SIGUSR1
reopen log files (master and workers).  SIGCHLD reaps and replaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fcgi_lua import metrics
from fcgi_lua.config import Config, ConfigError
from fcgi_lua.limits import MEMORY_CHECK_INTERVAL, resident_bytes

log = logging.getLogger("fcgi_lua.master")

# A worker's loop writes a heartbeat this often; the master checks as often.
HEARTBEAT_INTERVAL = 1.0
# A worker that dies sooner than this after its start counts as a crash
# loop: replacements wait 0.5 s, 1 s, 2 s ... up to MAX_BACKOFF between tries.
QUICK_DEATH = 2.0
MAX_BACKOFF = 30.0
# The status of a worker a script ended with os.exit; the worker logged
# which script (fcgi_lua/lua/cgi.lua, "the worker's os.exit", same number).
SCRIPT_EXIT_STATUS = 70

WorkerMain = Callable[[Config, Sequence[socket.socket], int, int], int]


@dataclass
class Worker:
    pid: int
    slot: int
    generation: int
    heartbeat_fd: int
    started: float
    last_beat: float
    retiring: bool = False
    killed_for_hang: bool = False
    killed_for_memory: bool = False
    # Its first heartbeat came: the VM and the init scripts are done and
    # its loop accepts (worker.serve ticks right after server.start).
    ready: bool = False


@dataclass
class Master:
    config: Config
    reload_config: Callable[[], Config]
    worker_main: WorkerMain
    sockets: list[socket.socket] = field(default_factory=list)
    workers: dict[int, Worker] = field(default_factory=dict)
    generation: int = 0
    stopping: bool = False
    _signals: list[int] = field(default_factory=list)
    _wakeup_r: int = -1
    _wakeup_w: int = -1
    _crashes: int = 0
    _next_spawn: float = 0.0
    # A reload's old generation: stopped once the new one is ready.
    _to_retire: list[Worker] = field(default_factory=list)

    # -- main loop -------------------------------------------------------------

    def run(self, sockets: list[socket.socket]) -> int:
        self.sockets = sockets
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        for handled in (
            signal.SIGHUP,
            signal.SIGTERM,
            signal.SIGQUIT,
            signal.SIGINT,
            signal.SIGUSR1,
            signal.SIGCHLD,
        ):
            signal.signal(handled, self._queue_signal)
        log.info(
            "master %d starting %d worker(s) (runtime %s)",
            os.getpid(),
            self.config.workers,
            self.config.lua_runtime,
        )
        self._maintain()
        while self.workers or not self.stopping:
            self._wait(self._next_turn())
            for signum in self._take_signals():
                handler = getattr(self, f"handle_{signal.Signals(signum).name.lower()}")
                handler()
            self._reap()
            self._check_heartbeats()
            self._check_memory()
            if not self.stopping:
                self._maintain()
                self._retire_when_replaced()
        log.info("master %d stopped", os.getpid())
        return 0

    def _next_turn(self) -> float:
        """Seconds until the loop must run again: the heartbeat check, or a
        replacement whose crash-loop back-off ends sooner."""
        timeout = HEARTBEAT_INTERVAL / 2
        if self.config.worker_memory_limit:
            timeout = min(timeout, MEMORY_CHECK_INTERVAL)
        backoff_left = self._next_spawn - time.monotonic()
        if backoff_left > 0 and not self.stopping:
            timeout = min(timeout, backoff_left)
        return timeout

    def _queue_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)
        # A full pipe means the loop is awake anyway.
        with contextlib.suppress(OSError):
            os.write(self._wakeup_w, b"!")

    def _take_signals(self) -> list[int]:
        taken, self._signals = self._signals, []
        return taken

    def _wait(self, timeout: float) -> None:
        fds = [self._wakeup_r, *(w.heartbeat_fd for w in self.workers.values())]
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        now = time.monotonic()
        for fd in ready:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                continue
            if fd == self._wakeup_r:
                continue
            for worker in self.workers.values():
                if worker.heartbeat_fd == fd and data:
                    worker.last_beat = now
                    worker.ready = True

    # -- workers -----------------------------------------------------------------

    def _maintain(self) -> None:
        active = [w for w in self.workers.values() if not w.retiring]
        free = sorted(set(range(self.config.workers)) - {w.slot for w in active})
        for slot in free:
            if time.monotonic() < self._next_spawn:
                return
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        beat_r, beat_w = os.pipe()
        os.set_blocking(beat_r, False)
        config = self.config
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                os.close(beat_r)
                os.close(self._wakeup_r)
                os.close(self._wakeup_w)
                for worker in self.workers.values():
                    os.close(worker.heartbeat_fd)
                # Not the master's handlers: they queue into this child's
                # copy of the master, and a SIGTERM sent before the worker's
                # loop installs its own would be lost (the master would wait
                # for this worker forever).  Until then a stop signal ends
                # the worker at once: it holds no request yet.
                for signum in (
                    signal.SIGHUP,
                    signal.SIGUSR1,
                    signal.SIGCHLD,
                    signal.SIGTERM,
                    signal.SIGQUIT,
                    signal.SIGINT,
                ):
                    signal.signal(signum, signal.SIG_DFL)
                os.environ["FCGI_LUA_HEARTBEAT_FD"] = str(beat_w)
                code = self.worker_main(config, self.sockets, slot, beat_w)
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(beat_w)
        now = time.monotonic()
        self.workers[pid] = Worker(pid, slot, self.generation, beat_r, now, now)
        log.info("started worker %d (slot %d)", pid, slot)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            os.close(worker.heartbeat_fd)
            metrics.process_dead(pid)  # its per-worker gauges go
            lived = time.monotonic() - worker.started
            if os.WIFSIGNALED(status):
                how = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
            elif os.WEXITSTATUS(status) == SCRIPT_EXIT_STATUS:
                how = "ended by a script's os.exit (the worker logged which)"
            else:
                how = f"exited with status {os.WEXITSTATUS(status)}"
            clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            if worker.retiring or self.stopping:
                log.info("worker %d %s after %.1fs", pid, how, lived)
            elif clean:
                log.info("worker %d recycled (%s); replacing it", pid, how)
                metrics.worker_restart("max_requests")
                self._crashes = 0
            else:
                cause = "crash"
                if worker.killed_for_hang:
                    cause = "hang"
                elif worker.killed_for_memory:
                    cause = "memory"
                reason = {
                    "crash": "",
                    "hang": " (hung)",
                    "memory": " (exceeded its memory limit, worker_memory_limit)",
                }[cause]
                metrics.worker_restart(cause)
                if lived < QUICK_DEATH:
                    self._crashes += 1
                    delay = min(MAX_BACKOFF, 0.5 * 2 ** (self._crashes - 1))
                    self._next_spawn = time.monotonic() + delay
                    log.error(
                        "worker %d %s%s after %.1fs; replacing it in %.1fs (crash %d in a row)",
                        pid, how, reason, lived, delay, self._crashes,
                    )  # fmt: skip
                else:
                    self._crashes = 0
                    log.error("worker %d %s%s after %.1fs; replacing it", pid, how, reason, lived)

    def _check_heartbeats(self) -> None:
        now = time.monotonic()
        timeout = self.config.worker_hang_timeout
        for worker in self.workers.values():
            if worker.killed_for_hang or now - worker.last_beat < timeout:
                continue
            log.error(
                "worker %d sent no heartbeat for %.1fs (worker_hang_timeout); killing it",
                worker.pid,
                now - worker.last_beat,
            )
            worker.killed_for_hang = True
            self._kill(worker.pid, signal.SIGKILL)

    def _check_memory(self) -> None:
        """Kill a worker whose resident memory passed worker_memory_limit:
        only its own requests are lost, and the master replaces it."""
        limit = self.config.worker_memory_limit
        if not limit:
            return
        for worker in self.workers.values():
            if worker.killed_for_memory or worker.killed_for_hang:
                continue
            rss = resident_bytes(worker.pid)
            if rss is None or rss <= limit:
                continue
            log.error(
                "worker %d exceeded its memory limit: %d bytes resident, worker_memory_limit "
                "is %d; killing it",
                worker.pid,
                rss,
                limit,
            )
            worker.killed_for_memory = True
            self._kill(worker.pid, signal.SIGKILL)

    def _signal_workers(self, signum: int, workers: Sequence[Worker] | None = None) -> None:
        for worker in list(self.workers.values()) if workers is None else workers:
            self._kill(worker.pid, signum)

    @staticmethod
    def _kill(pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    # -- signals -------------------------------------------------------------------

    def handle_sighup(self) -> None:
        if self.stopping:
            log.warning("reload ignored: stopping")
            return
        try:
            config = self.reload_config()
        except ConfigError as exc:
            log.error("reload refused, keeping the running workers: %s", exc)
            return
        if sorted(config.listen) != sorted(self.config.listen):
            log.warning("listen addresses cannot change on reload; restart to change them")
            config.listen = self.config.listen
        if config.status_path and metrics.directory() is None:
            metrics.setup(config.metrics_dir)  # before the new workers fork
        old = [w for w in self.workers.values() if not w.retiring]
        for worker in old:
            worker.retiring = True
        # (a previous reload's old workers may still wait for their successors)
        self._to_retire.extend(old)
        self.config = config
        self.generation += 1
        self._crashes = 0
        self._next_spawn = 0.0
        log.info("reloading: starting %d new worker(s)", config.workers)
        self._maintain()
        self._retire_when_replaced()

    def _retire_when_replaced(self) -> None:
        """Once every worker of the new generation is ready, the old one
        stops accepting and finishes its requests (SIGQUIT).  Until then it
        serves on: a new generation that cannot start (a broken
        init_script, say) crash-loops with its back-off while the old
        workers keep the service up."""
        if not self._to_retire:
            return
        new = [w for w in self.workers.values() if w.generation == self.generation]
        if len(new) < self.config.workers or not all(w.ready for w in new):
            return
        old, self._to_retire = self._to_retire, []
        alive = [w for w in old if w.pid in self.workers]
        log.info("reload: %d new worker(s) ready; retiring %d old one(s)", len(new), len(alive))
        self._signal_workers(signal.SIGQUIT, alive)

    def handle_sigterm(self) -> None:
        log.info("graceful stop")
        self.stopping = True
        self._stop_listening()
        self._signal_workers(signal.SIGTERM)

    handle_sigquit = handle_sigterm

    def handle_sigint(self) -> None:
        log.info("fast stop")
        self.stopping = True
        self._stop_listening()
        self._signal_workers(signal.SIGINT)

    def _stop_listening(self) -> None:
        # The workers close their copies as they stop.  Were the master to
        # keep its own until the end, connections would queue in a backlog
        # nobody accepts from, for up to shutdown_timeout, then be reset;
        # refused at once, nginx answers 502 or tries its next server.
        close_listeners(self.sockets)

    def handle_sigusr1(self) -> None:
        reopen_log_files()
        self._signal_workers(signal.SIGUSR1)

    def handle_sigchld(self) -> None:
        pass  # reaping happens on every turn of the loop


def close_listeners(sockets: Sequence[socket.socket]) -> None:
    """Close listening sockets, removing the files of Unix ones first (a
    connect then fails at once instead of finding a dead socket)."""
    for sock in sockets:
        if sock.fileno() == -1:
            continue  # closed already
        if sock.family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                os.unlink(sock.getsockname())
        sock.close()


def reopen_log_files() -> None:
    """SIGUSR1: logrotate moved our files; open them again by name."""
    for name in ("fcgi_lua", "fcgi_lua.access", None):
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    handler.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()


class MasterWatch:
    """A worker's link to its master: a heartbeat every HEARTBEAT_INTERVAL
    on the pipe, and the notice that the master is gone.

    The master is gone when the pipe breaks (EPIPE: its read end died with
    it) or the worker has been re-parented.  Then nobody will replace this
    worker, reap it or stop it, and a front server may still be waiting on
    the requests it holds: ``on_master_gone`` runs once (the worker stops
    gracefully: stops accepting, finishes its requests within
    shutdown_timeout, exits), and the heartbeats stop.  Self-contained: the
    worker loop creates it, ``start``s it on its running loop and ``stop``s
    it at the end.
    """

    def __init__(
        self,
        heartbeat_fd: int,
        on_master_gone: Callable[[], None],
        interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.fd = heartbeat_fd
        self.on_master_gone = on_master_gone
        self.interval = interval
        self.master_pid = os.getppid()
        self.master_gone = False
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        os.set_blocking(self.fd, False)
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        if not self._beat() or os.getppid() != self.master_pid:
            self.master_gone = True
            self._timer = None
            log.warning(
                "master %d is gone: worker %d stops accepting and finishes its requests "
                "(shutdown_timeout)",
                self.master_pid,
                os.getpid(),
            )
            self.on_master_gone()
            return
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _beat(self) -> bool:
        """Tell the master this loop is alive; False when it is gone."""
        try:
            os.write(self.fd, b".")
        except BlockingIOError:
            pass  # the master is behind on reading: it knows we are alive
        except OSError:
            return False  # EPIPE: nobody holds the read end any more
        return True
