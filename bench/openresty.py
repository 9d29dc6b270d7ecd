#!/usr/bin/env python3
"""Benchmark fcgi-lua against OpenResty's lua-nginx-module, in one run.

Starts, all under a temp dir: a redis-server on a free loopback port,
fcgi-lua (1 worker, or --workers) on a Unix socket, and one nginx (1 worker) that loads
Debian's libnginx-mod-http-lua, with two servers on the same files from
bench/: one passes ``*.lua`` to fcgi-lua over FastCGI, the other runs them
itself with ``content_by_lua_file`` (OpenResty).  Then wrk against both:

    /sleep.lua         ngx.sleep(0.1)                      200 connections
    /redis_incr.lua    lua-resty-redis INCR, keepalive      50 connections
    /sleep_long.lua    ngx.sleep(5), 10,000 connections: the workers' memory

and prints a markdown table next to the targets, then stops everything.
Where the box's descriptor limit cannot give nginx two per request (client
and upstream), fcgi-lua's memory run is driven by a raw FastCGI client in
this process instead, and the table says so.  Not a test: numbers depend on
the machine.  bench/README.md explains every choice.

    python3 bench/openresty.py                  # 10 s per run, ~2 min
    python3 bench/openresty.py --only redis --duration 5s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import grp
import os
import platform
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from run import (
    Processes,
    WrkResult,
    children_of,
    cpu_seconds,
    free_port,
    parse_wrk,
    process_tree,
    wait_connectable,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
NGINX_MODULES = Path("/usr/share/nginx/modules")
# Debian's lua-nginx-redis installs lua-resty-redis as nginx/redis.lua;
# OpenResty's require "resty.redis" finds it through a symlink (fcgi-lua
# maps resty.X to Debian's names by itself).
DEBIAN_RESTY_REDIS = Path("/usr/share/lua/5.1/nginx/redis.lua")

# What "good" means (issue 4; see bench/README.md).
TARGET_SLEEP_RATIO = 0.95  # fcgi-lua / OpenResty req/s, 200 x ngx.sleep(0.1)
TARGET_REDIS_RATIO = 0.4  # fcgi-lua / OpenResty req/s, INCR with keepalive
TARGET_PEAK_MB = 200.0  # fcgi-lua worker RSS with 10,000 sleeping requests
TARGET_AFTER_MB = 20.0  # RSS 5 s after them, above the baseline

# Descriptors for 10,000 concurrent requests: nginx holds a client and an
# upstream connection for each, fcgi-lua and wrk one each.
NOFILE = 65536


def _raise_nofile() -> None:
    """In a child, before exec: as many descriptors as we may have."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, max(NOFILE, hard)))
    except (ValueError, OSError):  # not root: the hard limit is the ceiling
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def nofile_hard_limit() -> int:
    """What this box lets a process open (without CAP_SYS_RESOURCE, the
    hard limit cannot be raised: nginx's worker_rlimit_nofile fails too)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, max(NOFILE, hard)))
    except (ValueError, OSError):
        return hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return max(NOFILE, hard)


# -- a raw FastCGI client, for when nginx cannot hold the memory run --------------


def _fcgi_record(rtype: int, content: bytes = b"") -> bytes:
    return struct.pack(">BBHHBx", 1, rtype, 1, len(content), 0) + content


def _fcgi_pair(name: bytes, value: bytes) -> bytes:
    def length(n: int) -> bytes:
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)

    return length(len(name)) + length(len(value)) + name + value


def fastcgi_get(script: Path, query: str) -> bytes:
    """One GET as nginx sends it (fcgi_lua_params' main names), FCGI_KEEP_CONN."""
    names = {
        b"SCRIPT_FILENAME": os.fsencode(script),
        b"SCRIPT_NAME": b"/" + script.name.encode(),
        b"DOCUMENT_ROOT": os.fsencode(script.parent),
        b"REQUEST_METHOD": b"GET",
        b"REQUEST_URI": f"/{script.name}?{query}".encode(),
        b"DOCUMENT_URI": b"/" + script.name.encode(),
        b"QUERY_STRING": query.encode(),
        b"SERVER_PROTOCOL": b"HTTP/1.1",
        b"GATEWAY_INTERFACE": b"CGI/1.1",
        b"REMOTE_ADDR": b"127.0.0.1",
        b"SERVER_PORT": b"80",
        b"HTTP_HOST": b"127.0.0.1",
    }
    params = b"".join(_fcgi_pair(k, v) for k, v in names.items())
    begin = struct.pack(">HB5x", 1, 1)  # responder, keep the connection
    return _fcgi_record(1, begin) + _fcgi_record(4, params) + _fcgi_record(4) + _fcgi_record(5)


async def _fastcgi_connection(
    port: int, request: bytes, deadline: float, stats: dict[str, list[float] | int]
) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(20):  # a full listen backlog: try again, as TCP would
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            await asyncio.sleep(0.2)
    else:
        stats["errors"] = int(stats["errors"]) + 1
        return
    try:
        while loop.time() < deadline:
            began = loop.time()
            writer.write(request)
            status = b""
            while True:
                header = await reader.readexactly(8)
                _v, rtype, _id, length, padding = struct.unpack(">BBHHBx", header)
                content = await reader.readexactly(length + padding)
                if rtype == 6 and not status:  # STDOUT: "Status: 200 OK\r\n" first
                    status = content[8:11]
                elif rtype == 3:  # END_REQUEST
                    break
            latencies = stats["latencies"]
            assert isinstance(latencies, list)
            latencies.append(loop.time() - began)
            if not status.startswith(b"2"):
                stats["non_2xx"] = int(stats["non_2xx"]) + 1
    except (OSError, asyncio.IncompleteReadError):
        stats["errors"] = int(stats["errors"]) + 1
    finally:
        writer.close()


async def fastcgi_load(
    name: str, port: int, connections: int, seconds: float, script: Path, query: str
) -> WrkResult:
    """wrk's job, straight over FastCGI: ``connections`` connections send
    requests back to back for ``seconds``, then are closed (like wrk's)."""
    loop = asyncio.get_running_loop()
    request = fastcgi_get(script, query)
    stats: dict[str, list[float] | int] = {"latencies": [], "non_2xx": 0, "errors": 0}
    began = loop.time()
    deadline = began + seconds
    tasks = [
        asyncio.ensure_future(_fastcgi_connection(port, request, deadline, stats))
        for _ in range(connections)
    ]
    await asyncio.wait(tasks, timeout=seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = sorted(stats["latencies"])  # type: ignore[arg-type]
    done = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(done - 1, int(q * done))] * 1000 if done else 0.0

    raw = (
        f"raw FastCGI client: {connections} connections, {seconds:g} s, {done} responses, "
        f"{stats['non_2xx']} non-2xx, {stats['errors']} connection errors"
    )
    return WrkResult(
        name=name,
        url=f"fastcgi://127.0.0.1:{port}/{script.name}?{query}",
        connections=connections,
        requests_per_sec=done / seconds,
        p50_ms=pct(0.5),
        p99_ms=pct(0.99),
        non_2xx=int(stats["non_2xx"]),
        socket_errors=f"{stats['errors']} connection errors" if stats["errors"] else "",
        raw=raw,
    )


def status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class MemoryResult:
    """One server's worker through a 10,000-connection ngx.sleep(5) run."""

    name: str
    pid: int
    connections: int
    before_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0  # highest VmRSS sampled while the run held its requests
    peak_hwm_mb: float = 0.0  # VmHWM at the end of the run
    after_rss_mb: float = 0.0  # VmRSS 5 s after wrk stopped
    peak_fds: int = 0  # open descriptors at the peak: ~1 per concurrent request
    via: str = "nginx"  # or the raw FastCGI client (see Bench.memory)
    lua_before_kb: int = 0  # the worker's Lua heap after a full collection
    lua_peak_kb: int = 0  # its Lua heap in the middle of the run (no collection)
    lua_after_kb: int = 0
    wrk: WrkResult | None = None
    samples: list[tuple[float, float, int]] = field(default_factory=list)


class Sampler(threading.Thread):
    """Polls a process's VmRSS and fd count every 0.2 s."""

    def __init__(self, result: MemoryResult) -> None:
        super().__init__(daemon=True)
        self.result = result
        self.stopped = threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            try:
                rss = status_kb(self.result.pid, "VmRSS") / 1024
                fds = fd_count(self.result.pid)
            except (OSError, RuntimeError):
                return
            self.result.samples.append((time.monotonic() - self.start_time, rss, fds))
            self.result.peak_rss_mb = max(self.result.peak_rss_mb, rss)
            self.result.peak_fds = max(self.result.peak_fds, fds)


class Bench(Processes):
    # Children get the raised descriptor limit (10,000 connections).
    preexec_fn = staticmethod(_raise_nofile)

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, "fcgi-lua-openresty-bench-")
        names = ("fcgi-lua", "openresty", "fcgi-lua-tcp")
        self.ports = {name: free_port() for name in names}
        self.fcgi_tcp_port = free_port()
        self.redis_port = free_port()
        self.nofile = nofile_hard_limit()
        self.fcgi: subprocess.Popen[bytes] | None = None
        self.nginx: subprocess.Popen[bytes] | None = None

    def url(self, server: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[server]}{path}"

    def start_all(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        redis = shutil.which("redis-server") or "/usr/bin/redis-server"
        for need, hint in (
            (NGINX_MODULES / "ngx_http_lua_module.so", "libnginx-mod-http-lua"),
            (DEBIAN_RESTY_REDIS, "lua-nginx-redis"),
            (Path(redis), "redis-server"),
        ):
            if not need.exists():
                raise SystemExit(f"{need} not found: apt-get install {hint}")
        t = self.tmp
        proc = self.start(
            "redis",
            [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(t), "--maxclients", "10000"],
            signal.SIGTERM,
        )  # fmt: skip
        wait_connectable(("127.0.0.1", self.redis_port), proc, t / "redis.log")

        sock = t / "fcgi-lua.sock"
        argv = [
            sys.executable, "-m", "fcgi_lua", "serve",
            "--listen", f"unix:{sock}",
            # the memory run's burst of 10,000 upstream connects: see README
            "--listen", f"127.0.0.1:{self.fcgi_tcp_port}",
            "--root", str(BENCH),
            "--workers", str(self.args.workers),
            "-o", "log_level=warning",
            "-o", "recompile=mtime",
            # the memory run holds 10,000 requests in flight (default cap 1024)
            "-o", "max_reqs=20000",
            "-o", "max_conns=20000",
        ]  # fmt: skip
        self.fcgi = self.start("fcgi-lua", argv, signal.SIGTERM)
        wait_connectable(str(sock), self.fcgi, t / "fcgi-lua.log")

        lua_dir = t / "lua" / "resty"
        lua_dir.mkdir(parents=True)
        (lua_dir / "redis.lua").symlink_to(DEBIAN_RESTY_REDIS)
        shutil.copy(REPO / "nginx" / "fcgi_lua_params", t)
        user = ""
        if os.geteuid() == 0:
            user = f"user {getpass.getuser()} {grp.getgrgid(os.getegid()).gr_name};"
        conf = t / "nginx.conf"
        conf.write_text(
            f"""load_module {NGINX_MODULES}/ndk_http_module.so;
load_module {NGINX_MODULES}/ngx_http_lua_module.so;
{user}
worker_processes 1;
worker_rlimit_nofile {min(NOFILE, self.nofile)};
pid {t}/nginx.pid;
error_log {t}/nginx-error.log warn;
events {{ worker_connections {min(30000, self.nofile - 100)}; }}
http {{
    access_log off;
    client_body_temp_path {t}/body;
    fastcgi_temp_path {t}/fastcgi;
    proxy_temp_path {t}/proxy;
    scgi_temp_path {t}/scgi;
    uwsgi_temp_path {t}/uwsgi;
    lua_package_path "{t}/lua/?.lua;;";

    # Enough idle upstream connections kept for the 200-connection run:
    # no connect/close churn between nginx and fcgi-lua.
    upstream fcgi_lua {{ server unix:{sock}; keepalive 512; }}
    upstream fcgi_lua_tcp {{ server 127.0.0.1:{self.fcgi_tcp_port}; keepalive 512; }}

    server {{  # fcgi-lua
        listen 127.0.0.1:{self.ports["fcgi-lua"]} backlog=16384;
        root {BENCH};
        location ~ \\.lua$ {{
            include fcgi_lua_params;
            fastcgi_pass fcgi_lua;
            fastcgi_keep_conn on;
            fastcgi_read_timeout 60s;
        }}
    }}
    server {{  # fcgi-lua over TCP, for the 10,000-connection burst
        listen 127.0.0.1:{self.ports["fcgi-lua-tcp"]} backlog=16384;
        root {BENCH};
        location ~ \\.lua$ {{
            include fcgi_lua_params;
            fastcgi_pass fcgi_lua_tcp;
            fastcgi_keep_conn on;
            fastcgi_read_timeout 60s;
        }}
    }}
    server {{  # OpenResty: the same files, run by lua-nginx-module
        listen 127.0.0.1:{self.ports["openresty"]} backlog=16384;
        root {BENCH};
        location ~ \\.lua$ {{
            content_by_lua_file $document_root$uri;
        }}
    }}
}}
"""
        )
        argv = [nginx, "-p", str(t), "-c", str(conf), "-e", str(t / "nginx-error.log")]
        subprocess.run([*argv, "-t", "-q"], check=True)
        self.nginx = self.start("nginx", [*argv, "-g", "daemon off;"], signal.SIGQUIT)
        for port in self.ports.values():
            wait_connectable(("127.0.0.1", port), self.nginx, t / "nginx.log")

    def lua_heap_kb(self, server: str, collect: bool = True) -> int:
        """collectgarbage("count") of the worker's VM, after a full collection."""
        url = self.url(server, "/lua_memory.lua" + ("?collect=1" if collect else ""))
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.read())

    def check(self, server: str, path: str, ok: bytes | None = None) -> None:
        with urllib.request.urlopen(self.url(server, path), timeout=10) as resp:
            body = resp.read()
        if (ok is not None and body != ok) or (ok is None and not body.strip().isdigit()):
            raise RuntimeError(f"{server} {path} answered {body!r}")

    def wrk(
        self,
        name: str,
        url: str,
        connections: int,
        duration: str,
        warmup: str = "0s",
        timeout: str = "2s",
    ) -> WrkResult:
        threads = str(self.args.threads)
        if warmup != "0s":
            subprocess.run(
                ["wrk", "-t", threads, "-c", str(connections), "-d", warmup, url],
                check=True,
                capture_output=True,
                preexec_fn=_raise_nofile,
            )
        argv = ["wrk", "-t", threads, "-c", str(connections), "-d", duration]
        argv += ["--timeout", timeout, "--latency", url]
        print(f"== {name}: {' '.join(argv)}", file=sys.stderr, flush=True)
        # CPU over the run: fcgi-lua's processes, and nginx's worker (which
        # is the whole backend for OpenResty, the front for fcgi-lua)
        fcgi = process_tree(self.fcgi.pid) if self.fcgi is not None else []
        front = children_of(self.nginx.pid) if self.nginx is not None else []
        before = cpu_seconds(fcgi), cpu_seconds(front)
        out = subprocess.run(
            argv, check=True, capture_output=True, text=True, preexec_fn=_raise_nofile
        ).stdout
        result = parse_wrk(name, url, connections, out)
        if result.requests:
            result.cpu_us = (cpu_seconds(fcgi) - before[0]) * 1e6 / result.requests
            result.front_cpu_us = (cpu_seconds(front) - before[1]) * 1e6 / result.requests
        return result

    def worker_pid(self, server: str) -> int:
        if server == "fcgi-lua":
            assert self.fcgi is not None
            # the worker is the child if the master forks one, else itself
            return (children_of(self.fcgi.pid) or [self.fcgi.pid])[0]
        assert self.nginx is not None
        return children_of(self.nginx.pid)[0]

    def memory(self, server: str) -> MemoryResult:
        pid = self.worker_pid(server)
        conns = self.args.memory_connections
        result = MemoryResult(f"{server} {conns} x sleep(5)", pid, conns)
        # settle: let the previous runs' connections and garbage go
        time.sleep(2)
        result.lua_before_kb = self.lua_heap_kb(server)
        result.before_rss_mb = status_kb(pid, "VmRSS") / 1024
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        sampler = Sampler(result)
        sampler.start()

        def lua_at_peak() -> None:
            with contextlib.suppress(OSError, ValueError):
                result.lua_peak_kb = self.lua_heap_kb(server, collect=False)

        peek = threading.Timer(8.0, lua_at_peak)  # all 10,000 requests are waiting
        peek.start()
        # nginx holds two descriptors per request passed to fcgi-lua (client
        # and upstream): past the box's limit, drive fcgi-lua directly.
        direct = server == "fcgi-lua" and 2 * conns + 200 > self.nofile
        try:
            # 12 s: every connection sends a request at once and a second one
            # 5 s later, so 10,000 requests are in flight from ~1 s to 12 s.
            if direct:
                result.via = f"raw FastCGI client (fd limit {self.nofile} < 2 x {conns})"
                result.wrk = asyncio.run(
                    fastcgi_load(
                        result.name,
                        self.fcgi_tcp_port,
                        conns,
                        float(self.args.memory_duration.rstrip("s")),
                        BENCH / "sleep_long.lua",
                        "s=5",
                    )
                )
            else:
                # fcgi-lua over TCP: a burst of 10,000 unix-socket connects
                # overflows its listen backlog (see bench/README.md)
                route = "fcgi-lua-tcp" if server == "fcgi-lua" else server
                result.wrk = self.wrk(
                    result.name,
                    self.url(route, "/sleep_long.lua?s=5"),
                    conns,
                    self.args.memory_duration,
                    timeout="30s",
                )
        finally:
            sampler.stopped.set()
            sampler.join()
            peek.join()
        result.peak_hwm_mb = status_kb(pid, "VmHWM") / 1024
        time.sleep(5)
        result.after_rss_mb = status_kb(pid, "VmRSS") / 1024
        result.lua_after_kb = self.lua_heap_kb(server)
        return result


