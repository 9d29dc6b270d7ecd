"""fcgi_lua/compiled.py: the codec runs compiled when setup.py built it,
and from source when FCGI_LUA_PURE_PYTHON=1 or the build is stale."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fcgi_lua.compiled import COMPILED_MODULES, PURE_PYTHON_ENV, compiled_file

PACKAGE = Path(__file__).resolve().parents[2] / "fcgi_lua"
PROBE = (
    "import fcgi_lua.fastcgi, sys\n"
    "from fcgi_lua.compiled import COMPILED_MODULES, is_compiled\n"
    "print(' '.join(str(is_compiled(m)) for m in COMPILED_MODULES))\n"
)


def built() -> bool:
    return all(
        compiled_file(PACKAGE.parent / (name.replace(".", "/") + ".py")) is not None
        for name in COMPILED_MODULES
    )


def probe(env_extra: dict[str, str], path: Path = PACKAGE.parent) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != PURE_PYTHON_ENV}
    env.update(env_extra, PYTHONPATH=str(path))
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=path, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_ci_builds_the_compiled_codec() -> None:
    # scripts/test installs with pip, which runs setup.py: in CI the build
    # must have happened (a silent fallback would hide a slow codec)
    if not os.environ.get("CI"):
        pytest.skip("checked in CI, where scripts/test has just built the package")
    assert built(), "setup.py did not compile the codec (see pip's output)"


def test_compiled_modules_run_compiled_when_built() -> None:
    if not built():
        pytest.skip("no compiled modules here (FCGI_LUA_COMPILE=0 or no mypyc)")
    assert probe({}) == ["True"] * len(COMPILED_MODULES)


def test_pure_python_switch_loads_the_sources() -> None:
    assert probe({PURE_PYTHON_ENV: "1"}) == ["False"] * len(COMPILED_MODULES)


def test_a_stale_build_loses_to_its_edited_source(tmp_path: Path) -> None:
    if not built():
        pytest.skip("no compiled modules here")
    copy = tmp_path / "fcgi_lua"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    edited = copy / "fastcgi" / "_records.py"
    built_at = compiled_file(edited)
    assert built_at is not None
    stamp = built_at.stat().st_mtime + 10  # edited after the build
    os.utime(edited, (stamp, stamp))
    # one stale member sends the whole group (one mypyc library) to source
    assert probe({}, tmp_path) == ["False"] * len(COMPILED_MODULES)
