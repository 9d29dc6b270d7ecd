#!/usr/bin/env python3
"""CPU and syscalls per request of one fcgi-lua worker, straight over FastCGI.

Starts ``fcgi-lua serve --workers 1`` on a Unix socket, sends ``--requests``
requests for a bench/ script over ``--connections`` kept-alive FastCGI
connections (FCGI_KEEP_CONN, as nginx's ``fastcgi_keep_conn on``), and
reads the worker's utime + stime from ``/proc/PID/stat`` before and after:
CPU per request is stable on a noisy machine where req/s is not.  With
``--strace`` the worker runs under ``strace -c -f`` for the measured part and
the syscalls per request are printed (strace slows the worker: its CPU
figure is then not comparable, the syscall counts are).

No nginx: this is the responder's own cost, the figure issue 11's targets
name.  bench/run.py measures the whole path through nginx.

    python3 bench/fcgi_load.py                         # hello.lua, 20,000 requests
    python3 bench/fcgi_load.py --script redis_incr.lua  # starts a redis-server, free port
    python3 bench/fcgi_load.py --strace --requests 5000
    python3 bench/fcgi_load.py --flame bench/results/hello.svg   # py-spy --native
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

BEGIN, END, PARAMS, STDIN = 1, 3, 4, 5
HEADER = struct.Struct(">BBHHBx")


def record(kind: int, content: bytes, request_id: int = 1) -> bytes:
    return HEADER.pack(1, kind, request_id, len(content), 0) + content


def pair(name: bytes, value: bytes) -> bytes:
    def length(n: int) -> bytes:
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)

    return length(len(name)) + length(len(value)) + name + value


def nginx_params(
    script: Path, query: bytes, agent: bytes = b"fcgi_load"
) -> list[tuple[bytes, bytes]]:
    """The params nginx sends for a GET of ``script`` with the shipped
    fcgi_lua_params (bench/engine_run.py uses them too)."""
    uri = b"/" + script.name.encode()
    return [
        (b"SCRIPT_FILENAME", os.fsencode(script)),
        (b"QUERY_STRING", query),
        (b"REQUEST_METHOD", b"GET"),
        (b"CONTENT_TYPE", b""),
        (b"CONTENT_LENGTH", b""),
        (b"SCRIPT_NAME", uri),
        (b"REQUEST_URI", uri + (b"?" + query if query else b"")),
        (b"DOCUMENT_URI", uri),
        (b"DOCUMENT_ROOT", os.fsencode(script.parent)),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"REQUEST_SCHEME", b"http"),
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"SERVER_SOFTWARE", b"nginx/1.22.1"),
        (b"REMOTE_ADDR", b"127.0.0.1"),
        (b"REMOTE_PORT", b"40000"),
        (b"SERVER_ADDR", b"127.0.0.1"),
        (b"SERVER_PORT", b"8080"),
        (b"SERVER_NAME", b"localhost"),
        (b"HTTP_HOST", b"127.0.0.1:8080"),
        (b"HTTP_USER_AGENT", agent),
        (b"HTTP_ACCEPT", b"*/*"),
    ]


def request_bytes(script: Path, query: bytes, keep_conn: bool = True) -> bytes:
    """One GET as nginx sends it (the shipped params), with fastcgi_keep_conn
    on, or off: the responder closes the connection after the answer."""
    params = nginx_params(script, query)
    body = b"".join(pair(n, v) for n, v in params)
    return (
        record(BEGIN, struct.pack(">HB5x", 1, int(keep_conn)))  # responder, FCGI_KEEP_CONN
        + record(PARAMS, body)
        + record(PARAMS, b"")
        + record(STDIN, b"")
    )


async def connection(
    path: str, payload: bytes, count: int, failures: list[bytes], keep_conn: bool = True
) -> None:
    """``count`` requests, on one connection (keep_conn) or one each."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        for i in range(count):
            if i and not keep_conn:
                reader, writer = await asyncio.open_unix_connection(path)
            writer.write(payload)
            status = await read_response(reader)
            if status is not None:
                failures.append(status)
            if not keep_conn:
                await reader.read()  # the responder's close
                writer.close()
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> bytes | None:
    """Reads records up to END_REQUEST; the status line when it is not 200."""
    first = b""
    while True:
        head = await reader.readexactly(8)
        _, kind, _, length, padding = HEADER.unpack(head)
        content = await reader.readexactly(length + padding)
        if kind == 6 and not first:  # STDOUT
            first = content[:40]
        if kind == END:
            if first.startswith(b"Status: 200") or b"Status:" not in first:
                return None
            return first


