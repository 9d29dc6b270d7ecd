"""The prefork master under load, through real nginx, driven by wrk.

Each test runs its own ``fcgi-lua serve --workers 3`` behind its own nginx
(the shipped nginx/ snippet and upstream, keepalive pool included): killing,
reloading or stopping them must leave the session stack alone.  wrk keeps
CONNECTIONS connections busy with a script that sleeps SLEEP seconds and
answers its worker's pid, so every worker has requests in flight when the
signal lands; a wrk ``done`` script prints the counts (statuses, socket
errors, answers per pid) as one JSON line.

- kill -9 of one worker: at most one request fails per connection that
  worker held (nginx sends one request at a time on a FastCGI connection),
  the others keep succeeding, and a new worker replaces it and serves.
- SIGHUP: zero socket errors, zero non-2xx, every worker replaced.
- SIGTERM: every request a worker had started ends with a 200 to the
  client (the access log and wrk agree), the master exits 0.

The figures printed here (``pytest -s``) are the ones in docs/operations.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .e2e_clients import fastcgi_request, http_request
from .e2e_stack import (
    NGINX,
    Service,
    Stack,
    fcgi_lua_argv,
    free_port,
    render_shipped_nginx_conf,
    wait_for,
)

WRK = shutil.which("wrk")
WORKERS = 3
# More connections than workers, so each worker holds several; few enough
# that 2 shared cores keep up (12 x 1/SLEEP = 240 requests/s).
CONNECTIONS = 12
SLEEP = 0.05
SCRIPTS = {
    "hello.lua": 'ngx.say("hello")\n',  # Stack.wait_until's probe
    "work.lua": f"ngx.sleep({SLEEP})\nngx.say(ngx.worker.pid())\n",
}
# One JSON line: wrk's summary, plus responses by status and by the pid in
# their body (each wrk thread counts in its own Lua state; done() adds up).
WRK_SCRIPT = """
{method}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
statuses, pids = {{}}, {{}}
function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    local pid = status == 200 and body:match("^(%d+)")
    if pid then pids[pid] = (pids[pid] or 0) + 1 end
end
local function add(into, from)
    for k, v in pairs(from) do into[tostring(k)] = (into[tostring(k)] or 0) + v end
