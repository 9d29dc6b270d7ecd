"""ngx.exec as X-Accel-Redirect (the e2e tests check that nginx follows it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.lua import run_script


@pytest.mark.parametrize(
    ("call", "target"),
    [
        ('ngx.exec("/x")', b"/x"),
        ('ngx.exec("/x", "a=1")', b"/x?a=1"),
        ('ngx.exec("/x?a=1", {b = "2 3"})', b"/x?a=1&b=2%203"),
        ('ngx.exec("/x", 5)', b"/x?5"),
        ('ngx.exec("@named", "a=1")', b"@named"),
    ],
)
def test_exec_sets_x_accel_redirect(tmp_path: Path, call: str, target: bytes) -> None:
    res = run_script(tmp_path, f'mk.print("dropped") ngx.header.X = "1" {call} ngx.say("no")')
    assert res.status == 200
    assert res.header(b"X-Accel-Redirect") == target
    assert res.header(b"X") == b"1"
    assert res.body == b""


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ('ngx.exec("")', b"The uri argument is empty"),
        ("ngx.exec({})", b"bad argument #1 to 'exec' (string expected, got table)"),
        ('ngx.exec("/x", true)', b"bad argument #2 to 'exec'"),
        ('ngx.exec("/a/../b")', b"unsafe uri"),
        ('ngx.exec("/a\\nb")', b"unsafe uri"),
        ('ngx.say(1) ngx.exec("/x")', b"attempt to call ngx.exec after sending out response"),
    ],
)
def test_exec_errors(tmp_path: Path, call: str, message: bytes) -> None:
    src = f"local ok, err = pcall(function() {call} end) ngx.print(err)"
    res = run_script(tmp_path, src)
    assert message in res.body, res.raw
