"""What a script author sees in the error log when a script fails, through
real nginx: the same lines as OpenResty's (the oracle runs the same files),
ending with the request (client, server, request line, host); syntax errors
as load failures naming file and line; tracebacks without fcgi-lua's own
frames."""

from __future__ import annotations

import re

import pytest

from fcgi_lua.lua.failures import INTERNAL_CHUNKS

from .e2e_clients import http_request
from .e2e_stack import Logs, Stack

pytestmark = pytest.mark.e2e

# a log line's message: nginx's after "[error] PID#TID: *N ", fcgi-lua's after
# "[ERROR] PID fcgi_lua.lua: "; a traceback's lines follow it
NGINX_LINE = re.compile(r"\[error\] \d+#\d+: \*\d+ (.*)")
FCGI_LINE = re.compile(r"\[ERROR\] \d+ fcgi_lua\.lua: (.*)")


def messages(text: str, start: re.Pattern[str]) -> list[str]:
    """The log's messages, each with the lines that continue it."""
    found: list[str] = []
    for line in text.splitlines():
        match = start.search(line)
        if match:
            found.append(match.group(1))
        elif found and not re.match(r"\d{4}[/-]\d\d[/-]\d\d ", line):
            found[-1] += "\n" + line
    return found


def same_request(message: str, port: int) -> str:
    """``message`` as if it came through port ``port`` (the host differs)."""
    return re.sub(r'host: "127\.0\.0\.1:\d+"', f'host: "127.0.0.1:{port}"', message)


def fail_both(e2e: Stack, logs: Logs, script: str) -> tuple[list[str], list[str]]:
    """``script`` run by fcgi-lua (unix route) and OpenResty: their messages."""
    for route in ("unix", "oracle"):
        assert http_request(e2e.urls[route], f"/{script}?a=1").status == 500
    pattern = re.escape(script)
    logs.wait_for("fcgi-lua", pattern + r".*client: ")
    logs.wait_for("nginx", r"content_by_lua|" + pattern)
    logs.allow("fcgi-lua", pattern)  # the errors are the point; their lines are checked
    logs.allow("nginx", pattern + "|resty/core/regex.lua")
    fcgi = [m for m in messages(logs.new("fcgi-lua"), FCGI_LINE) if script in m]
    oracle = [m for m in messages(logs.new("nginx"), NGINX_LINE) if script in m]
    return fcgi, oracle


def test_syntax_error_is_a_load_failure_as_openresty_says_it(e2e: Stack, logs: Logs) -> None:
    fcgi, oracle = fail_both(e2e, logs, "errlog_syntax.lua")
    path = e2e.root / "errlog_syntax.lua"
    port = int(e2e.urls["oracle"].rsplit(":", 1)[1])
    # OpenResty: failed to load external Lua file "/p": /p:3: ')' expected near 'y', client: ...
    assert len(oracle) == 1, oracle
    assert oracle[0].startswith(f'failed to load external Lua file "{path}": {path}:3: ')
    assert [same_request(m, port) for m in fcgi] == [
        oracle[0].replace(f'"{path}": ', f'"{path}": syntax error: ', 1)
    ]


def test_runtime_error_and_ngx_log_lines_match_openresty(e2e: Stack, logs: Logs) -> None:
    fcgi, oracle = fail_both(e2e, logs, "errlog_runtime.lua")
    port = int(e2e.urls["oracle"].rsplit(":", 1)[1])
    assert len(oracle) == 2, oracle
    assert oracle[0].startswith("[lua] errlog_runtime.lua:9: errlog about to fail, client: ")
    assert 'request: "GET /errlog_runtime.lua?a=1 HTTP/1.1", host: "127.0.0.1:' in oracle[1]
    # OpenResty names the coroutine of each part of a traceback; the frames
    # are LuaJIT's, the same
    expected = [m.replace("stack traceback:\ncoroutine 0:\n", "stack traceback:\n") for m in oracle]
    assert [same_request(m, port) for m in fcgi] == expected


def test_traceback_has_no_fcgi_lua_frames(e2e: Stack, logs: Logs) -> None:
    fcgi, _ = fail_both(e2e, logs, "errlog_api.lua")
    path = e2e.root / "errlog_api.lua"
    assert len(fcgi) == 1, fcgi
    message = fcgi[0]
    assert message.startswith(
        f"lua entry thread aborted: runtime error: {path}:3: bad argument #2 to 'match'"
    )
    frames = message.split("\nstack traceback:\n")[1].split(", client: ")[0].split("\n")
    assert frames == [f"\t{path}:3: in function 'f'", f"\t{path}:6: in main chunk"]
    for name in INTERNAL_CHUNKS:
        assert f"\t{name}:" not in message