end
local function object(t)
    local parts = {{}}
    for k, v in pairs(t) do parts[#parts + 1] = string.format('"%s":%d', k, v) end
    return "{{" .. table.concat(parts, ",") .. "}}"
end
function done(summary, latency, requests)
    local all_statuses, all_pids = {{}}, {{}}
    for _, thread in ipairs(threads) do
        add(all_statuses, thread:get("statuses"))
        add(all_pids, thread:get("pids"))
    end
    local e = summary.errors
    io.write(string.format(
        'WRK_RESULT {{"requests":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,'
        .. '"statuses":%s,"pids":%s}}\\n',
        summary.requests, e.connect, e.read, e.write, e.timeout,
        object(all_statuses), object(all_pids)))
end
"""
POST = """
wrk.method = "POST"
wrk.body = "a=1"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")

pytestmark = pytest.mark.skipif(
    WRK is None and not os.environ.get("CI"), reason="wrk not found (apt-get install wrk)"
)


@dataclass
class WrkResult:
    requests: int  # complete responses, any status
    connect: int
    read: int
    write: int
    timeout: int
    statuses: dict[int, int]
    pids: dict[int, int]  # 200 answers by the worker pid in their body
    output: str

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def failed(self) -> int:
        """Requests that did not end in a 200: non-2xx plus socket errors."""
        return self.requests - self.ok + self.connect + self.read + self.write + self.timeout


@dataclass
class Pool:
    """fcgi-lua with WORKERS workers on a Unix socket, nginx in front."""

    stack: Stack
    fcgi: Service
    url: str
    access_log: Path

    @property
    def master(self) -> int:
        return self.fcgi.proc.pid

    def workers(self) -> set[int]:
        return children(self.master)

    def log(self) -> str:
        return self.fcgi.log_text()

    def wrk(self, seconds: int, method: str = "GET") -> subprocess.Popen[str]:
        script = self.stack.tmp / f"wrk-{method}.lua"
        script.write_text(WRK_SCRIPT.format(method=POST if method == "POST" else ""))
        argv = [WRK or "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s"]
        argv += ["-s", str(script), f"{self.url}/work.lua?wrk"]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def answering_pid(self) -> int:
        """The pid of the worker that answers one new FastCGI connection."""
        params: dict[str, str | bytes] = {
            "SCRIPT_FILENAME": str(self.stack.root / "work.lua"),
            "REQUEST_METHOD": "GET",
        }
        result = fastcgi_request(str(self.stack.unix_socket), params, timeout=5)
        assert result.response.status == 200, result.response
        return int(result.response.body)


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:  # fields: state, ppid, ...
            found.add(int(stat.parent.name))
    return found


def connections_of(pid: int, socket_path: Path) -> int:
    """Connections to ``socket_path`` that process ``pid`` holds: the
    accepted sockets (/proc/net/unix names them by the listener's path)
    among the process's open sockets."""
    listening = 0x10000  # __SO_ACCEPTCON
    accepted = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[7] == str(socket_path) and not int(parts[3], 16) & listening:
            accepted.add(parts[6])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in accepted:
            held += 1
    return held


def wrk_result(proc: subprocess.Popen[str], timeout: float = 30) -> WrkResult:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output
    line = next((x for x in output.splitlines() if x.startswith("WRK_RESULT ")), None)
    assert line is not None, f"wrk printed no result line:\n{output}"
    data = json.loads(line.removeprefix("WRK_RESULT "))
    return WrkResult(
        requests=data["requests"],
        connect=data["connect"],
        read=data["read"],
        write=data["write"],
        timeout=data["timeout"],
        statuses={int(k): v for k, v in data["statuses"].items()},
        pids={int(k): v for k, v in data["pids"].items()},
        output=output,
    )


def log_time(log: str, needle: str) -> float:
    """Epoch time of the first log line containing ``needle``."""
    for line in log.splitlines():
        match = LOG_TIME.match(line)
        if match and needle in line:
            stamp = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
            return stamp + int(match.group(2)) / 1000
    raise AssertionError(f"no log line with {needle!r}:\n{log}")


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    assert NGINX is not None
    root = tmp_path / "root"
    root.mkdir()
    for name, text in SCRIPTS.items():
        (root / name).write_text(text)
    (tmp_path / "logs").mkdir()
    sock = Path(f"/tmp/fcgi-lua-e2e-{os.getpid()}-procs.sock")
    sock.unlink(missing_ok=True)
    stack = Stack(
        tmp=tmp_path,
        root=root,
        outside=root,
        unix_socket=sock,
        # the session stack's other instances; unused here
        debug_socket=sock,
        bodies_socket=sock,
        tcp_address=("127.0.0.1", 0),
        nginx_error_log=tmp_path / "logs" / "nginx-error.log",
    )
    access_log = tmp_path / "logs" / "access.log"
    try:
        fcgi = stack.start(
            "fcgi-lua",
            fcgi_lua_argv(
                "serve",
                "--listen",
                f"unix:{sock}",
                "--root",
                str(root),
                "--workers",
                str(WORKERS),
                # the default: nginx retires a busy kept-alive connection
                # (keepalive_time 5s in the shipped upstream) before a
                # draining worker would close it under a request
                "-o",
                "shutdown_timeout=10",
                "-o",
                f"access_log={access_log}",
            ),
            tmp_path / "logs" / "fcgi-lua.log",
        )
        stack.wait_until(fcgi, str(sock), fastcgi=True)
        pool = Pool(stack, fcgi, "", access_log)
        wait_for(lambda: len(pool.workers()) == WORKERS, 20, f"{WORKERS} workers")
        wait_for(lambda: pool.log().count(" serving ") == WORKERS, 20, "every worker to serve")
        port = free_port()
        conf = render_shipped_nginx_conf(stack, port)
        nginx_argv = [NGINX, "-p", str(tmp_path), "-c", str(conf), "-e", str(stack.nginx_error_log)]
        nginx = stack.start(
            "nginx", [*nginx_argv, "-g", "daemon off;"], tmp_path / "logs" / "nginx.log"
        )
        stack.wait_until(nginx, ("127.0.0.1", port))
        pool.url = f"http://127.0.0.1:{port}"
        assert http_request(pool.url, "/work.lua").status == 200
        yield pool
    finally:
        problems = stack.stop()
        sock.unlink(missing_ok=True)
    assert not problems, "; ".join(problems) + "\n" + stack.service("fcgi-lua").log_text()[-3000:]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_kill_9_fails_only_the_requests_of_that_worker(pool: Pool, method: str) -> None:
    before = pool.workers()
    load = pool.wrk(6, method)
    # Past the master's crash-loop window (a worker dying within 2 s of its
    # start is replaced after a back-off): this is the ordinary case.
    time.sleep(2.5)
    held = {pid: connections_of(pid, pool.stack.unix_socket) for pid in before}
    victim = max(held, key=held.__getitem__)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    wait_for(lambda: len(pool.workers() - before) == 1, 10, "a replacement worker")
    (new,) = pool.workers() - before
    wait_for(lambda: f"pid {new})" in pool.log(), 10, "the replacement to serve")
    result = wrk_result(load)
    started = log_time(pool.log(), f"started worker {new} ")
    serving = log_time(pool.log(), f"pid {new})")
    print(
        f"\nkill -9 under wrk ({method}, {CONNECTIONS} connections, {WORKERS} workers): "
        f"victim held {held[victim]} of {sum(held.values())} connections; "
        f"{result.ok} answered, {result.failed} failed {result.statuses}; "
        f"replacement forked after {started - killed_at:.3f}s, "
        f"serving after {serving - killed_at:.3f}s"
    )
    # nginx sends one request at a time on a FastCGI connection: what the
    # victim held bounds what it took down (nginx retries a GET that met a
    # kept-alive connection dying under it, so GETs may lose none).
    assert held[victim] > 0, held  # it had requests to lose
    assert result.failed <= held[victim], result.output
    assert set(result.statuses) <= {200, 502}, result.output
    assert result.ok > 200, result.output
    # The others kept serving (how many connections each got is up to
    # which worker's accept() won: often one holds most of them).
    assert sum(result.pids.get(pid, 0) for pid in before - {victim}) > 0, result.pids
    assert victim not in pool.workers() and len(pool.workers()) == WORKERS
    assert f"worker {victim} killed by SIGKILL" in pool.log()
    # The replacement takes new connections like the others.
    wait_for(lambda: pool.answering_pid() == new, 10, f"worker {new} to answer")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_sighup_under_load_loses_nothing_and_replaces_every_worker(pool: Pool, method: str) -> None:
    # POST too: nginx never retries one, so a worker closing a kept-alive
    # connection under nginx's next request would show as a 502 here.
    before = pool.workers()
    # The old workers keep serving nginx's kept-alive connections while
    # they are busy (protocol.py, DRAIN_IDLE_SECONDS) until nginx retires
    # them (keepalive_time 5s, counted from wrk's start): wrk runs past
    # that, so the new generation serves too.
    load = pool.wrk(8, method)
    time.sleep(1.5)
    os.kill(pool.master, signal.SIGHUP)
    hup_at = time.time()
    wait_for(lambda: not (pool.workers() & before), 10, "the old workers to leave")
    old_gone = time.time()
    wait_for(lambda: len(pool.workers()) == WORKERS, 10, f"{WORKERS} new workers")
    after = pool.workers()
    result = wrk_result(load)
    ready = max(log_time(pool.log(), f"pid {pid})") for pid in after)
    print(
        f"\nSIGHUP under wrk ({method}, {CONNECTIONS} connections, {WORKERS} workers): "
        f"{result.ok} answered, {result.failed} failed {result.statuses}; "
        f"new workers all serving after {ready - hup_at:.3f}s, "
        f"old ones gone after {old_gone - hup_at:.3f}s"
    )
    assert result.failed == 0, result.output
    assert set(result.statuses) == {200}, result.output
    assert result.ok > 200, result.output
    assert not after & before and len(after) == WORKERS
    assert set(result.pids) & after, (result.pids, after)  # the new generation served
    assert set(result.pids) & before, (result.pids, before)  # and so did the old one
    assert f"reloading: starting {WORKERS} new worker(s)" in pool.log()


def test_sigterm_under_load_finishes_what_the_workers_started(pool: Pool) -> None:
    # wrk outlasts the stop (busy connections retired by nginx 5 s after
    # wrk's start): requests it cuts off at its own end would be logged 499
    # and prove nothing about the stop.
    load = pool.wrk(8)
    time.sleep(1.5)
    os.kill(pool.master, signal.SIGTERM)
    assert pool.fcgi.proc.wait(10) == 0, pool.log()
    pool.stack.services.remove(pool.fcgi)  # stopped on purpose, not died
    result = wrk_result(load)
    log = pool.log()
    # Each worker logs how many requests it waits for (if any), never a cancel.
    waited = [int(n) for n in re.findall(r"waiting up to [\d.]+s for (\d+) request", log)]
    lines = [x for x in pool.access_log.read_text().splitlines() if "/work.lua?wrk " in x]
    statuses = [line.split('"')[2].split()[0] for line in lines]
    print(
        f"\nSIGTERM under wrk: workers waited for {waited} request(s); "
        f"{result.ok} answered, then {result.failed} refused {result.statuses}"
    )
    assert waited and sum(waited) > 0, log  # the stop did meet requests in flight
    assert "cancelled" not in log, log
    # Every request fcgi-lua started was answered 200 and reached wrk.
    assert set(statuses) == {"200"}, statuses
    assert result.ok == len(statuses), (result.output, len(statuses))
    assert set(result.statuses) <= {200, 502}, result.output