def cpu_ticks(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime (fields 14, 15)


async def drive(
    path: str, payload: bytes, total: int, connections: int, keep_conn: bool = True
) -> list[bytes]:
    failures: list[bytes] = []
    per = total // connections
    await asyncio.gather(
        *(connection(path, payload, per, failures, keep_conn) for _ in range(connections))
    )
    return failures


def wait_for_socket(path: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the socket accepts: its file exists from bind(), before listen()."""
    deadline = time.monotonic() + 20
    while True:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(path)
                return
            except OSError:
                pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("fcgi-lua did not start")
        time.sleep(0.05)


def start_redis(tmp: str, port: int) -> subprocess.Popen[bytes]:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen([*argv, "--dir", tmp], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--script", default="hello.lua", help="a script in bench/")
    parser.add_argument("--query", default="name=bench", help="(redis scripts: port=N)")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--strace", action="store_true", help="count syscalls per request")
    parser.add_argument(
        "--flame",
        metavar="SVG",
        help="a py-spy record --native flame graph (SVG) of the worker over the measured "
        "part; a name ending in .txt gets the raw collapsed stacks instead",
    )
    parser.add_argument(
        "--perf",
        metavar="DATA",
        help="perf record -g of the worker over the measured part, to DATA (perf report "
        "-i DATA --sort dso: the kernel, libpython, LuaJIT with lupa, uvloop apart)",
    )
    parser.add_argument(
        "--no-keep-conn",
        action="store_true",
        help="a connection per request (nginx without fastcgi_keep_conn, or a full pool)",
    )
    parser.add_argument("-o", dest="options", action="append", default=[], help="KEY=VALUE")
    args = parser.parse_args()

    script = BENCH / args.script
    tmp = tempfile.mkdtemp(prefix="fcgi-load-")
    sock = os.path.join(tmp, "fcgi.sock")
    redis = None
    query = args.query
    if "redis" in args.script:  # its own redis-server, on a free port
        port = free_port()
        redis = start_redis(tmp, port)
        query = f"port={port}"
    options = [item for opt in args.options for item in ("-o", opt)]
    serve = [sys.executable, "-m", "fcgi_lua", "serve", "--listen", f"unix:{sock}"]
    serve += ["--root", str(BENCH), "--workers", "1", *options]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(serve, env=env, stderr=subprocess.DEVNULL)
    strace = None
    try:
        wait_for_socket(sock, proc)
        keep = not args.no_keep_conn
        payload = request_bytes(script, query.encode(), keep)
        asyncio.run(drive(sock, payload, args.warmup, min(args.connections, args.warmup), keep))
        if args.strace:
            out = os.path.join(tmp, "strace.txt")
            strace = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(proc.pid)])
            time.sleep(1.0)  # strace attaches
        spy = None
        if args.flame:
            Path(args.flame).parent.mkdir(parents=True, exist_ok=True)
            argv = ["py-spy", "record", "--native", "--rate", "250"]
            # an SVG, or (a .txt name) py-spy's raw collapsed stacks to sum up
            fmt = "raw" if args.flame.endswith(".txt") else "flamegraph"
            argv += ["--pid", str(proc.pid), "--format", fmt, "--output", args.flame]
            spy = attach(argv)
        perf = None
        if args.perf:
            # PERF_CALLGRAPH="--call-graph dwarf" for callers through C without frame pointers
            graph = os.environ.get("PERF_CALLGRAPH", "-g").split()
            argv = ["perf", "record", *graph, "-F", "2000", "-o", args.perf, "-p", str(proc.pid)]
            perf = attach(argv)
        ticks = cpu_ticks(proc.pid)
        began = time.perf_counter()
        failures = asyncio.run(drive(sock, payload, args.requests, args.connections, keep))
        elapsed = time.perf_counter() - began
        after = cpu_ticks(proc.pid)
        user, system = (after[i] - ticks[i] for i in (0, 1))
        used = (user + system) / os.sysconf("SC_CLK_TCK")
        served = args.requests // args.connections * args.connections
        how = "kept-alive connections" if keep else "connections at a time, one per request"
        print(f"script {args.script}: {served} requests over {args.connections} {how}")
        print(f"  {served / elapsed:,.0f} req/s (client-bound: the client is Python too)")
        print(
            f"  worker CPU {used * 1e6 / served:.1f} us per request "
            f"({100 * system / max(user + system, 1):.0f} % in the kernel)"
        )
        print(f"  failures {len(failures)}" + (f": {failures[0]!r}" if failures else ""))
        if perf is not None:
            detach(perf)
            print(f"  perf data: {args.perf}")
        if spy is not None:
            detach(spy)
            print(f"  flame graph: {args.flame}")
        if strace is not None:
            strace.send_signal(signal.SIGINT)
            strace.wait()
            print_syscalls(Path(out).read_text(), served)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        if redis is not None:
            redis.terminate()
            redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def attach(argv: list[str]) -> subprocess.Popen[bytes]:
    """A profiler (py-spy, perf) started on the worker, given a second to attach."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return proc


def detach(proc: subprocess.Popen[bytes]) -> None:
    """Stop a profiler from attach(): on SIGINT it writes its output."""
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)


def print_syscalls(table: str, served: int) -> None:
    print("  syscalls per request:")
    for line in table.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
            calls = int(parts[3])
            if calls >= served // 20:
                print(f"    {parts[-1]:<16} {calls / served:6.2f}")


if __name__ == "__main__":
    main()
