"""init_script and init_worker_script through real nginx.

The module runs its own ``fcgi-lua serve --workers 2`` (behind its own
nginx, the shipped nginx/ snippet and upstream) with both scripts set:

- init_script loads a module (from lua_package_path) and defines globals;
  every request of a worker sees the same module table and the globals,
  a request's own global assignments never reach the next request, and a
  change to a field of the shared table does (as in OpenResty);
- init_worker_script starts timers that sleep, talk to a TCP peer over a
  cosocket and write to ngx.shared.DICT, which requests then read;
- SIGHUP runs both again in the new workers, from the files as they are;
- a broken init_script stops the worker before it serves, with the file
  and line in the log: ``serve --workers 1`` exits 1, a master backs off.
"""

from __future__ import annotations

import os
import re
import signal
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .e2e_clients import http_request
from .e2e_stack import (
    FCGI_ERROR,
    NGINX,
    Service,
    Stack,
    fcgi_lua_argv,
    free_port,
    render_shipped_nginx_conf,
    wait_for,
)

pytestmark = pytest.mark.e2e

WORKERS = 2
RUNS = [1, 2]
ZONE = "init_state"

SHARED_DATA = """
-- loaded once per worker, by init_script
local _M = { _VERSION = "0.1", hits = 0, words = { "alpha", "beta", "gamma" } }
return _M
"""

INIT = """
-- init_script: runs in every worker's VM before it serves
data = require "shared_data"
INIT_VERSION = "{version}"
INIT_PHASE = ngx.get_phase()
INIT_PID = ngx.worker.pid()
ngx.shared.{zone}:add("first_init_pid", ngx.worker.pid())
ngx.log(ngx.NOTICE, "init_script ran, version ", INIT_VERSION)
"""

INIT_WORKER = """
-- init_worker_script: starts this worker's timers
local state = ngx.shared.{zone}
local id = ngx.worker.id()
state:incr("init_worker_runs", 1, 0)
state:set("count:" .. id, ngx.worker.count())
INIT_WORKER_PHASE = ngx.get_phase()

local function poll(premature)
    if premature then
        return
    end
    ngx.sleep(0.01)
    local sock = ngx.socket.tcp()
    sock:settimeout(2000)
    local ok, err = sock:connect("127.0.0.1", {echo_port})
    if not ok then
        ngx.log(ngx.ERR, "init_worker timer: connect: ", err)
        return
    end
    sock:send("ping " .. id .. "\\n")
    local line = sock:receive()
    sock:close()
    state:set("tcp:" .. id, line)
    state:set("timer_phase", ngx.get_phase())
end

assert(ngx.timer.at(0, poll))
assert(ngx.timer.every(0.05, function(premature)
    if not premature then
        state:incr("ticks:" .. id, 1, 0)
    end
end))
"""

READ_INIT = """
local data2 = require "shared_data"
data.hits = data.hits + 1             -- the shared table: seen by later requests
ngx.say("pid=", ngx.worker.pid())
ngx.say("hits=", data.hits)
ngx.say("same_module=", tostring(data == data2))
ngx.say("words=", table.concat(data.words, ","))
ngx.say("phase=", INIT_PHASE, " ", INIT_WORKER_PHASE, " ", ngx.get_phase())
ngx.say("init_pid_is_mine=", tostring(INIT_PID == ngx.worker.pid()))
ngx.say("version=", INIT_VERSION)
ngx.say("leaked=", tostring(request_global))
request_global = "set by request " .. ngx.var.arg_n  -- this request's own
INIT_VERSION = "overwritten by a request"           -- this request's own copy
"""

TIMER_STATE = """
local state = ngx.shared.{zone}
for _, key in ipairs({{ "tcp:0", "tcp:1", "ticks:0", "ticks:1", "count:0", "count:1",
                        "timer_phase", "init_worker_runs" }}) do
    ngx.say(key, "=", tostring(state:get(key)))
end
"""

BROKEN_INIT = """local settings = { port = 80 }
local backend = settings.backend.host -- line 2: backend is nil
"""


class EchoHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        self.wfile.write(b"echo " + line)


