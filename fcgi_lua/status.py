"""The status and ping pages the responder answers itself (``status_path``,
``ping_path``), like PHP-FPM's ``pm.status_path`` and ``ping.path``.

They are answered on the event loop before any script is looked up, so
they answer while every request of every worker sleeps, and even when a
worker is over ``max_reqs``.  The status page reads every worker's numbers
from the metrics directory (``fcgi_lua.metrics``) and renders them as
JSON (default, ``?json``), HTML for a browser (``?html``, as PHP-FPM's),
Prometheus text (``?prometheus``) or OpenMetrics (``?openmetrics``, or an
Accept header asking for either).  This module
builds response bytes; it never touches sockets.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Iterable
from typing import Any

from fcgi_lua import metrics
from fcgi_lua.http import header_block

JSON = "json"
HTML = "html"
PROMETHEUS = "prometheus"
OPENMETRICS = "openmetrics"
_FORMATS = (JSON, HTML, PROMETHEUS, OPENMETRICS)
# The status page's list of the scripts with the longest mean duration.
SLOWEST_SCRIPTS = 10
# The classic text format every Prometheus server reads (our metric names
# need none of the newer format's escaping).
PROMETHEUS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def choose_format(query: str, accept: str) -> str:
    """``?json`` / ``?html`` / ``?prometheus`` / ``?openmetrics`` win;
    then Accept (a browser's text/html still gets JSON unless it asks
    ``?html``, as PHP-FPM's status page does)."""
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
    if kind == HTML:
        body = status_html(status_json(families, pool)).encode()
        return _response(b"text/html; charset=utf-8", body, head)
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
                "rss": _rss(pid),
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
    durations = {s.labels["script"]: s.value for s in samples.get(DURATION + "_sum", ())}
    scripts = [
        {
            "script": s.labels["script"],
            "requests": int(s.value),
            "mean seconds": round(durations.get(s.labels["script"], 0.0) / s.value, 6),
        }
        for s in samples.get(DURATION + "_count", ())
        if s.value
    ]
    scripts.sort(key=lambda script: -script["mean seconds"])
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
        "slowest scripts": scripts[:SLOWEST_SCRIPTS],
        "processes": processes,
    }


DURATION = metrics.PREFIX + "request_duration_seconds"
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int) -> int:
    """A worker's resident memory now (0 when it is gone): the workers
    share this host, so /proc answers for all of them."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (seconds, "s")]
    shown = [f"{n} {unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0 s"


def _megabytes(size: float) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def status_html(data: dict[str, Any]) -> str:
    """The JSON page's numbers for a person: durations and sizes in units,
    one table per subject."""
    summary = [
        ["pool", data["pool"]],
        ["up for", _duration(data["start since"])],
        ["requests answered", data["accepted conn"]],
        ["requests in flight", data["active requests"]],
        ["busy / idle workers", f"{data['active processes']} / {data['idle processes']}"],
        ["slow requests", data["slow requests"]],
        ["Lua errors", data["lua errors"]],
    ]
    summary += [[f"limit kills: {kind}", n] for kind, n in data["limit kills"].items()]
    summary += [[f"worker restarts: {why}", n] for why, n in data["worker restarts"].items()]
    workers = [
        [
            p["pid"],
            p["state"],
            _duration(p["start since"]),
            p["requests"],
            p["requests in flight"],
            p["max requests in flight"],
            _megabytes(p["lua memory"]),
            _megabytes(p["rss"]),
        ]
        for p in data["processes"]
    ]
    statuses = [[code, n] for code, n in data["requests by status"].items()]
    slowest = [
        [s["script"], s["requests"], f"{s['mean seconds'] * 1000:.1f} ms"]
        for s in data["slowest scripts"]
    ]
    zones = [
        [name, _megabytes(z["used"]), _megabytes(z["capacity"])]
        for name, z in data["shared dicts"].items()
    ]
    parts = [
        '<!doctype html><html><head><meta charset="utf-8"><title>fcgi-lua status</title>',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border-bottom:1px solid #ddd;padding:.2em .8em;text-align:left}</style>",
        "</head><body><h1>fcgi-lua status</h1>",
        _table(["", ""], summary),
        "<h2>Workers</h2>",
        _table(
            [
                "pid",
                "state",
                "up for",
                "requests",
                "in flight",
                "most in flight",
                "Lua memory",
                "RSS",
            ],
            workers,
        ),
        "<h2>Slowest scripts (mean time)</h2>",
        _table(["script", "requests", "mean"], slowest) if slowest else "<p>none yet</p>",
        "<h2>Requests by status</h2>",
        _table(["status", "requests"], statuses) if statuses else "<p>none yet</p>",
    ]
    if zones:
        parts += ["<h2>Shared dicts</h2>", _table(["zone", "used", "capacity"], zones)]
    parts.append(
        '<p>Also as <a href="?json">JSON</a> and <a href="?prometheus">Prometheus</a> text.</p>'
        "</body></html>\n"
    )
    return "\n".join(parts)
