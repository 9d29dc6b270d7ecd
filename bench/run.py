#!/usr/bin/env python3
"""Benchmark fcgi-lua against php-fpm behind the same nginx, in one run.

Starts, all under a temp dir: fcgi-lua (its default workers, or --workers) on a Unix socket,
php-fpm (its own master, pm=static, 2 children) on another, and nginx
(1 worker, upstream keepalive; fastcgi_keep_conn on for fcgi-lua, off for
php-fpm unless --php-keep-conn, see README.md) in front of both.
Then runs wrk against

    /hello.lua   ngx.say("Hello, world!")      50 connections
    /hello.php   echo "Hello, world!\\n";       50 connections
    /sleep.lua   ngx.sleep(0.1) ngx.say("ok")  200 connections
    /floor-c     bench/floor.c: canned bytes   50 connections (compiled with cc)
    /floor-py    bench/floor.py: canned bytes  50 connections (uvloop)

(the floors: what nginx + FastCGI, and a Python responder on uvloop, cost
when the backend does nothing) and prints a markdown table of req/s, the
backend's CPU per request, p50, p99 and worker RSS next to the targets,
then stops everything.  Not a test: numbers depend on the machine.

    python3 bench/run.py                 # 10 s per run
    python3 bench/run.py --duration 3s --only fcgi-lua
"""

from __future__ import annotations

import argparse
import getpass
import grp
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"

# What "good" means (see bench/README.md for why these numbers).
TARGET_RATIO = 2.0  # fcgi-lua hello req/s >= 2x php-fpm hello req/s
TARGET_P99_MS = 5.0  # at 50 connections
TARGET_SLEEP_RPS = 1850.0  # 200 conns x 100 ms sleeps: ideal is 2000 req/s
TARGET_RSS_MB = 40.0  # fcgi-lua worker

PHP_CHILDREN = 2  # pm = static


