"""lua-nginx-module v0.10.23's own test blocks, run by OpenResty and by
fcgi-lua behind the same nginx (README.md beside this file).

Runs only when given the suite, and is reported as skipped otherwise::

    LUA_NGINX_MODULE_T=/tmp/lua-nginx-module/t python3 -m pytest tests/conformance -q

One test per selected block: skipped when OpenResty itself fails it (the
oracle), failed when fcgi-lua's answer fails the block's checks.
``test_pass_rate`` prints the counts and, with
``LUA_NGINX_MODULE_MIN_RATE=0.98``, fails below that share of the blocks
OpenResty passes.  ``LUA_NGINX_MODULE_JOBS`` sets the parallel blocks
(default: the CPU count).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cases import Case
from .runner import ENV_VAR, NGINX_MODULES, Result, load, report, run, t_dir

T_DIR = t_dir()
MIN_RATE = float(os.environ.get("LUA_NGINX_MODULE_MIN_RATE", "0"))

pytestmark = pytest.mark.skipif(
    T_DIR is None,
    reason=f"set {ENV_VAR}=/path/to/lua-nginx-module-0.10.23/t to run: see tests/conformance",
)


def _ids() -> list[str]:
    if T_DIR is None:
        return ["suite-absent"]
    return [
        f"{block.file}:{block.number}"
        for block, outcome in load(T_DIR)
        if isinstance(outcome, Case)
    ]


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, Result]]:
    assert T_DIR is not None
    if shutil.which("nginx") is None or not (NGINX_MODULES / "ngx_http_lua_module.so").exists():
        pytest.skip("nginx with libnginx-mod-http-lua is needed")
    jobs = int(os.environ.get("LUA_NGINX_MODULE_JOBS", str(os.cpu_count() or 2)))
    ran = run(Path(T_DIR), jobs=jobs)
    yield {f"{r.file}:{r.number}": r for r in ran}


@pytest.mark.parametrize("block_id", _ids())
def test_block(results: dict[str, Result], block_id: str) -> None:
    result = results[block_id]
    if result.oracle:
        pytest.skip(f"OpenResty itself fails it: {'; '.join(result.oracle)[:200]}")
    assert result.fcgi == [], f"{result.name}: {'; '.join(result.fcgi or [])}"


def test_pass_rate(results: dict[str, Result]) -> None:
    summary = report(list(results.values()))
    print(summary)
    passed = [r for r in results.values() if r.oracle == []]
    fcgi = [r for r in passed if r.fcgi == []]
    assert passed, "OpenResty passed no block: is the oracle set up?"
    rate = len(fcgi) / len(passed)
    assert rate >= MIN_RATE, f"fcgi-lua passes {rate:.1%} < {MIN_RATE:.0%}\n{summary}"
