"""The shipped deployment files stay valid: deploy/'s templates render to
configs that nginx and supervisord accept, and deploy/run is valid bash.
(The nginx/ files themselves are exercised by every other e2e test.)"""

from __future__ import annotations

import configparser
import os
import subprocess
from pathlib import Path

import pytest

from .e2e_stack import NGINX, REPO

pytestmark = pytest.mark.e2e

DEPLOY = REPO / "deploy"


def render(template: Path, values: dict[str, str]) -> str:
    text = template.read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    assert "@" not in "".join(line.split(";")[0] for line in text.splitlines()), text
    return text


@pytest.fixture
def values(tmp_path: Path) -> dict[str, str]:
    return {
        "REPO": str(REPO),
        "RUN_DIR": str(tmp_path),
        "ROOT": str(REPO / "examples"),
        "PORT": "18080",
        "SOCKET": str(tmp_path / "fcgi-lua.sock"),
        "NGINX": NGINX or "/usr/sbin/nginx",
        "NGINX_DIR": str(tmp_path / "nginx"),
        "NGINX_USER": "",
        "USER": "nobody",
        "FCGI_LUA": "/usr/local/bin/fcgi-lua",
        "FCGI_LUA_ARGS": "--debug",
        "REDIS_SERVER": "/usr/bin/redis-server",
        "REDIS_PORT": "16380",
    }


def test_deploy_nginx_conf_is_valid(values: dict[str, str]) -> None:
    # deploy/run renders every file nginx reads (deploy/fcgi-lua-site.conf,
    # nginx/'s files, the listen include) and runs `nginx -t` on them.
    env = dict(os.environ, RUN_DIR=values["RUN_DIR"], PORT=values["PORT"])
    env.update(NGINX=values["NGINX"], FCGI_LUA=values["FCGI_LUA"])
    env.update(REDIS_SERVER=values["REDIS_SERVER"], REDIS_PORT=values["REDIS_PORT"])
    result = subprocess.run(
        ["bash", str(DEPLOY / "run"), "--render-only"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    nginx_dir = Path(values["NGINX_DIR"])
    assert f"listen 127.0.0.1:{values['PORT']};" in (nginx_dir / "fcgi-lua-listen.conf").read_text()


def test_deploy_supervisord_conf_holds_both_programs(values: dict[str, str]) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(render(DEPLOY / "supervisord.conf.in", values))
    fcgi = parser["program:fcgi-lua"]
    assert fcgi["command"].split()[:2] == ["/usr/local/bin/fcgi-lua", "serve"]
    assert f"unix:{values['SOCKET']}" in fcgi["command"]
    assert fcgi["stopsignal"] == "TERM"
    nginx = parser["program:nginx"]
    assert "daemon off;" in nginx["command"]
    assert nginx["stopsignal"] == "QUIT"
    assert parser["supervisord"]["nodaemon"] == "true"
    redis = parser["program:redis"]
    assert "--port 16380" in redis["command"]
    assert 'REDIS_PORT="16380"' in fcgi["environment"]


def test_supervisord_program_example_parses() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(DEPLOY / "supervisord-program.conf")
    program = parser["program:fcgi-lua"]
    assert "serve" in program["command"]
    # Must outlast fcgi-lua's own shutdown_timeout (10 s) or requests get killed.
    assert int(program["stopwaitsecs"]) > 10


def test_deploy_run_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n", str(DEPLOY / "run")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
