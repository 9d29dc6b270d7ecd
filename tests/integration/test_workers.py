"""The prefork master, run as users run it: ``fcgi-lua serve --workers 2``.

Workers are real processes; the tests kill, hang, reload and recycle them
and check that requests keep being answered.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fcgi_lua.config import load
from fcgi_lua.limits import MEMORY_CHECK_INTERVAL
from fcgi_lua.workers import HEARTBEAT_INTERVAL, Master
from tests.helpers.net import free_port
from tests.helpers.workers import SCRIPTS, Stack, running_stack, wait_for
from tests.integration.fcgi_client import get


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    extra = getattr(request, "param", "")
    config = f"worker_hang_timeout = 2.0\nshutdown_timeout = 5.0\n{extra}"
    with running_stack(tmp_path, SCRIPTS, config) as stack:
        yield stack


def test_two_workers_share_the_socket_and_a_dead_one_is_replaced(stack: Stack) -> None:
    before = stack.workers()
    assert stack.pid_of_answer() in before
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(stack.workers() - before) == 1, 10, "a replacement worker")
    assert victim not in stack.workers()
    for _ in range(10):
        assert stack.pid_of_answer() in stack.workers()
    assert f"worker {victim} killed by SIGKILL" in stack.log()


def test_worker_pids_are_the_live_workers(stack: Stack) -> None:
    before = stack.workers()
    for _ in range(4):
        response = stack.get("pids.lua")
        pids = [int(p) for p in response.rpartition(b"\r\n\r\n")[2].split()]
        assert pids == sorted(before)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(stack.workers() - before) == 1, 10, "a replacement worker")
    response = stack.get("pids.lua")
    assert [int(p) for p in response.rpartition(b"\r\n\r\n")[2].split()] == sorted(stack.workers())


def test_a_hung_worker_is_killed_and_the_other_keeps_serving(stack: Stack) -> None:
    before = stack.workers()
    outcome: list[object] = []

    def blocked_request() -> None:
        try:
            outcome.append(stack.get("block.lua", timeout=30))
        except (OSError, EOFError) as exc:  # its worker is killed under it
            outcome.append(exc)

    blocker = threading.Thread(target=blocked_request, daemon=True)
    blocker.start()
    time.sleep(0.3)
    # The other worker still answers while one is stuck.
    assert stack.pid_of_answer() in before
    wait_for(lambda: "sent no heartbeat" in stack.log(), 10, "the hang to be noticed")
    wait_for(lambda: len(stack.workers() - before) == 1, 10, "a replacement worker")
    assert "(hung)" in stack.log()
    blocker.join(5)
    assert outcome and not isinstance(outcome[0], bytes)  # that one request is lost


def test_reload_under_load_loses_no_request(stack: Stack) -> None:
    before = stack.workers()
    failures: list[str] = []
    answered = 0
    done = threading.Event()

    def hammer() -> None:
        nonlocal answered
        while not done.is_set():
            try:
                response = stack.get("slow.lua")
            except OSError as exc:
                failures.append(repr(exc))
                continue
            if response.startswith(b"Status: 200"):
                answered += 1
            else:
                failures.append(response[:80].decode("latin-1"))

    clients = [threading.Thread(target=hammer) for _ in range(8)]
    for client in clients:
        client.start()
    time.sleep(0.5)
    stack.process.send_signal(signal.SIGHUP)
    wait_for(lambda: not (stack.workers() & before), 15, "the old workers to leave")
    time.sleep(0.5)
    done.set()
    for client in clients:
        client.join(15)
    assert failures == []
    assert answered > 20
    assert len(stack.workers()) == 2
    assert "reloading: starting 2 new worker(s)" in stack.log()


def test_a_bad_config_on_reload_keeps_the_running_workers(stack: Stack) -> None:
    before = stack.workers()
    stack.config_path.write_text(stack.config_path.read_text() + 'recompile = "sometimes"\n')
    stack.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in stack.log(), 10, "the reload to be refused")
    assert "recompile: must be one of" in stack.log()
    assert stack.workers() == before
    assert stack.pid_of_answer() in before


def test_a_reload_whose_workers_cannot_start_keeps_the_old_ones(tmp_path: Path) -> None:
    """A broken init_script passes config validation (the file exists) but
    kills every new worker at start: the old generation must serve on
    until a later reload starts workers that do come up."""
    init = tmp_path / "init.lua"
    init.write_text("GREETING = 'one'\n")
    scripts = {**SCRIPTS, "greet.lua": "ngx.print(GREETING)"}
    with running_stack(tmp_path, scripts, f'init_script = "{init}"\n') as stack:
        before = stack.workers()
        init.write_text("GREETING = 'two'\nerror('broken on purpose')\n")
        stack.process.send_signal(signal.SIGHUP)
        wait_for(lambda: stack.log().count("broken on purpose") >= 2, 10, "new workers to fail")
        for _ in range(20):  # the old workers answer, with the old init's data
            assert stack.get("greet.lua").endswith(b"\r\n\r\none")
        assert before <= stack.workers()
        assert "retiring" not in stack.log()
        init.write_text("GREETING = 'three'\n")
        stack.process.send_signal(signal.SIGHUP)
        wait_for(lambda: not (stack.workers() & before), 20, "the old workers to leave")
        assert stack.get("greet.lua").endswith(b"\r\n\r\nthree")
        assert "reload: 2 new worker(s) ready; retiring" in stack.log()


def test_a_worker_past_worker_memory_limit_is_killed_and_replaced(tmp_path: Path) -> None:
    # `..` doubles a string in a few instructions, with no hook between
    # them: the Lua soft limit cannot see it before the sleep, the master's
    # RSS check does.
    scripts = {
        "pid.lua": SCRIPTS["pid.lua"],
        "grow.lua": "local s = 'x' for i = 1, 28 do s = s .. s end ngx.sleep(10) ngx.say(#s)",
    }
    config = 'lua_memory_limit = "16m"\nworker_memory_limit = "200m"\n'
    with running_stack(tmp_path, scripts, config) as stack:
        before = stack.workers()
        outcome: list[object] = []

        def growing_request() -> None:
            try:
                outcome.append(stack.get("grow.lua", timeout=20))
            except (OSError, EOFError) as exc:  # its worker is killed under it
                outcome.append(exc)

        grower = threading.Thread(target=growing_request, daemon=True)
        grower.start()
        wait_for(lambda: "exceeded its memory limit" in stack.log(), 10, "the memory kill")
        wait_for(lambda: len(stack.workers() - before) == 1, 10, "a replacement worker")
        assert "(exceeded its memory limit, worker_memory_limit)" in stack.log()
        grower.join(5)
        assert outcome and not isinstance(outcome[0], bytes)  # that one request is lost
        for _ in range(6):  # the other worker and the replacement serve
            assert stack.pid_of_answer() in stack.workers()


@pytest.mark.parametrize("stack", ["max_requests = 3\n"], indirect=True)
def test_max_requests_recycles_a_worker(stack: Stack) -> None:
    first = stack.workers()
    for _ in range(12):
        assert stack.pid_of_answer() > 0
    wait_for(lambda: bool(stack.workers() - first), 10, "a recycled worker")
    assert "recycling this worker" in stack.log()
    assert "recycled (exited with status 0)" in stack.log()


def test_sigterm_waits_for_requests_then_exits_cleanly(stack: Stack) -> None:
    result: list[bytes] = []
    slow = threading.Thread(target=lambda: result.append(stack.get("slow.lua")))
    slow.start()
    time.sleep(0.05)
    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(15) == 0
    slow.join(5)
    assert result and result[0].startswith(b"Status: 200")
    assert "master" in stack.log() and "stopped" in stack.log()


def test_sigterm_refuses_new_connections_at_once_while_requests_finish(stack: Stack) -> None:
    result: list[bytes] = []
    slow = threading.Thread(target=lambda: result.append(stack.get("slower.lua")))
    slow.start()
    time.sleep(0.3)
    stack.process.send_signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            socket.create_connection(stack.address, timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    # Not queued in a backlog nobody accepts from until the master exits.
    wait_for(refused, 1.0, "new connections to be refused")
    assert stack.process.poll() is None  # the slow request still runs
    slow.join(5)
    assert result and result[0].startswith(b"Status: 200")
    assert stack.process.wait(10) == 0


def test_a_crash_loop_replacement_waits_its_back_off_and_no_longer(tmp_path: Path) -> None:
    config = load(None, {"root": str(tmp_path), "workers": 2, "worker_memory_limit": 0})
    master = Master(config, lambda: config, lambda *args: 0)
    assert master._next_turn() == HEARTBEAT_INTERVAL / 2
    master._next_spawn = time.monotonic() + 0.1  # a back-off ending sooner
    assert 0 < master._next_turn() <= 0.1
    master._next_spawn = time.monotonic() - 5  # long over
    assert master._next_turn() == HEARTBEAT_INTERVAL / 2
    # with the memory backstop on, the loop also turns for its RSS checks
    checked = Master(load(None, {"root": str(tmp_path)}), lambda: config, lambda *args: 0)
    assert checked._next_turn() == min(HEARTBEAT_INTERVAL / 2, MEMORY_CHECK_INTERVAL)


def test_one_worker_is_one_process_that_survives_sighup(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "count.lua").write_text(SCRIPTS["count.lua"])
    port = free_port()
    log_path = tmp_path / "fcgi-lua.log"
    argv = [sys.executable, "-m", "fcgi_lua", "serve", "--root", str(root), "--workers", "1"]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*argv, "--listen", f"127.0.0.1:{port}"], stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: "serving" in log_path.read_text(), 20, "the process to serve")
        assert "master" not in log_path.read_text()
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP ignored" in log_path.read_text(), 5, "SIGHUP to be logged")
        response = get(("127.0.0.1", port), str(root / "count.lua"))
        assert response.endswith(b"\r\n\r\n1\n"), response
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


def test_run_is_one_process_whatever_workers_says(tmp_path: Path) -> None:
    script = tmp_path / "count.lua"
    script.write_text(SCRIPTS["count.lua"])
    config = tmp_path / "fcgi-lua.toml"
    config.write_text("workers = 4\n")
    result = subprocess.run(
        [sys.executable, "-m", "fcgi_lua", "run", str(script), "--config", str(config)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(b"\r\n\r\n1\n"), result.stdout
