"""ngx.shared.DICT across real worker processes: ``fcgi-lua serve --workers 4``
with one zone, 40,000 incr requests from many connections at once; the
count must be exact (every incr is one LMDB write transaction)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import free_port
from tests.integration.fcgi_client import begin, get, params, read_until_ended

WORKERS = 4
REQUESTS = 40_000
CONNECTIONS = 16
PIPELINE = 50  # requests in flight per connection

SCRIPTS = {
    "incr.lua": 'ngx.shared.counters:incr("hits", 1, 0) ngx.print(ngx.worker.pid())',
    "read.lua": 'ngx.print(ngx.shared.counters:get("hits"))',
    "set.lua": "ngx.print((ngx.shared.counters:set(ngx.var.arg_k, ngx.var.arg_v)))",
    "get.lua": "ngx.print(tostring(ngx.shared.counters:get(ngx.var.arg_k)))",
    "pid.lua": "ngx.print(ngx.worker.pid())",
}


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    address: tuple[str, int]
    root: Path
    store: Path
    log_path: Path

    def get(self, script: str, query: str = "") -> bytes:
        response = get(self.address, str(self.root / script), query)
        assert response.startswith(b"Status: 200"), response
        return response.rpartition(b"\r\n\r\n")[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    for name, text in SCRIPTS.items():
        (root / name).write_text(text)
    store = tmp_path / "shdict"
    store.mkdir()
    (store / "stale-file").write_text("from a previous run")
    port = free_port()
    config = tmp_path / "fcgi-lua.toml"
    config.write_text(
        f'root = "{root}"\nlisten = ["127.0.0.1:{port}"]\nworkers = {WORKERS}\n'
        f'shared_dict_path = "{store}"\nlog_level = "warning"\n'
        '[shared_dicts]\ncounters = "1m"\n'
    )
    log_path = tmp_path / "fcgi-lua.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "fcgi_lua", "serve", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, ("127.0.0.1", port), root, store, log_path)
    try:
        # Ready when every worker has answered once: the tests below rely on
        # requests spreading over several of them.
        deadline = time.monotonic() + 20
        seen: set[bytes] = set()
        while len(seen) < WORKERS:
            with contextlib.suppress(OSError):  # not listening yet
                seen.add(server.get("pid.lua"))
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"{len(seen)} of {WORKERS} workers answered:\n" + log_path.read_text())
            time.sleep(0.02)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _hammer(server: Server, count: int, pids: set[int], failures: list[str]) -> None:
    script = str(server.root / "incr.lua")
    try:
        with socket.create_connection(server.address, timeout=30) as sock:
            sent = 0
            while sent < count:
                batch = range(1, min(PIPELINE, count - sent) + 1)
                for request_id in batch:
                    begin(sock, request_id, keep_conn=True)
                    params(sock, request_id, {"REQUEST_METHOD": "GET", "SCRIPT_FILENAME": script})
                out, _ = read_until_ended(sock, set(batch))
                for response in out.values():
                    if not response.startswith(b"Status: 200"):
                        failures.append(response.decode("utf-8", "replace"))
                        return
                    pids.add(int(response.rpartition(b"\r\n\r\n")[2]))
                sent += len(batch)
    except Exception as exc:  # reported by the test, not lost in a thread
        failures.append(repr(exc))


def test_incr_from_four_workers_is_exact(server: Server) -> None:
    assert not (server.store / "stale-file").exists(), "the master clears the store at start"
    pids: set[int] = set()
    failures: list[str] = []
    threads = [
        threading.Thread(target=_hammer, args=(server, REQUESTS // CONNECTIONS, pids, failures))
        for _ in range(CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[:3]
    assert server.get("read.lua") == str(REQUESTS).encode()
    assert len(pids) >= 2, f"only {pids} answered: the test did not cross workers"


def test_a_value_set_in_one_worker_is_read_in_the_others(server: Server) -> None:
    assert server.get("set.lua", "k=greeting&v=hello") == b"true"
    # fresh connections land on any worker: every one sees the value
    for _ in range(20):
        assert server.get("get.lua", "k=greeting") == b"hello"


def test_the_store_is_removed_when_the_server_stops(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(15) == 0
    assert not server.store.exists()
