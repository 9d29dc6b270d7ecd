#!/usr/bin/env python3
"""Throughput of one CGI script: Debian's fcgiwrap (fork + exec of the Lua
interpreter per request) against fcgi-lua's CGI mode (one VM, a coroutine
per request), behind the same nginx, in one run.

Starts, all under a temp dir: fcgi-lua (1 worker) and fcgiwrap (``-c``
processes, default: the CPU count) on Unix sockets, nginx (1 worker) with
one server for each; then runs wrk against bench/cgi_hello.lua through
both and prints a markdown table with the ratio.  Not a test: numbers
depend on the machine.

    python3 bench/cgi_vs_fcgiwrap.py                  # 10 s per run
    python3 bench/cgi_vs_fcgiwrap.py --duration 3s

Needs nginx, fcgiwrap, wrk and a ``lua`` interpreter (``apt-get install
nginx fcgiwrap wrk lua5.1``).
"""

from __future__ import annotations

import argparse
import getpass
import grp
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from run import Processes, WrkResult, free_port, parse_wrk, wait_connectable

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SCRIPT = "/cgi_hello.lua?bench"
EXPECTED = b"Hello from CGI, bench!\n"
TARGET_RATIO = 10.0  # fcgi-lua req/s >= 10x fcgiwrap req/s


class CgiBench(Processes):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, "fcgi-lua-cgi-bench-")
        self.ports = {"fcgi-lua": free_port(), "fcgiwrap": free_port()}

    def start_all(self) -> None:
        t = self.tmp
        lua_sock, wrap_sock = t / "fcgi-lua.sock", t / "fcgiwrap.sock"
        argv = [sys.executable, "-m", "fcgi_lua", "serve", "--listen", f"unix:{lua_sock}"]
        argv += ["--root", str(BENCH), "--workers", "1", "-o", "log_level=warning"]
        proc = self.start("fcgi-lua", argv, signal.SIGTERM)
        wait_connectable(str(lua_sock), proc, t / "fcgi-lua.log")
        fcgiwrap = shutil.which("fcgiwrap") or "/usr/sbin/fcgiwrap"
        children = str(self.args.fcgiwrap_children)
        proc = self.start(
            "fcgiwrap", [fcgiwrap, "-c", children, "-s", f"unix:{wrap_sock}"], signal.SIGTERM
        )
        wait_connectable(str(wrap_sock), proc, t / "fcgiwrap.log")
        shutil.copy(REPO / "nginx" / "fcgi_lua_params", t)
        user = ""
        if os.geteuid() == 0:
            user = f"user {getpass.getuser()} {grp.getgrgid(os.getegid()).gr_name};"
        servers = "".join(
            f"""
    server {{
        listen 127.0.0.1:{self.ports[name]} backlog=4096;
        root {BENCH};
        location ~ \\.lua$ {{
            include fcgi_lua_params;
            fastcgi_pass {upstream};
            {keep}
        }}
    }}"""
            for name, upstream, keep in (
                ("fcgi-lua", "fcgi_lua", "fastcgi_keep_conn on;"),
                ("fcgiwrap", f"unix:{wrap_sock}", ""),
            )
        )
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
    upstream fcgi_lua {{ server unix:{lua_sock}; keepalive 64; }}
{servers}
}}
"""
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        argv = [nginx, "-p", str(t), "-c", str(conf), "-e", str(t / "nginx-error.log")]
        subprocess.run([*argv, "-t", "-q"], check=True)
        proc = self.start("nginx", [*argv, "-g", "daemon off;"], signal.SIGQUIT)
        for port in self.ports.values():
            wait_connectable(("127.0.0.1", port), proc, t / "nginx.log")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{SCRIPT}"

    def check(self, name: str) -> None:
        with urllib.request.urlopen(self.url(name), timeout=10) as resp:
            body = resp.read()
        if body != EXPECTED:
            raise RuntimeError(f"{name} answered {body!r}, expected {EXPECTED!r}")

    def wrk(self, name: str) -> WrkResult:
        conns = str(self.args.connections)
        base = ["wrk", "-t", str(self.args.threads), "-c", conns]
        if self.args.warmup != "0s":
            subprocess.run([*base, "-d", self.args.warmup, self.url(name)], check=True,
                           capture_output=True)  # fmt: skip
        argv = [*base, "-d", self.args.duration, "--latency", self.url(name)]
        print(f"== {name}: {' '.join(argv)}", file=sys.stderr, flush=True)
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        return parse_wrk(name, self.url(name), self.args.connections, out)


def report(results: list[WrkResult], args: argparse.Namespace) -> str:
    lua, wrap = results
    ratio = lua.requests_per_sec / wrap.requests_per_sec if wrap.requests_per_sec else 0.0
    lines = [
        f"CGI script bench/cgi_hello.lua, {args.connections} connections, "
        f"{args.duration} per run, fcgiwrap -c {args.fcgiwrap_children}, {os.cpu_count()} CPUs",
        "",
        "| server | req/s | p50 ms | p99 ms | non-2xx | socket errors |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.requests_per_sec:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.non_2xx} | {r.socket_errors or '-'} |"
        )
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    lines += ["", f"fcgi-lua / fcgiwrap = {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x: {verdict})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--warmup", default="2s")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fcgiwrap-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    bench = CgiBench(args)
    try:
        bench.start_all()
        for name in bench.ports:
            bench.check(name)
        results = [bench.wrk(name) for name in bench.ports]
    finally:
        bench.stop()
    table = report(results, args)
    print(table)
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "cgi-vs-fcgiwrap.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
