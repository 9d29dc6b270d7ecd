"""The status and ping pages the responder answers itself (``status_path``,
``ping_path``), like PHP-FPM's ``pm.status_path`` and ``ping.path``.

They are answered on the event loop before any script is looked up, so
they answer while every request of every worker sleeps, and even when a
worker is over ``max_reqs``.  The status page reads every worker's numbers
from the metrics directory (``fcgi_lua.metrics``) and renders them as
JSON (default, ``?json``), Prometheus text (``?prometheus``) or OpenMetrics
(``?openmetrics``, or an Accept header asking for either).  This module
builds response bytes; it never touches sockets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from fcgi_lua import metrics
from fcgi_lua.http import header_block

JSON = "json"
PROMETHEUS = "prometheus"
OPENMETRICS = "openmetrics"
_FORMATS = (JSON, PROMETHEUS, OPENMETRICS)
# The classic text format every Prometheus server reads (our metric names
# need none of the newer format's escaping).
PROMETHEUS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def choose_format(query: str, accept: str) -> str:
    """``?json`` / ``?prometheus`` / ``?openmetrics`` win; then Accept."""
    for part in query.split("&"):
        name = part.partition("=")[0]
        if name in _FORMATS:
            return name
    if "application/openmetrics-text" in accept:
        return OPENMETRICS
    if "text/plain" in accept and "version=0.0.4" in accept:
        return PROMETHEUS
    return JSON


def ping_response(text: str, *, head: bool = False) -> bytes:
    body = text.encode() + b"\n"
    return _response(b"text/plain", body, head)


def status_response(
    query: str, accept: str, *, pool: str, in_flight: int, served: int, head: bool = False
) -> bytes:
    """The whole CGI response for the status page.

    ``in_flight`` is this worker's count now, without the status request
    itself: the other workers' counts are as of their last flush.
    """
    recorder = metrics.recorder()
    if recorder is not None:
        recorder.sample(in_flight, served)
        recorder.flush()
    kind = choose_format(query, accept)
    families = metrics.collect()
    if kind == JSON:
        body = json.dumps(status_json(families, pool), indent=2).encode() + b"\n"
        return _response(b"application/json", body, head)
    if kind == OPENMETRICS:
        from prometheus_client.openmetrics import exposition as openmetrics

        body = openmetrics.generate_latest(_Families(families))  # type: ignore[no-untyped-call]
        return _response(openmetrics.CONTENT_TYPE_LATEST.encode(), body, head)
    from prometheus_client import exposition

    body = exposition.generate_latest(_Families(families))
    return _response(PROMETHEUS_CONTENT_TYPE, body, head)


class _Families:
    """A registry-like object over already collected families."""

    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> Iterable[Any]:
        return iter(self._families)


def _response(content_type: bytes, body: bytes, head: bool) -> bytes:
    block = header_block(
        200,
        [
            (b"Content-Type", content_type),
            (b"Content-Length", str(len(body)).encode()),
            (b"Cache-Control", b"no-cache, no-store, must-revalidate"),
        ],
    )
    return block if head else block + body


def status_json(families: list[Any], pool: str) -> dict[str, Any]:
    """PHP-FPM's status fields where they apply, then fcgi-lua's own."""
    samples: dict[str, list[Any]] = {}
    for family in families:
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)

    def total(name: str) -> int:
        return int(sum(s.value for s in samples.get(name, ())))

    def per_pid(name: str) -> dict[int, float]:
        return {int(s.labels["pid"]): s.value for s in samples.get(name, ())}

    def by_label(name: str, label: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in samples.get(name, ()):
            key = s.labels.get(label, "")
            out[key] = out.get(key, 0) + int(s.value)
        return dict(sorted(out.items()))

    now = time.time()
    starts = samples.get(metrics.PREFIX + "start_time_seconds", ())
    start = max((s.value for s in starts), default=0)
    started = per_pid(metrics.PREFIX + "worker_start_time_seconds")
    in_flight = per_pid(metrics.PREFIX + "requests_in_flight")
    peak = per_pid(metrics.PREFIX + "requests_in_flight_max")
    served = per_pid(metrics.PREFIX + "worker_requests")
    memory = per_pid(metrics.PREFIX + "lua_memory_bytes")
    processes = []
    for pid in sorted(started):
        busy = int(in_flight.get(pid, 0))
        processes.append(
            {
                "pid": pid,
                "state": "Running" if busy else "Idle",
                "start time": int(started[pid]),
                "start since": int(now - started[pid]),
                "requests": int(served.get(pid, 0)),
                "requests in flight": busy,
                "max requests in flight": int(peak.get(pid, 0)),
                "lua memory": int(memory.get(pid, 0)),
            }
        )
    active = sum(1 for p in processes if p["requests in flight"])
    shdicts = {}
    capacity = {
        s.labels["zone"]: int(s.value)
        for s in samples.get(metrics.PREFIX + "shdict_capacity_bytes", ())
    }
    for s in samples.get(metrics.PREFIX + "shdict_used_bytes", ()):
        zone = s.labels["zone"]
        shdicts[zone] = {"used": int(s.value), "capacity": capacity.get(zone, 0)}
    return {
        "pool": pool,
        "process manager": "static",
        "start time": int(start),
        "start since": int(now - start) if start else 0,
        "accepted conn": total(metrics.PREFIX + "requests_total"),
        "idle processes": len(processes) - active,
        "active processes": active,
        "total processes": len(processes),
        "active requests": sum(p["requests in flight"] for p in processes),
        "max active requests": max((p["max requests in flight"] for p in processes), default=0),
        "slow requests": total(metrics.PREFIX + "slow_requests_total"),
        "lua errors": total(metrics.PREFIX + "lua_errors_total"),
        "limit kills": by_label(metrics.PREFIX + "limit_kills_total", "kind"),
        "worker restarts": by_label(metrics.PREFIX + "worker_restarts_total", "reason"),
        "requests by status": by_label(metrics.PREFIX + "requests_total", "status"),
        "shared dicts": shdicts,
        "processes": processes,
    }