@dataclass
class InitPool:
    """fcgi-lua with WORKERS workers and both init scripts, nginx in front."""

    stack: Stack
    fcgi: Service
    url: str
    init: Path

    def get(self, path: str) -> dict[str, str]:
        resp = http_request(self.url, path)
        assert resp.status == 200, (resp.status, resp.text, self.fcgi.log_text()[-2000:])
        return dict(line.split("=", 1) for line in resp.text.splitlines())

    def workers(self) -> set[int]:
        return children(self.fcgi.proc.pid)

    def log(self) -> str:
        return self.fcgi.log_text()


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def number(text: str) -> float:
    """A Lua number as ngx.say printed it ("nil" counts as none)."""
    return 0.0 if text == "nil" else float(text)


def new_stack(tmp: Path, name: str) -> Stack:
    root = tmp / "root"
    root.mkdir()
    (root / "hello.lua").write_text('ngx.say("hello")\n')  # Stack.wait_until's probe
    (tmp / "logs").mkdir()
    sock = Path(f"/tmp/fcgi-lua-e2e-{os.getpid()}-{name}.sock")
    sock.unlink(missing_ok=True)
    return Stack(
        tmp=tmp,
        root=root,
        outside=root,
        unix_socket=sock,
        # the session stack's other instances; unused here
        debug_socket=sock,
        bodies_socket=sock,
        tcp_address=("127.0.0.1", 0),
        nginx_error_log=tmp / "logs" / "nginx-error.log",
    )


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), EchoHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, echo_port: int) -> Iterator[InitPool]:
    assert NGINX is not None
    tmp = tmp_path_factory.mktemp("init")
    stack = new_stack(tmp, "init")
    lib = tmp / "lib"
    lib.mkdir()
    (lib / "shared_data.lua").write_text(SHARED_DATA)
    init = tmp / "init.lua"
    init.write_text(INIT.format(version="v1", zone=ZONE))
    init_worker = tmp / "init_worker.lua"
    init_worker.write_text(INIT_WORKER.format(zone=ZONE, echo_port=echo_port))
    (stack.root / "read_init.lua").write_text(READ_INIT)
    (stack.root / "timer_state.lua").write_text(TIMER_STATE.format(zone=ZONE))
    try:
        fcgi = stack.start(
            "fcgi-lua",
            fcgi_lua_argv(
                "serve",
                "--listen",
                f"unix:{stack.unix_socket}",
                "--root",
                str(stack.root),
                "--workers",
                str(WORKERS),
                "-o",
                f"init_script={init}",
                "-o",
                f"init_worker_script={init_worker}",
                "-o",
                f"lua_package_path={lib}/?.lua;;",
                "-o",
                f'shared_dicts={{{ZONE}="1m"}}',
                "-o",
                f"shared_dict_path={tmp / 'shdict'}",
                "-o",
                "shutdown_timeout=5",
            ),
            tmp / "logs" / "fcgi-lua.log",
        )
        stack.wait_until(fcgi, str(stack.unix_socket), fastcgi=True)
        pool = InitPool(stack, fcgi, "", init)
        wait_for(lambda: pool.log().count(" serving ") == WORKERS, 20, "every worker to serve")
        port = free_port()
        conf = render_shipped_nginx_conf(stack, port, connections=256)
        nginx_argv = [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(stack.nginx_error_log)]
        nginx = stack.start("nginx", [*nginx_argv, "-g", "daemon off;"], tmp / "logs" / "nginx.log")
        stack.wait_until(nginx, ("127.0.0.1", port))
        pool.url = f"http://127.0.0.1:{port}"
        yield pool
    finally:
        problems = stack.stop()
        stack.unix_socket.unlink(missing_ok=True)
    assert not problems, "; ".join(problems) + "\n" + stack.service("fcgi-lua").log_text()[-3000:]
    errors = [line for line in stack.service("fcgi-lua").log_text().splitlines()]
    errors = [line for line in errors if FCGI_ERROR.search(line)]
    assert not errors, "fcgi-lua logged errors:\n" + "\n".join(errors)


@pytest.mark.parametrize("run", RUNS)
def test_init_data_is_shared_and_request_globals_stay_per_request(pool: InitPool, run: int) -> None:
    hits_by_pid: dict[str, list[int]] = {}
    for n in range(12):
        got = pool.get(f"/read_init.lua?n={n}")
        assert got["same_module"] == "true"
        assert got["words"] == "alpha,beta,gamma"
        assert got["phase"] == "init init_worker content"
        assert got["init_pid_is_mine"] == "true"  # each worker ran init_script itself
        assert got["version"].startswith("v")  # the shared global, never a request's
        assert got["leaked"] == "nil"  # no request sees another's global
        hits_by_pid.setdefault(got["pid"], []).append(int(got["hits"]))
    # Each worker's module table counts its own requests, one by one.
    for pid, hits in hits_by_pid.items():
        assert hits == list(range(hits[0], hits[0] + len(hits))), (pid, hits)
    assert set(hits_by_pid) <= {str(pid) for pid in pool.workers()}


