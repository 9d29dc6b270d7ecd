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

# The official nginx image's /etc/nginx/nginx.conf, as far as it matters to
# the compose and Kubernetes tests: conf.d/*.conf is included in http {}.
# (Its `user nginx;` line is left out: that user exists only in the image.)
# {tmp} is the test's temp directory.
IMAGE_NGINX_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/body;
    fastcgi_temp_path {tmp}/fastcgi;
    proxy_temp_path {tmp}/proxy;
    scgi_temp_path {tmp}/scgi;
    uwsgi_temp_path {tmp}/uwsgi;
    include conf.d/*.conf;
}}
"""


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
