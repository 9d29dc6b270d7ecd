#!/usr/bin/env python3
"""Where a request's CPU goes inside the worker, without nginx or FastCGI.

Runs a bench/ script through ``LuaEngine.run`` in this process (50 at a
time, like wrk's connections), against a real redis-server it starts on a
free loopback port, and times what the script calls: the Lua resumes
(``_start``/``_drive``, which include the Python calls made from Lua), the
cosocket functions, the code cache.  It prints CPU microseconds per
request; the Lua-only part is a resume's time minus the Python calls made
inside it.  Why the redis INCR target of issue 4 is out of reach is
this table (bench/README.md).

    python3 bench/breakdown.py                       # hello.lua and redis_incr.lua
    python3 bench/breakdown.py --runtime luajit21 --requests 50000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import signal
import sys
import time
from pathlib import Path
from typing import Any

from run import Processes, free_port, wait_connectable

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from fcgi_lua.lua import DEFAULT_RUNTIME, LuaEngine, cosocket  # noqa: E402
from fcgi_lua.request import Request  # noqa: E402

# Calls made from Lua while a resume runs (their time is inside _start/_drive).
INSIDE_RESUME = ("connect", "send", "receive", "keepalive", "new_owner")
CONCURRENCY = 50


class Sink:
    async def write(self, data: bytes) -> None:
        pass

    def write_nowait(self, data: bytes) -> None:
        pass

    def stderr(self, data: bytes) -> None:
        pass


def params(script: Path, query: bytes) -> list[tuple[bytes, bytes]]:
    uri = b"/" + script.name.encode()
    return [
        (b"SCRIPT_FILENAME", str(script).encode()),
        (b"SCRIPT_NAME", uri),
        (b"DOCUMENT_URI", uri),
        (b"REQUEST_URI", uri + b"?" + query),
        (b"QUERY_STRING", query),
        (b"REQUEST_METHOD", b"GET"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"REMOTE_ADDR", b"127.0.0.1"),
        (b"SERVER_PORT", b"80"),
        (b"HTTP_HOST", b"127.0.0.1"),
    ]


class Timers:
    """Wall time spent in named functions (CPU-bound here: no waits inside)."""

    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()

    def wrap(self, owner: Any, name: str, label: str | None = None) -> None:
        real = getattr(owner, name)
        label = label or name
        clock = time.perf_counter
        seconds = self.seconds

        @functools.wraps(real)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = clock()
            try:
                return real(*args, **kwargs)
            finally:
                seconds[label] += clock() - began

        setattr(owner, name, timed)


async def measure(
    timers: Timers, runtime: str, script: Path, query: bytes, requests: int
) -> dict[str, float]:
    engine = LuaEngine(runtime=runtime, root=str(BENCH), recompile_interval=1.0)
    timers.wrap(engine, "_start", "lua resume (start)")
    timers.wrap(engine, "_drive", "lua resume (drive)")
    timers.wrap(engine.cache, "get", "code cache")
    request_params = params(script, query)

    async def one() -> None:
        await engine.run(Request(request_params, str(script)), Sink())

    for _ in range(CONCURRENCY):  # warm: compiled, pooled
        await one()
    timers.seconds.clear()
    began = time.process_time()
    for _ in range(requests // CONCURRENCY):
        await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    total = time.process_time() - began
    n = (requests // CONCURRENCY) * CONCURRENCY
    per = {label: s / n * 1e6 for label, s in timers.seconds.items()}
    resumes = per.get("lua resume (start)", 0.0) + per.get("lua resume (drive)", 0.0)
    per["lua only (resumes minus the calls above)"] = resumes - sum(
        per.get(name, 0.0) for name in INSIDE_RESUME
    )
    per["total CPU (process_time)"] = total / n * 1e6
    return per


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runtime", default=DEFAULT_RUNTIME)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    args.keep = False
    procs = Processes(args, "fcgi-lua-breakdown-")
    try:
        port = free_port()
        redis = procs.start(
            "redis",
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
            signal.SIGTERM,
        )
        wait_connectable(("127.0.0.1", port), redis, procs.tmp / "redis.log")
        # the class, before any engine: socket.lua keeps the bound methods
        timers = Timers()
        for method in INSIDE_RESUME:
            timers.wrap(cosocket.Cosockets, method)
        rows: dict[str, dict[str, float]] = {}
        for name in ("hello.lua", "redis_incr.lua"):
            query = f"port={port}".encode()
            rows[name] = asyncio.run(
                measure(timers, args.runtime, BENCH / name, query, args.requests)
            )
    finally:
        procs.stop()
    labels = [
        "total CPU (process_time)",
        "lua resume (start)",
        "lua resume (drive)",
        *INSIDE_RESUME,
        "lua only (resumes minus the calls above)",
        "code cache",
    ]
    print(
        f"CPU us per request, runtime {args.runtime}, {args.requests} requests, "
        f"{CONCURRENCY} at a time, in-process (no nginx, no FastCGI)\n"
    )
    print("| part | " + " | ".join(rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for label in labels:
        cells = " | ".join(f"{row.get(label, 0.0):.1f}" for row in rows.values())
        print(f"| {label} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