def _ratio_row(
    label: str, lua: WrkResult | None, ref: WrkResult | None, target: float
) -> str | None:
    if not (lua and ref):
        return None
    ratio = lua.requests_per_sec / ref.requests_per_sec
    ok = ratio >= target and not lua.non_2xx and not lua.socket_errors
    return f"| {label} >= {target:g}x OpenResty | {ratio:.2f}x | {'yes' if ok else '**NO**'} |"


def report(
    results: dict[str, WrkResult], memory: list[MemoryResult], args: argparse.Namespace
) -> str:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"## fcgi-lua vs OpenResty ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"Machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, load average at the end {load}; "
        f"wrk -t{args.threads} -d{args.duration} (after {args.warmup} warm-up); one nginx "
        f"(1 worker) with a server for each; fcgi-lua {args.workers} worker(s); "
        "OpenResty = Debian's libnginx-mod-http-lua.",
        "",
        "CPU per request: utime + stime over the run (`/proc/PID/stat`) of fcgi-lua's "
        "processes and of nginx's worker, divided by the requests; OpenResty runs Lua in "
        "nginx's worker, so its column is the whole backend there.",
        "",
        "| run | conns | req/s | fcgi-lua CPU/req | nginx CPU/req | p50 | p99 | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in [*results.values(), *(m.wrk for m in memory if m.wrk)]:
        errors = []
        if r.non_2xx:
            errors.append(f"{r.non_2xx} non-2xx")
        if r.socket_errors:
            errors.append(f"socket: {r.socket_errors}")
        lines.append(
            f"| {r.name} | {r.connections} | {r.requests_per_sec:,.0f} | "
            f"{r.cpu_us:.1f} µs | {r.front_cpu_us:.1f} µs | "
            f"{r.p50_ms:.2f} ms | {r.p99_ms:.2f} ms | {', '.join(errors) or 'none'} |"
        )
    if memory:
        lines += [
            "",
            "Worker memory through the sleep(5) runs (VmRSS before; highest VmRSS sampled "
            "and VmHWM during; VmRSS 5 s after wrk stopped; open fds at the peak, about one "
            "per request in flight; the Lua heap after a full collection before and after, "
            "and without one at 8 s):",
            "",
            "| worker | driven by | before | peak RSS | VmHWM | 5 s after | peak fds "
            "| Lua heap (before, at 8 s, after) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for m in memory:
            lines.append(
                f"| {m.name} | {m.via} | {m.before_rss_mb:.1f} MB | {m.peak_rss_mb:.1f} MB | "
                f"{m.peak_hwm_mb:.1f} MB | {m.after_rss_mb:.1f} MB | {m.peak_fds} | "
                f"{m.lua_before_kb / 1024:.1f}, {m.lua_peak_kb / 1024:.1f}, "
                f"{m.lua_after_kb / 1024:.1f} MB |"
            )
    lines += ["", "| target | measured | met |", "|---|---:|---|"]
    for row in (
        _ratio_row(
            "200 x ngx.sleep(0.1)",
            results.get("fcgi-lua sleep"),
            results.get("openresty sleep"),
            TARGET_SLEEP_RATIO,
        ),
        _ratio_row(
            "redis INCR keepalive",
            results.get("fcgi-lua redis"),
            results.get("openresty redis"),
            TARGET_REDIS_RATIO,
        ),
    ):
        if row:
            lines.append(row)
    for m in memory:
        if not m.name.startswith("fcgi-lua"):
            continue
        peak = max(m.peak_rss_mb, m.peak_hwm_mb)
        wrk_ok = m.wrk is not None and not m.wrk.non_2xx and not m.wrk.socket_errors
        ok = peak <= TARGET_PEAK_MB and wrk_ok
        lines.append(
            f"| {m.connections} sleeping requests: worker RSS <= {TARGET_PEAK_MB:g} MB | "
            f"{peak:.1f} MB | {'yes' if ok else '**NO**'} |"
        )
        grown = m.after_rss_mb - m.before_rss_mb
        ok = grown <= TARGET_AFTER_MB
        lines.append(
            f"| 5 s after: RSS <= baseline + {TARGET_AFTER_MB:g} MB | "
            f"{m.after_rss_mb:.1f} MB ({grown:+.1f}) | {'yes' if ok else '**NO**'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", default="10s", help="wrk -d for each run (default 10s)")
    parser.add_argument("--warmup", default="2s", help="discarded wrk run before each (0s: none)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    parser.add_argument("--sleep-connections", type=int, default=200)
    parser.add_argument("--redis-connections", type=int, default=50)
    parser.add_argument("--memory-connections", type=int, default=10_000)
    parser.add_argument("--memory-duration", default="12s", help="wrk -d of the memory runs")
    parser.add_argument(
        "--only", choices=["sleep", "redis", "memory"], action="append",
        help="run only these (repeatable); default: all",
    )  # fmt: skip
    parser.add_argument(
        "--server", choices=["fcgi-lua", "openresty"], action="append",
        help="measure only this server (repeatable); default: both",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=1,
        help="fcgi-lua workers (default 1: one process against nginx's one worker; "
        "fcgi-lua's own default is the CPU count)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    args = parser.parse_args(argv)
    runs = args.only or ["sleep", "redis", "memory"]
    servers = args.server or ["fcgi-lua", "openresty"]
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")

    bench = Bench(args)
    results: dict[str, WrkResult] = {}
    memory: list[MemoryResult] = []
    try:
        bench.start_all()
        redis_path = f"/redis_incr.lua?port={bench.redis_port}"
        for server in servers:
            bench.check(server, "/sleep.lua", b"ok\n")
            bench.check(server, redis_path)
        for run in runs:
            for server in servers:
                if run == "sleep":
                    results[f"{server} sleep"] = bench.wrk(
                        f"{server} sleep",
                        bench.url(server, "/sleep.lua"),
                        args.sleep_connections,
                        args.duration,
                        args.warmup,
                    )
                elif run == "redis":
                    results[f"{server} redis"] = bench.wrk(
                        f"{server} redis",
                        bench.url(server, redis_path),
                        args.redis_connections,
                        args.duration,
                        args.warmup,
                    )
                else:
                    memory.append(bench.memory(server))
    finally:
        bench.stop()

    table = report(results, memory, args)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "openresty.md").write_text(table)
    for r in [*results.values(), *(m.wrk for m in memory if m.wrk)]:
        name = r.name.replace(" ", "-").replace("(", "").replace(")", "")
        (RESULTS / f"openresty-{name}.wrk.txt").write_text(r.raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
