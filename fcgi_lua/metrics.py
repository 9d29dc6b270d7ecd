"""Metrics: what the workers count, shared through prometheus-client's
multiprocess directory, read back by the status page (``fcgi_lua.status``).

Every function here is a no-op until the process enabled metrics (fcgi-lua
does when ``status_path`` is set), so other modules call them freely:

    metrics.request_finished(script, status, seconds)
    metrics.lua_error(script)
    metrics.limit_kill(kind, script)        # kind: "instructions", "timeout", "memory"
    metrics.slow_request(script)
    metrics.worker_restart(reason)          # master side: "crash", "hang", "memory", "max_requests"
    metrics.set_lua_memory(nbytes)
    metrics.set_shdict_usage(zone, used, capacity)

A request must stay cheap: a worker counts into plain dicts and lists (a
dict increment and a bisect per request), and ``flush()`` hands the totals
to prometheus-client once a second (and before the status page is built),
whose multiprocess values are mmap writes of ~1 µs each, too dear to pay
several times per request.  So another worker's numbers on the status
page are up to FLUSH_INTERVAL old; a worker killed with SIGKILL loses at
most its last interval.

The directory (``PROMETHEUS_MULTIPROC_DIR`` for prometheus-client) is set
up by the master before it forks, emptied at start; the master marks a
worker dead when it reaps it (its "live" gauges go), and counts restarts.
This module never does network I/O and never imports Lua.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
import time
from bisect import bisect_left
from typing import Any

# How often a worker hands its counts to the shared directory.
FLUSH_INTERVAL = 1.0
# Scripts are few, but a site with thousands of files must not turn into
# thousands of time series per status code: scripts beyond this many are
# counted under OTHER_SCRIPT.
MAX_SCRIPTS = 200
OTHER_SCRIPT = "other"
# Requests that never reached a script (rejected names, 503s, 413s): their
# names come from the client, so they never become labels.
NO_SCRIPT = ""
# Latency buckets (seconds): a hello-world page takes ~0.1 ms in the
# worker, and the long tail is scripts that wait on sleeps and sockets.
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PREFIX = "fcgi_lua_"

_directory: str | None = None
_owns_directory = False
_recorder: Recorder | None = None
_master_metrics: dict[str, Any] = {}
_value_class: Any = None


# -- the directory (master, or the single process) ------------------------------


def setup(path: str = "") -> str:
    """Enable multiprocess metrics in this process and its future children.

    ``path`` "" makes a private temp dir (removed by ``teardown``); a given
    directory is created if needed and emptied of old ``*.db`` files (left
    by a previous run, they would add up with this one's).  Idempotent.
    """
    global _directory, _owns_directory
    if _directory is not None:
        return _directory
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.unlink(stale)
        _owns_directory = False
    else:
        path = tempfile.mkdtemp(prefix="fcgi-lua-metrics-")
        _owns_directory = True
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    from prometheus_client import values

    # prometheus-client picks its value class when first imported; choose it
    # now, whatever imported it first.
    global _value_class
    _value_class = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    values.ValueClass = _value_class
    _directory = path
    from prometheus_client import Counter, Gauge

    _master_metrics["restarts"] = Counter(
        PREFIX + "worker_restarts",
        "Workers the master replaced, by reason (crash, hang, memory, max_requests).",
        ["reason"],
        registry=None,
    )
    start = Gauge(
        PREFIX + "start_time_seconds",
        "When fcgi-lua (its master) started, as a Unix time.",
        registry=None,
        multiprocess_mode="max",
    )
    start.set(time.time())
    return path


def teardown() -> None:
    """Forget the directory; remove it if ``setup`` made it."""
    global _directory, _owns_directory, _recorder, _value_class
    from prometheus_client import values

    if _value_class is not None:
        _value_class.close_all_files()
        _value_class = None
    if _directory is not None and _owns_directory:
        shutil.rmtree(_directory, ignore_errors=True)
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    values.ValueClass = values.MutexValue
    _directory = None
    _owns_directory = False
    _recorder = None
    _master_metrics.clear()


def directory() -> str | None:
    return _directory


def enabled() -> bool:
    return _recorder is not None


def process_dead(pid: int) -> None:
    """The master reaped ``pid``: its per-worker gauges go."""
    if _directory is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, _directory)  # type: ignore[no-untyped-call]


def worker_restart(reason: str) -> None:
    restarts = _master_metrics.get("restarts")
    if restarts is not None:
        restarts.labels(reason).inc()


# -- a worker's counts ------------------------------------------------------------


class Recorder:
    """One worker's counts since the last flush, and its prometheus metrics."""

    def __init__(self, root: str = "") -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.root = root.rstrip("/")
        self.started = time.time()
        self._labels: dict[str, str] = {}
        # (script label, status) -> count; script label -> [bucket counts..., sum]
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, list[float]] = {}
        self.lua_errors: dict[str, int] = {}
        self.limit_kills: dict[tuple[str, str], int] = {}
        self.slow_requests: dict[str, int] = {}
        self.shdicts: dict[str, tuple[int, int]] = {}
        self.lua_memory = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0
        self._requests = Counter(
            PREFIX + "requests",
            "Requests answered, by script and status.",
            ["script", "status"],
            registry=None,
        )
        self._latency = Histogram(
            PREFIX + "request_duration_seconds",
            "Time from dispatch to the last byte handed to the front server, by script.",
            ["script"],
            buckets=BUCKETS,
            registry=None,
        )
        self._lua_errors = Counter(
            PREFIX + "lua_errors",
            "Requests that ended in a Lua error, by script.",
            ["script"],
            registry=None,
        )
        self._limit_kills = Counter(
            PREFIX + "limit_kills",
            "Requests stopped by a limit (instructions, timeout, memory), by script.",
            ["kind", "script"],
            registry=None,
        )
        self._slow = Counter(
            PREFIX + "slow_requests",
            "Requests that ran longer than slow_request_threshold, by script.",
            ["script"],
            registry=None,
        )
        self._in_flight = Gauge(
            PREFIX + "requests_in_flight",
            "Requests in flight in each worker.",
            multiprocess_mode="liveall",
            registry=None,
        )
        self._max_in_flight = Gauge(
            PREFIX + "requests_in_flight_max",
            "Most requests each worker had in flight at once since it started.",
            multiprocess_mode="liveall",
            registry=None,
        )
        self._served = Gauge(
            PREFIX + "worker_requests",
            "Requests each worker answered since it started.",
            multiprocess_mode="liveall",
            registry=None,
        )
        self._worker_start = Gauge(
            PREFIX + "worker_start_time_seconds",
            "When each worker started, as a Unix time.",
            multiprocess_mode="liveall",
            registry=None,
        )
        self._lua_memory = Gauge(
            PREFIX + "lua_memory_bytes",
            'Memory of each worker\'s Lua VM (collectgarbage("count")).',
            multiprocess_mode="liveall",
            registry=None,
        )
        self._shdict_used = Gauge(
            PREFIX + "shdict_used_bytes",
            "Bytes used in each ngx.shared zone.",
            ["zone"],
            multiprocess_mode="mostrecent",
            registry=None,
        )
        self._shdict_capacity = Gauge(
            PREFIX + "shdict_capacity_bytes",
            "Capacity of each ngx.shared zone.",
            ["zone"],
            multiprocess_mode="mostrecent",
            registry=None,
        )
        self._worker_start.set(self.started)
        self._in_flight.set(0)
        self._served.set(0)

    def label(self, script: str) -> str:
        """The script's label: its path under root, "/x.lua"; bounded."""
        cached = self._labels.get(script)
        if cached is not None:
            return cached
        if len(self._labels) >= MAX_SCRIPTS:
            return OTHER_SCRIPT
        name = script
        if self.root and script.startswith(self.root + "/"):
            name = script[len(self.root) :]
        self._labels[script] = name
        return name

    def request_finished(self, script: str, status: int, seconds: float) -> None:
        name = self.label(script) if script else NO_SCRIPT
        key = (name, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        counts = self.latency.get(name)
        if counts is None:
            counts = self.latency[name] = [0.0] * (len(BUCKETS) + 2)
        counts[bisect_left(BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def lua_error(self, script: str) -> None:
        name = self.label(script)
        self.lua_errors[name] = self.lua_errors.get(name, 0) + 1

    def limit_kill(self, kind: str, script: str) -> None:
        key = (kind, self.label(script))
        self.limit_kills[key] = self.limit_kills.get(key, 0) + 1

    def slow_request(self, script: str) -> None:
        name = self.label(script)
        self.slow_requests[name] = self.slow_requests.get(name, 0) + 1

    def sample(self, in_flight: int, served: int) -> None:
        """The worker's state now (called by the flush timer)."""
        self.in_flight = in_flight
        self.served = served

    def flush(self) -> None:
        """Hand the counts since the last flush to the shared directory."""
        if self.requests:
            requests, self.requests = self.requests, {}
            for (name, status), count in requests.items():
                self._requests.labels(name, str(status)).inc(count)
        if self.latency:
            latency, self.latency = self.latency, {}
            for name, counts in latency.items():
                _add_observations(self._latency.labels(name), counts)
        if self.lua_errors:
            errors, self.lua_errors = self.lua_errors, {}
            for name, count in errors.items():
                self._lua_errors.labels(name).inc(count)
        if self.limit_kills:
            kills, self.limit_kills = self.limit_kills, {}
            for (kind, name), count in kills.items():
                self._limit_kills.labels(kind, name).inc(count)
        if self.slow_requests:
            slow, self.slow_requests = self.slow_requests, {}
            for name, count in slow.items():
                self._slow.labels(name).inc(count)
        if self.shdicts:
            shdicts, self.shdicts = self.shdicts, {}
            for zone, (used, capacity) in shdicts.items():
                self._shdict_used.labels(zone).set(used)
                self._shdict_capacity.labels(zone).set(capacity)
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._in_flight.set(self.in_flight)
        self._max_in_flight.set(self.max_in_flight)
        self._served.set(self.served)
        self._lua_memory.set(self.lua_memory)


def _add_observations(child: Any, counts: list[float]) -> None:
    """Add many observations to a histogram child at once.

    prometheus-client has no public call for this; its histogram keeps one
    value per bucket (non-cumulative in multiprocess files) and a sum.
    tests/unit/test_metrics.py checks the result equals observe() calls.
    """
    buckets = child._buckets
    for i, count in enumerate(counts[:-1]):
        if count:
            buckets[i].inc(count)
    child._sum.inc(counts[-1])


def start_worker(root: str = "") -> Recorder | None:
    """In a worker, after the fork: start counting, if metrics are on."""
    global _recorder
    if _directory is None:
        return None
    _recorder = Recorder(root)
    return _recorder


def stop_worker() -> None:
    """The worker exits: its last counts go out."""
    global _recorder
    if _recorder is not None:
        with contextlib.suppress(OSError):
            _recorder.flush()
    _recorder = None


def recorder() -> Recorder | None:
    return _recorder


# -- the API other modules call ---------------------------------------------------


def request_finished(script: str, status: int, seconds: float) -> None:
    if _recorder is not None:
        _recorder.request_finished(script, status, seconds)


def lua_error(script: str) -> None:
    if _recorder is not None:
        _recorder.lua_error(script)


def limit_kill(kind: str, script: str) -> None:
    if _recorder is not None:
        _recorder.limit_kill(kind, script)


def slow_request(script: str) -> None:
    if _recorder is not None:
        _recorder.slow_request(script)


def set_lua_memory(nbytes: int) -> None:
    if _recorder is not None:
        _recorder.lua_memory = nbytes


def set_shdict_usage(zone: str, used: int, capacity: int) -> None:
    if _recorder is not None:
        _recorder.shdicts[zone] = (used, capacity)


def flush() -> None:
    if _recorder is not None:
        _recorder.flush()


def collect() -> list[Any]:
    """Every metric family of every process (live and dead), merged."""
    if _directory is None:
        return []
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=_directory)  # type: ignore[no-untyped-call]
    return list(registry.collect())
