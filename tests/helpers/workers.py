"""A real prefork master for the integration tests: ``fcgi-lua serve``
with 2 workers on a free port, and what the tests ask of it."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.net import free_port
from tests.integration.fcgi_client import get

SCRIPTS = {
    "pid.lua": "ngx.say(ngx.worker.pid())",
    "slow.lua": "ngx.sleep(0.2) ngx.say(ngx.worker.pid())",
    "slower.lua": "ngx.sleep(2) ngx.say(ngx.worker.pid())",
    "count.lua": "ngx.say(ngx.worker.count())",
    "pids.lua": "ngx.say(table.concat(ngx.worker.pids(), ' '))",
    # A blocking call: the worker's event loop stops, and so do its heartbeats.
    "block.lua": 'os.execute("sleep 30") ngx.say("woke")',
}


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    address: tuple[str, int]
    root: Path
    log_path: Path
    config_path: Path

    def get(self, script: str, timeout: float = 10) -> bytes:
        return get(self.address, str(self.root / script), timeout=timeout)

    def pid_of_answer(self, script: str = "pid.lua") -> int:
        response = self.get(script)
        assert response.startswith(b"Status: 200"), response
        return int(response.rpartition(b"\r\n\r\n")[2])

    def workers(self) -> set[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return {int(pid) for pid in out.split()}

    def log(self) -> str:
        return self.log_path.read_text()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@contextlib.contextmanager
def running_stack(
    tmp_path: Path, scripts: dict[str, str], config: str, stop_signal: int = signal.SIGINT
) -> Iterator[Stack]:
    """``fcgi-lua serve`` with 2 workers on a free port, ``config`` appended
    to its TOML file; stopped with ``stop_signal`` at the end."""
    root = tmp_path / "www"
    root.mkdir()
    for name, text in scripts.items():
        (root / name).write_text(text)
    port = free_port()
    config_path = tmp_path / "fcgi-lua.toml"
    config_path.write_text(f'root = "{root}"\nlisten = ["127.0.0.1:{port}"]\nworkers = 2\n{config}')
    log_path = tmp_path / "fcgi-lua.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "fcgi_lua", "serve", "--config", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    stack = Stack(process, ("127.0.0.1", port), root, log_path, config_path)
    try:
        wait_for(lambda: len(stack.workers()) == 2, 20, "two workers")
        wait_for(lambda: stack.log().count("serving") >= 2, 20, "workers to listen")
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(stop_signal)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
