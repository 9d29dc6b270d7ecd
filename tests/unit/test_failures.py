"""How a request's Lua failure reads in the error log (fcgi_lua/lua/failures.py):
syntax errors, the request context, tracebacks without fcgi-lua's frames.
The expected lines are OpenResty's for the same scripts (nginx 1.22 with
Debian's libnginx-mod-http-lua, content_by_lua_file)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from fcgi_lua.http import error_page
from fcgi_lua.lua import RUNTIMES, LuaEngine
from fcgi_lua.lua.failures import INTERNAL_CHUNKS, clean_traceback, request_context
from tests.helpers.lua import FakeRequest, MemorySink, make_params, run_script

NGINX_PARAMS = make_params(
    query=b"a=1",
    extra=[(b"SERVER_NAME", b"localhost")],
    headers=[(b"HTTP_HOST", b"127.0.0.1:8080")],
)
CONTEXT = (
    ', client: 127.0.0.1, server: localhost, request: "GET /t.lua?a=1 HTTP/1.1", '
    'host: "127.0.0.1:8080"'
)


def lua_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fcgi_lua.lua" and r.levelno >= logging.ERROR
    ]


def test_syntax_error_is_logged_as_a_load_failure_with_file_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    res = run_script(tmp_path, "local x = 1\nprint(x y)\n", params=NGINX_PARAMS)
    assert res.status == 500
    assert res.body == error_page(500)
    path = tmp_path / "t.lua"
    # OpenResty: failed to load external Lua file "/p/t.lua": /p/t.lua:2: ')' expected near 'y'
    assert lua_errors(caplog) == [
        f'failed to load external Lua file "{path}": syntax error: '
        f"{path}:2: ')' expected near 'y'" + CONTEXT
    ]


def test_long_paths_are_not_shortened_in_syntax_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deep = tmp_path / ("d" * 40) / ("e" * 40)
    deep.mkdir(parents=True)
    run_script(deep, "if x then\n", params=NGINX_PARAMS)
    (message,) = lua_errors(caplog)
    assert f": syntax error: {deep}/t.lua:2: 'end' expected" in message
    assert "..." not in message


def test_runtime_error_ends_with_the_request_and_reads_main_chunk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = (
        "local function inner()\n  local t = nil\n  return t.field\nend\n"
        "local function outer()\n  return inner()\nend\n"
        'ngx.log(ngx.ERR, "about to fail")\nouter()\n'
    )
    res = run_script(tmp_path, src, params=NGINX_PARAMS)
    assert res.status == 500
    path = tmp_path / "t.lua"
    logged, failed = lua_errors(caplog)
    assert logged == "[lua] t.lua:8: about to fail" + CONTEXT
    # OpenResty adds "coroutine 0:" and LuaJIT's frames are the same
    assert failed == (
        f"lua entry thread aborted: runtime error: {path}:3: attempt to index local 't' "
        "(a nil value)\nstack traceback:\n"
        f"\t{path}: in function 'outer'\n"
        f"\t{path}:9: in main chunk" + CONTEXT
    )


def test_missing_params_leave_their_part_out() -> None:
    assert request_context([]) == ""
    assert request_context([(b"SERVER_NAME", b"")]) == ", server: "  # as nginx writes it
    assert request_context([(b"REMOTE_ADDR", b"::1")]) == ", client: ::1"
    params = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b'/a"\nb'), (b"HTTP_REFERER", b"r")]
    assert request_context(params) == ', request: "GET /a\\x22\\x0Ab", referrer: "r"'


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_tracebacks_hide_fcgi_lua_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, runtime: str
) -> None:
    # ngx.re.match's argument check (re.lua), mk.cookie (mk.lua): OpenResty's
    # are C functions, which no traceback shows
    src = "local function f() ngx.sleep(0); return ngx.re.match(nil) end\nf()\n"
    run_script(tmp_path, src, runtime=runtime, params=NGINX_PARAMS)
    src = "local function g() return mk.cookie.set_cookie(nil) end\ng()\n"
    run_script(tmp_path, src, runtime=runtime, params=NGINX_PARAMS)
    path = tmp_path / "t.lua"
    for message in lua_errors(caplog):
        frames = message.split("\nstack traceback:\n")[1].removesuffix(CONTEXT).split("\n")
        assert frames[-1] == f"\t{path}:2: in main chunk", message
        for frame in frames:
            assert frame.lstrip("\t").startswith(
                (str(path), "(...tail calls...)", "(tail call): ?")
            ), message
        for name in INTERNAL_CHUNKS:
            assert f"\t{name}:" not in message


def test_cgi_script_traceback_has_only_its_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = (
        "#!/usr/bin/lua\nlocal function handler()\n"
        '  io.write("Content-Type: text/plain\\r\\n\\r\\n")\n  io.write({})\nend\nhandler()\n'
    )
    run_script(tmp_path, src, params=NGINX_PARAMS)
    path = tmp_path / "t.lua"
    (message,) = lua_errors(caplog)
    assert message.endswith(
        "stack traceback:\n"
        f"\t{path}:4: in function 'handler'\n"
        f"\t{path}:6: in function 'main'" + CONTEXT
    )


def test_user_thread_error_ends_with_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = (
        "local function work() ngx.sleep(0) local x = nil; return x.y end\n"
        "local t = ngx.thread.spawn(work)\nngx.thread.wait(t)\nngx.say('ok')\n"
    )
    res = run_script(tmp_path, src, params=NGINX_PARAMS)
    assert res.status == 200
    (message,) = lua_errors(caplog)
    assert message.startswith("lua user thread aborted: runtime error: ")
    assert message.endswith(
        f"\t{tmp_path / 't.lua'}: in function <{tmp_path / 't.lua'}:1>" + CONTEXT
    )


def test_clean_traceback_keeps_what_the_script_called() -> None:
    text = (
        "/s/x.lua:1: boom\nstack traceback:\n"
        "\t[C]: in function 'error'\n"
        "\t/s/x.lua:1: in function 'f'\n"
        "\t[C]: in function 'pcall'\n"
        "\t/usr/share/lua/5.1/resty/redis.lua:9: in function 'g'\n"
        "\tngx.lua:100: in function 'h'\n"
        "\t/s/x.lua:4: in function </s/x.lua:1>"
    )
    assert clean_traceback(text, "/s/x.lua") == (
        "/s/x.lua:1: boom\nstack traceback:\n"
        "\t[C]: in function 'error'\n"
        "\t/s/x.lua:1: in function 'f'\n"
        "\t[C]: in function 'pcall'\n"
        "\t/usr/share/lua/5.1/resty/redis.lua:9: in function 'g'\n"
        "\t/s/x.lua:4: in main chunk"
    )
    # the failure is fcgi-lua's own: nothing hidden
    own = (
        "ngx.lua:1: bug\nstack traceback:\n\t[C]: in function 'error'\n\tngx.lua:1: in function 'x'"
    )
    assert clean_traceback(own) == own
    assert clean_traceback("no traceback") == "no traceback"


def test_timer_log_lines_say_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fcgi_lua.lua")
    src = (
        'ngx.timer.at(0, function() ngx.log(ngx.WARN, "from timer") end)\n'
        'ngx.log(ngx.INFO, "from request")\nngx.sleep(0.05)\n'
    )
    run_script(tmp_path, src, params=NGINX_PARAMS)
    lines = [r.getMessage() for r in caplog.records if r.name == "fcgi_lua.lua"]
    # OpenResty: "[lua] t.lua:1: from timer, context: ngx.timer, client: ..., server: ..."
    # (the nginx connection the timer borrows); fcgi-lua's timer has no request
    assert lines == [
        "[lua] t.lua:2: from request" + CONTEXT,
        "[lua] t.lua:1: from timer, context: ngx.timer",
    ]


def test_a_slow_requests_traceback_shows_the_scripts_frames_only(tmp_path: Path) -> None:
    # What the slow-request WARNING and the status page show of a request
    # that waits: where the script is, not ngx.sleep's own Lua.
    script = tmp_path / "sleepy.lua"
    script.write_text("local function nap() ngx.sleep(0.2) end\nnap()\nngx.say('rested')\n")

    async def main() -> str | None:
        engine = LuaEngine()
        request = FakeRequest(str(script), make_params())
        task = asyncio.ensure_future(engine.run(request, MemorySink()))
        await asyncio.sleep(0.05)
        where = engine.traceback(request)
        await task
        return where

    assert asyncio.run(main()) == (
        f"stack traceback:\n\t{script}:1: in function 'nap'\n\t{script}:2: in main chunk"
    )