@dataclass
class WrkResult:
    name: str
    url: str
    connections: int
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: str
    raw: str
    requests: int = 0
    # the backend's CPU (utime + stime of its whole process tree) per
    # request: stable on a noisy machine where req/s is not
    cpu_us: float = 0.0
    # the front server's (nginx's workers') CPU per request, where measured
    front_cpu_us: float = 0.0


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _latency_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(name: str, url: str, connections: int, output: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and p50 and p99):
        raise RuntimeError(f"could not parse wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:\s+(.*)", output)
    requests = re.search(r"(\d+) requests in", output)
    return WrkResult(
        name=name,
        url=url,
        connections=connections,
        requests_per_sec=float(rps.group(1)),
        p50_ms=_latency_ms(p50.group(1)),
        p99_ms=_latency_ms(p99.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=errors.group(1).strip() if errors else "",
        raw=output,
        requests=int(requests.group(1)) if requests else 0,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_connectable(
    address: str | tuple[str, int], proc: subprocess.Popen[bytes], log: Path
) -> None:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()}")
        with socket.socket(family) as sock:
            try:
                sock.connect(address)
                return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {address}:\n{log.read_text()}")


def find_php_fpm() -> str:
    for name in ("php-fpm8.2", "php-fpm"):
        if path := shutil.which(name):
            return path
    candidates = sorted(Path("/usr/sbin").glob("php-fpm*"))
    if candidates:
        return str(candidates[-1])
    raise SystemExit("php-fpm not found: apt-get install php-fpm")


def rss_of(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    return rss / 1024, hwm / 1024


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds (/proc/PID/stat)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone: its time is lost, so recycle nothing during a run
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a master and its workers)."""
    return [pid, *children_of(pid)]


def children_of(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


class Processes:
    """A temp dir and the processes a benchmark starts in it; ``stop`` ends
    them all (newest first, with each one's own stop signal) and removes
    the dir unless ``--keep``.  Shared by every script in bench/."""

    preexec_fn: Callable[[], None] | None = None

    def __init__(self, args: argparse.Namespace, prefix: str) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.procs: list[tuple[subprocess.Popen[bytes], int]] = []

    def start(self, name: str, argv: list[str], stop_signal: int) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=self.preexec_fn,
            )
        self.procs.append((proc, stop_signal))
        return proc

    def stop(self) -> None:
        for proc, sig in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(sig)
        for proc, _sig in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.args.keep:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Bench(Processes):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, "fcgi-lua-bench-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def start_fcgi_lua(self) -> subprocess.Popen[bytes]:
        sock = self.tmp / "fcgi-lua.sock"
        argv = [
            sys.executable, "-m", "fcgi_lua", "serve",
            "--listen", f"unix:{sock}",
            "--root", str(BENCH),
            "-o", "log_level=warning",
        ]  # fmt: skip
        if self.args.workers:
            argv += ["--workers", str(self.args.workers)]
        for option in self.args.fcgi_option:
            argv += ["-o", option]
        proc = self.start("fcgi-lua", argv, signal.SIGTERM)
        wait_connectable(str(sock), proc, self.tmp / "fcgi-lua.log")
        return proc

    def start_floors(self) -> list[subprocess.Popen[bytes]]:
        """bench/floor.c (if a C compiler is there) and bench/floor.py."""
        procs = []
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc:
            binary = self.tmp / "floor"
            subprocess.run([cc, "-O2", "-o", str(binary), str(BENCH / "floor.c")], check=True)
            sock = self.tmp / "floor-c.sock"
            proc = self.start("floor-c", [str(binary), str(sock)], signal.SIGTERM)
            wait_connectable(str(sock), proc, self.tmp / "floor-c.log")
            procs.append(proc)
        sock = self.tmp / "floor-py.sock"
        argv = [sys.executable, str(BENCH / "floor.py"), str(sock)]
        proc = self.start("floor-py", argv, signal.SIGTERM)
        wait_connectable(str(sock), proc, self.tmp / "floor-py.log")
        return [*procs, proc]

    def start_php_fpm(self) -> subprocess.Popen[bytes]:
        sock = self.tmp / "php-fpm.sock"
        as_root = os.geteuid() == 0
        user = f"user = {getpass.getuser()}\ngroup = {grp.getgrgid(os.getegid()).gr_name}\n"
        conf = self.tmp / "php-fpm.conf"
        conf.write_text(
            f"""[global]
pid = {self.tmp}/php-fpm.pid
error_log = {self.tmp}/php-fpm-error.log
daemonize = no

[bench]
{user if as_root else ""}listen = {sock}
listen.mode = 0666
pm = static
pm.max_children = {PHP_CHILDREN}
pm.max_requests = 0
catch_workers_output = yes
"""
        )
        argv = [find_php_fpm(), "-F", "-y", str(conf)]
        if as_root:
            argv.append("-R")  # allow pool workers to run as root
        proc = self.start("php-fpm", argv, signal.SIGQUIT)
        wait_connectable(str(sock), proc, self.tmp / "php-fpm.log")
        return proc

    def start_nginx(self) -> subprocess.Popen[bytes]:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        shutil.copy(REPO / "nginx" / "fcgi_lua_params", self.tmp)
        user = ""
        if os.geteuid() == 0:
            user = f"user {getpass.getuser()} {grp.getgrgid(os.getegid()).gr_name};"
        t = self.tmp
        conf = t / "nginx.conf"
        conf.write_text(
            f"""{user}
worker_processes 1;
pid {t}/nginx.pid;
error_log {t}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {t}/body;
    fastcgi_temp_path {t}/fastcgi;
    proxy_temp_path {t}/proxy;
    scgi_temp_path {t}/scgi;
    uwsgi_temp_path {t}/uwsgi;

    upstream fcgi_lua {{ server unix:{t}/fcgi-lua.sock; keepalive {self.args.keepalive}; }}
    # A php-fpm child serves one connection until nginx closes it: more
    # idle kept-alive connections than children starve the others.
    upstream php_fpm {{ server unix:{t}/php-fpm.sock; keepalive {PHP_CHILDREN}; }}
    upstream floor_c {{ server unix:{t}/floor-c.sock; keepalive {self.args.keepalive}; }}
    upstream floor_py {{ server unix:{t}/floor-py.sock; keepalive {self.args.keepalive}; }}

    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        root {BENCH};
        location ~ \\.lua$ {{
            include fcgi_lua_params;
            fastcgi_pass fcgi_lua;
            fastcgi_keep_conn on;
        }}
        location = /floor-c {{
            include fcgi_lua_params;
            fastcgi_pass floor_c;
            fastcgi_keep_conn on;
        }}
        location = /floor-py {{
            include fcgi_lua_params;
            fastcgi_pass floor_py;
            fastcgi_keep_conn on;
        }}
        location ~ \\.php$ {{
            include fcgi_lua_params;
            fastcgi_pass php_fpm;
            fastcgi_keep_conn {"on" if self.args.php_keep_conn else "off"};
        }}
    }}
}}
"""
        )
        argv = [nginx, "-p", str(t), "-c", str(conf), "-e", str(t / "nginx-error.log")]
        subprocess.run([*argv, "-t", "-q"], check=True)
        proc = self.start("nginx", [*argv, "-g", "daemon off;"], signal.SIGQUIT)
        wait_connectable(("127.0.0.1", self.port), proc, t / "nginx.log")
        return proc

    def check(self, path: str, expected: bytes) -> None:
        with urllib.request.urlopen(self.base + path, timeout=10) as resp:
            body = resp.read()
        if body != expected:
            raise RuntimeError(f"{path} answered {body!r}, expected {expected!r}")

    def wrk(self, name: str, path: str, connections: int, backend: int | None = None) -> WrkResult:
        """wrk against ``path``; ``backend``: the pid whose process tree's
        CPU per request is measured over the run."""
        url = self.base + path
        threads = str(self.args.threads)
        if self.args.warmup != "0s":
            subprocess.run(
                ["wrk", "-t", threads, "-c", str(connections), "-d", self.args.warmup, url],
                check=True,
                capture_output=True,
            )
        argv = ["wrk", "-t", threads, "-c", str(connections), "-d", self.args.duration]
        argv += ["--latency", url]
        print(f"== {name}: {' '.join(argv)}", file=sys.stderr, flush=True)
        pids = process_tree(backend) if backend else []
        before = cpu_seconds(pids)
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        used = cpu_seconds(pids) - before
        result = parse_wrk(name, url, connections, out)
        if pids and result.requests:
            result.cpu_us = used * 1e6 / result.requests
        return result


def fmt_verdict(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def report(
    results: dict[str, WrkResult], rss: dict[str, tuple[float, float]], args: argparse.Namespace
) -> str:
    lines = [
        f"## fcgi-lua vs php-fpm ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"Machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; wrk -t{args.threads} -d{args.duration} "
        f"(after {args.warmup} warm-up); nginx 1 worker, keepalive upstreams "
        f"(fcgi-lua's: keepalive {args.keepalive}).",
        "",
        "| run | conns | req/s | backend CPU per request | p50 | p99 | errors |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results.values():
        errors = []
        if r.non_2xx:
            errors.append(f"{r.non_2xx} non-2xx")
        if r.socket_errors:
            errors.append(f"socket: {r.socket_errors}")
        lines.append(
            f"| {r.name} | {r.connections} | {r.requests_per_sec:,.0f} | {r.cpu_us:.1f} µs | "
            f"{r.p50_ms:.2f} ms | {r.p99_ms:.2f} ms | {', '.join(errors) or 'none'} |"
        )
    lines += ["", "| process | RSS now | peak RSS |", "|---|---:|---:|"]
    for name, (now, peak) in rss.items():
        lines.append(f"| {name} | {now:.1f} MB | {peak:.1f} MB |")
    lines += ["", "| target | measured | met |", "|---|---:|---|"]
    lua, php = results.get("fcgi-lua hello"), results.get("php-fpm hello")
    if lua and php:
        ratio = lua.requests_per_sec / php.requests_per_sec
        lines.append(
            f"| fcgi-lua >= {TARGET_RATIO:g}x php-fpm req/s | {ratio:.2f}x | "
            f"{fmt_verdict(ratio >= TARGET_RATIO)} |"
        )
    if lua:
        lines.append(
            f"| fcgi-lua p99 <= {TARGET_P99_MS:g} ms at {lua.connections} conns | "
            f"{lua.p99_ms:.2f} ms | {fmt_verdict(lua.p99_ms <= TARGET_P99_MS)} |"
        )
    sleep = results.get("fcgi-lua sleep 100ms")
    if sleep:
        ok = sleep.requests_per_sec >= TARGET_SLEEP_RPS and not sleep.non_2xx
        lines.append(
            f"| {sleep.connections} x 100 ms sleeps >= {TARGET_SLEEP_RPS:g} req/s | "
            f"{sleep.requests_per_sec:,.0f} | {fmt_verdict(ok)} |"
        )
    worker = rss.get("fcgi-lua worker")
    if worker:
        lines.append(
            f"| fcgi-lua worker RSS <= {TARGET_RSS_MB:g} MB | {worker[1]:.1f} MB peak | "
            f"{fmt_verdict(worker[1] <= TARGET_RSS_MB)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", default="10s", help="wrk -d for each run (default 10s)")
    parser.add_argument("--warmup", default="2s", help="discarded wrk run before each (0s: none)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    parser.add_argument("--connections", type=int, default=50, help="for the hello runs")
    parser.add_argument("--sleep-connections", type=int, default=200, help="for sleep.lua")
    parser.add_argument(
        "--only", choices=["fcgi-lua", "php-fpm", "sleep", "floor"], action="append",
        help="run only these (repeatable); default: all",
    )  # fmt: skip
    parser.add_argument(
        "--php-keep-conn",
        action="store_true",
        help="fastcgi_keep_conn on for php-fpm too (stalls: see bench/README.md)",
    )
    parser.add_argument(
        "--workers", type=int, default=0,
        help="fcgi-lua workers (default: fcgi-lua's own default, the CPU count)",
    )  # fmt: skip
    parser.add_argument(
        "--keepalive", type=int, default=64, metavar="N",
        help="idle kept-alive connections nginx keeps to fcgi-lua (default 64); below "
        "--connections, nginx opens and closes a connection for the requests past its pool, "
        "which measures fcgi-lua's connection setup",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    parser.add_argument(
        "--fcgi-option",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="extra fcgi-lua config, e.g. status_path=/fcgi-status (metrics on)",
    )
    args = parser.parse_args(argv)
    runs = set(args.only or ["fcgi-lua", "php-fpm", "sleep", "floor"])
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")

    bench = Bench(args)
    results: dict[str, WrkResult] = {}
    rss: dict[str, tuple[float, float]] = {}
    try:
        fcgi = bench.start_fcgi_lua() if runs & {"fcgi-lua", "sleep"} else None
        php = bench.start_php_fpm() if "php-fpm" in runs else None
        floors = bench.start_floors() if "floor" in runs else []
        bench.start_nginx()
        if fcgi:
            bench.check("/hello.lua", b"Hello, world!\n")
        if php:
            bench.check("/hello.php", b"Hello, world!\n")
        if "fcgi-lua" in runs:
            results["fcgi-lua hello"] = bench.wrk(
                "fcgi-lua hello", "/hello.lua", args.connections, fcgi.pid if fcgi else None
            )
        if "php-fpm" in runs:
            results["php-fpm hello"] = bench.wrk(
                "php-fpm hello", "/hello.php", args.connections, php.pid if php else None
            )
        for proc in floors:
            c_floor = proc.args[0] != sys.executable
            name, path = (
                ("C floor hello", "/floor-c") if c_floor else ("Python floor hello", "/floor-py")
            )
            bench.check(path, b"Hello, world!\n")
            results[name] = bench.wrk(name, path, args.connections, proc.pid)
        if "sleep" in runs:
            results["fcgi-lua sleep 100ms"] = bench.wrk(
                "fcgi-lua sleep 100ms",
                "/sleep.lua",
                args.sleep_connections,
                fcgi.pid if fcgi else None,
            )
        if fcgi:
            # The worker is the child if the master forks one, else itself.
            pids = children_of(fcgi.pid) or [fcgi.pid]
            worst = max((rss_of(pid) for pid in pids), key=lambda r: r[1])
            rss["fcgi-lua worker"] = worst
        if php:
            kids = children_of(php.pid)
            for i, pid in enumerate(sorted(kids), 1):
                rss[f"php-fpm child {i}"] = rss_of(pid)
    finally:
        bench.stop()

    table = report(results, rss, args)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(table)
    for r in results.values():
        (RESULTS / f"{r.name.replace(' ', '-')}.wrk.txt").write_text(r.raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
