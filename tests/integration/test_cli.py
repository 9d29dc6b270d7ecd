"""The command line, as a user runs it: ``fcgi-lua run`` and start-up errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def fcgi_lua(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "fcgi_lua", *args],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def test_run_prints_the_whole_response(tmp_path: Path) -> None:
    script = tmp_path / "echo.lua"
    script.write_text(
        "local args = ngx.req.get_uri_args()\n"
        'ngx.header["X-Method"] = ngx.req.get_method()\n'
        'ngx.say("name=", args.name, " ua=", ngx.var.http_user_agent)\n'
        "ngx.req.read_body()\n"
        'ngx.say("body=", ngx.req.get_body_data())\n'
    )
    body = tmp_path / "body.txt"
    body.write_bytes(b"payload")
    result = fcgi_lua(
        "run", str(script), "--method", "POST", "--query", "name=Lua",
        "--header", "User-Agent: tester", "--body", str(body),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    head, _, payload = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 200 OK\r\n")
    assert b"\r\nX-Method: POST" in head
    assert payload == b"name=Lua ua=tester\nbody=payload\n"


def test_run_error_exit_status_and_debug_traceback(tmp_path: Path) -> None:
    script = tmp_path / "boom.lua"
    script.write_text('local x = 1\nerror("boom")\n')
    plain = fcgi_lua("run", str(script))
    assert plain.returncode == 1
    assert plain.stdout.startswith(b"Status: 500 Internal Server Error")
    assert b"boom" not in plain.stdout  # no traceback without --debug
    assert b"boom.lua:2: boom" in plain.stderr  # but always logged with script:line
    debug = fcgi_lua("run", str(script), "--debug")
    assert b"boom.lua:2: boom" in debug.stdout
    assert b"stack traceback" in debug.stdout


def test_syntax_error_names_script_and_line(tmp_path: Path) -> None:
    script = tmp_path / "syntax.lua"
    script.write_text('ngx.say("ok")\nlocal = 3\n')
    result = fcgi_lua("run", str(script))
    assert result.returncode == 1
    assert b"syntax.lua:2:" in result.stderr


def test_bad_config_fails_at_start_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "fcgi-lua.toml"
    config.write_text(f'root = "{tmp_path}"\nrecompile = "sometimes"\n')
    result = fcgi_lua("serve", "--config", str(config))
    assert result.returncode == 2
    assert str(config).encode() in result.stderr
    assert b"recompile: must be one of mtime, always, never" in result.stderr


def test_missing_script_and_unknown_option() -> None:
    assert fcgi_lua("run", "/no/such/script.lua").returncode == 2
    result = fcgi_lua("serve", "--root", "/tmp", "-o", "colour=blue")
    assert result.returncode == 2
    assert b"unknown key 'colour'" in result.stderr


def _serving_environ(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """Start ``serve`` (one process) on a Unix socket; once it listens, the
    environment of the process we started (it may have replaced itself)."""
    sock = tmp_path / "s.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fcgi_lua", "serve", "--listen", f"unix:{sock}",
         "--root", str(tmp_path), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_UNIX) as probe:
                if probe.connect_ex(str(sock)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("serve never listened")
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        return dict(item.decode().partition("=")[::2] for item in environ if b"=" in item)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def test_serve_runs_on_the_system_malloc_in_the_same_process(tmp_path: Path) -> None:
    # the pid we started serves (it replaced itself in place, as supervisord
    # and systemd need), on glibc's malloc: docs/operations.md
    env = {k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"}
    assert _serving_environ(tmp_path, env).get("PYTHONMALLOC") == "malloc"


def test_serve_keeps_a_pythonmalloc_the_user_chose(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONMALLOC="pymalloc")
    assert _serving_environ(tmp_path, env).get("PYTHONMALLOC") == "pymalloc"
