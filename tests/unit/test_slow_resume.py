"""The slow-resume warning: a resume that blocks the worker is logged,
naming the script; yields, fast scripts and a threshold of 0 are not."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fcgi_lua import config as config_module
from fcgi_lua.limits import DEFAULT_SLOW_RESUME_WARNING
from fcgi_lua.worker import make_engine
from tests.helpers.lua import run_script

BUSY_LOOP = """
local t = os.clock()
while os.clock() - t < 0.25 do end
"""


def slow_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "fcgi_lua.lua" and "without yielding" in r.getMessage()
    ]


def test_blocking_call_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fcgi_lua.lua")
    res = run_script(tmp_path, 'os.execute("sleep 0.3") ngx.say("done")', slow_resume_warning=0.1)
    assert res.status == 200 and res.body == b"done\n"
    [record] = slow_warnings(caplog)
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith(f"{tmp_path / 't.lua'}: one resume ran 0.")
    assert "a blocking call (os.execute, io.popen, LuaSocket...)" in message
    assert "stalls every request of this worker" in message
    seconds = float(message.split("one resume ran ")[1].split(" s ")[0])
    assert 0.25 <= seconds < 5


def test_busy_loop_after_a_yield_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the first resume is quick, the one after ngx.sleep spins
    caplog.set_level(logging.WARNING, "fcgi_lua.lua")
    res = run_script(tmp_path, "ngx.sleep(0)" + BUSY_LOOP + "ngx.say('ok')")
    assert res.body == b"ok\n"
    assert len(slow_warnings(caplog)) == 1


def test_waiting_is_not_blocking(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 0.3 s of ngx.sleep yields to the loop: every resume is short
    caplog.set_level(logging.WARNING, "fcgi_lua.lua")
    res = run_script(tmp_path, "ngx.sleep(0.3) ngx.say('ok')", slow_resume_warning=0.1)
    assert res.body == b"ok\n"
    assert slow_warnings(caplog) == []


def test_fast_script_is_not_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fcgi_lua.lua")
    for _ in range(3):
        run_script(tmp_path, "local s = 0 for i = 1, 1000 do s = s + i end ngx.say(s)")
    assert slow_warnings(caplog) == []


def test_zero_disables(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fcgi_lua.lua")
    res = run_script(tmp_path, BUSY_LOOP + "ngx.say('ok')", slow_resume_warning=0)
    assert res.body == b"ok\n"
    assert slow_warnings(caplog) == []


def test_config_key(tmp_path: Path) -> None:
    default = config_module.load(overrides={"root": str(tmp_path)})
    assert default.slow_resume_warning == DEFAULT_SLOW_RESUME_WARNING == 0.1
    config = config_module.load(overrides={"root": str(tmp_path), "slow_resume_warning": 2})
    assert config.slow_resume_warning == 2.0
    assert make_engine(config).slow_resume_warning == 2.0
    assert make_engine(config.replace(slow_resume_warning=0.0)).slow_resume_warning == float("inf")
    with pytest.raises(config_module.ConfigError, match="slow_resume_warning: must be >= 0"):
        config_module.load(overrides={"root": str(tmp_path), "slow_resume_warning": -1})
