"""What the deployment tests need: the repo's paths and the programs they
run (docker-compose, hadolint, nginx, redis-server), found or reported.

A missing program skips a test on a developer's machine and fails it under
CI, which installs every one of them (scripts/test).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
MONKEY_DOCKERFILE = DEPLOY / "docker" / "monkey.Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# Where nginx/fcgi-lua-upstream.conf, the image and compose put the socket.
SHIPPED_SOCKET = "/run/fcgi-lua/fcgi-lua.sock"


def program(name: str) -> str | None:
    """``name`` on PATH, or in /usr/sbin (nginx, when PATH lacks it)."""
    found = shutil.which(name)
    if found is None and Path("/usr/sbin", name).exists():
        found = f"/usr/sbin/{name}"
    return found


def need(name: str, how: str) -> str:
    """The path of program ``name``; skip (or, under CI, fail) without it."""
    found = program(name)
    require(name, found is not None, how)
    assert found is not None
    return found


def require(what: str, present: bool, how: str) -> None:
    """Skip the test (or, under CI, fail it) unless ``what`` is ``present``."""
    if not present:
        message = f"{what} not installed ({how})"
        if os.environ.get("CI"):
            pytest.fail(message + ": scripts/test installs it", pytrace=False)
        pytest.skip(message)