@pytest.mark.parametrize("run", RUNS)
def test_timers_started_by_init_worker_reach_requests(pool: InitPool, run: int) -> None:
    def ready() -> bool:
        state = pool.get("/timer_state.lua")
        return all(
            state[f"tcp:{i}"] != "nil" and number(state[f"ticks:{i}"]) >= 2 for i in range(WORKERS)
        )

    wait_for(ready, 10, "both workers' timers")
    state = pool.get("/timer_state.lua")
    for i in range(WORKERS):
        # a cosocket in a timer started by init_worker_script, after a sleep
        assert state[f"tcp:{i}"] == f"echo ping {i}"
        assert number(state[f"count:{i}"]) == WORKERS  # ngx.worker.count() there
        assert number(state[f"ticks:{i}"]) >= 2  # an ngx.timer.every
    assert state["timer_phase"] == "timer"
    assert number(state["init_worker_runs"]) >= WORKERS


def test_reload_runs_both_scripts_again_in_the_new_workers(pool: InitPool) -> None:
    before = pool.workers()
    runs_before = number(pool.get("/timer_state.lua")["init_worker_runs"])
    version = f"v-reload-{time.monotonic_ns()}"
    pool.init.write_text(INIT.format(version=version, zone=ZONE))
    os.kill(pool.fcgi.proc.pid, signal.SIGHUP)
    wait_for(lambda: not (pool.workers() & before), 15, "the old workers to leave")
    wait_for(lambda: len(pool.workers()) == WORKERS, 15, f"{WORKERS} new workers")
    # the new workers read the file as it is now
    for n in range(6):
        got = pool.get(f"/read_init.lua?n={n}")
        assert got["version"] == version
        assert int(got["pid"]) in pool.workers()
    wait_for(
        lambda: number(pool.get("/timer_state.lua")["init_worker_runs"]) == runs_before + WORKERS,
        10,
        "init_worker_script to run in each new worker",
    )
    assert pool.log().count(f"init_script ran, version {version}") == WORKERS


# -- a broken init_script ---------------------------------------------------------------


def test_broken_init_script_single_process_exits_1_naming_file_and_line(tmp_path: Path) -> None:
    stack = new_stack(tmp_path, "broken1")
    broken = tmp_path / "broken_init.lua"
    broken.write_text(BROKEN_INIT)
    argv = fcgi_lua_argv(
        "serve",
        "--listen",
        f"unix:{stack.unix_socket}",
        "--root",
        str(stack.root),
        "--workers",
        "1",
        "-o",
        f"init_script={broken}",
    )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1, result.stderr
    assert f"init_script error: {broken}:2: attempt to index" in result.stderr
    assert "exits without accepting requests" in result.stderr
    assert " serving " not in result.stderr
    stack.unix_socket.unlink(missing_ok=True)


def test_broken_init_script_with_a_master_backs_off_and_never_serves(tmp_path: Path) -> None:
    stack = new_stack(tmp_path, "broken2")
    broken = tmp_path / "broken_init.lua"
    broken.write_text(BROKEN_INIT)
    log = tmp_path / "logs" / "fcgi-lua.log"
    fcgi = stack.start(
        "fcgi-lua",
        fcgi_lua_argv(
            "serve",
            "--listen",
            f"unix:{stack.unix_socket}",
            "--root",
            str(stack.root),
            "--workers",
            "2",
            "-o",
            f"init_script={broken}",
        ),
        log,
    )
    try:
        wait_for(lambda: "replacing it in 1.0s" in fcgi.log_text(), 15, "a back-off")
        time.sleep(1.5)
        text = fcgi.log_text()
        assert f"init_script error: {broken}:2: attempt to index" in text
        assert " serving " not in text
        # crash-loop back-off, not a spin: a handful of tries in ~2 s
        tries = len(re.findall(r"started worker \d+", text))
        assert 2 <= tries <= 8, text
        assert fcgi.proc.poll() is None  # the master itself stays up
    finally:
        problems = stack.stop()
        stack.unix_socket.unlink(missing_ok=True)
    assert not problems, "; ".join(problems) + "\n" + fcgi.log_text()[-3000:]
