"""deploy/kubernetes/, checked without a cluster: every manifest and every
rendered kustomization validates against the Kubernetes schemas
(kubernetes-validate, which bundles them; strict: an unknown field fails),
the YAML passes yamllint, and the rendered objects hold what matters: the
socket volume shared by nginx and fcgi-lua, probes on fcgi-lua's ping path
(through nginx, and over FastCGI), the very config files docker-compose.yml
uses, workers from the CPU limit, memory from the measured worker RSS, a
grace period covering shutdown_timeout, Service, HPA and Redis wired by
name.  nginx's configuration, as the ConfigMaps lay it out in the nginx
container, passes `nginx -t`.

Rendering is `kubectl kustomize` (kustomize is built into kubectl; it runs
offline).  What runs on several hosts is tests/hosts/."""

from __future__ import annotations

import copy
import math
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from fcgi_lua.config import Config

from .dockerfiles import parse_dockerfile
from .manifests import KUBERNETES, container, find, quantity, render
from .tools import (
    COMPOSE_FILE,
    DEPLOY,
    DOCKERFILE,
    IMAGE_NGINX_CONF,
    REPO,
    SHIPPED_SOCKET,
    need,
    require,
)

VARIANTS = ["sidecar", "tcp"]
# Schemas: the oldest Kubernetes these manifests are written for (autoscaling/v2
# and every field used are there) and the newest kubernetes-validate bundles.
SCHEMA_VERSIONS = ["1.30.0", "latest"]
STACK_CONFIG = DEPLOY / "fcgi-lua.toml"
SOCKET_DIR = str(Path(SHIPPED_SOCKET).parent)
DOC_ROOT = "/srv/www"

# Measured, docs/scaling.md "Sizing a pod": `bash deploy/run` (2 workers),
# wrk on examples/ (hello, visits, json, args, index, cookies, 200 KB uploads,
# then 1000 connections), VmRSS/VmHWM from /proc/PID/status.
MASTER_RSS_MIB = 33
WORKER_RSS_BUSY_MIB = 37
WORKER_RSS_PEAK_MIB = 47

# The copies kustomize needs inside deploy/kubernetes/ (it reads no file
# outside a kustomization's directory), each with its original.
COPIES = {
    "common/fcgi-lua.toml": "deploy/fcgi-lua.toml",
    "common/www/visits.lua": "examples/visits.lua",
    "common/www/args.lua": "examples/args.lua",
    "common/nginx/fcgi-lua-site.conf": "deploy/fcgi-lua-site.conf",
    "common/nginx/fcgi-lua-listen.conf": "deploy/docker/fcgi-lua-listen.conf",
    "common/nginx/fcgi-lua.conf": "nginx/fcgi-lua.conf",
    "common/nginx/fcgi_lua_params": "nginx/fcgi_lua_params",
    "common/nginx/fcgi-lua-status.conf": "nginx/fcgi-lua-status.conf",
    "sidecar/fcgi-lua-upstream.conf": "nginx/fcgi-lua-upstream.conf",
}


def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate as module
    except ImportError:
        require("kubernetes-validate", False, "pip install -e '.[test]'")
    return module


def volumes(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}


def mounts(ctr: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in ctr.get("volumeMounts", [])}


def config_map_data(objects: tuple[dict[str, Any], ...], volume: dict[str, Any]) -> dict[str, str]:
    """The files of the ConfigMap a volume mounts (by its rendered name)."""
    name = volume["configMap"]["name"]
    (found,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
    return found["data"]  # type: ignore[no-any-return]


def mounted_file(
    objects: tuple[dict[str, Any], ...], deployment: dict[str, Any], ctr: dict[str, Any], path: str
) -> str:
    """The text a container sees at ``path``, from a ConfigMap volume."""
    vols = volumes(deployment)
    for target, mount in mounts(ctr).items():
        volume = vols[mount["name"]]
        if "configMap" not in volume:
            continue
        data = config_map_data(objects, volume)
        if "subPath" in mount and target == path:
            return data[mount["subPath"]]
        if "subPath" not in mount and path.startswith(target + "/"):
            return data[path.removeprefix(target + "/")]
    raise AssertionError(f"{ctr['name']}: nothing mounted at {path}")


def argument(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def options(command: list[str]) -> dict[str, str]:
    pairs = [command[i + 1] for i, word in enumerate(command) if word == "-o"]
    return dict(p.split("=", 1) for p in pairs)


def stack_config() -> dict[str, Any]:
    return tomllib.loads(STACK_CONFIG.read_text())


def size_bytes(text: str) -> int:
    """fcgi-lua's sizes: 160m, 1g."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def pre_stop_seconds(ctr: dict[str, Any]) -> float:
    command = ctr["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


def image_cmd() -> list[str]:
    (cmd,) = [i for i in parse_dockerfile(DOCKERFILE) if i.keyword == "CMD"]
    return yaml.safe_load(cmd.arguments)  # type: ignore[no-any-return]  # JSON exec form


# -- schemas and lint ------------------------------------------------------------------


def manifest_files() -> list[Path]:
    files = sorted(KUBERNETES.rglob("*.yaml"))
    return [p for p in files if p.name not in ("kustomization.yaml", ".yamllint.yaml")]


def test_the_layout() -> None:
    names = {p.relative_to(KUBERNETES).as_posix() for p in manifest_files()}
    assert names == {
        "common/redis.yaml",
        "sidecar/deployment.yaml",
        "sidecar/service.yaml",
        "sidecar/hpa.yaml",
        "tcp/fcgi-lua.yaml",
        "tcp/nginx.yaml",
    }
    for directory in ("", "common", *VARIANTS):
        assert (KUBERNETES / directory / "kustomization.yaml").is_file(), directory


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize(
    "path", manifest_files(), ids=lambda p: p.relative_to(KUBERNETES).as_posix()
)
def test_manifest_validates(path: Path, version: str) -> None:
    kv = kubernetes_validate()
    wanted = kv.latest_version() if version == "latest" else version
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        kv.validate(document, wanted, strict=True)


@pytest.mark.parametrize("directory", ["", *VARIANTS], ids=["root", *VARIANTS])
def test_rendered_kustomization_validates(directory: str) -> None:
    kv = kubernetes_validate()
    objects = render(directory)
    assert len(objects) >= 8
    for version in SCHEMA_VERSIONS:
        wanted = kv.latest_version() if version == "latest" else version
        for obj in objects:
            kv.validate(obj, wanted, strict=True)


def test_the_validation_can_fail() -> None:
    # Strict validation is what catches a misspelt field; a lax one would
    # let `terminationGracePeriodSecond` through.
    kv = kubernetes_validate()
    deployment = copy.deepcopy(find(render("sidecar"), "Deployment", "fcgi-lua"))
    spec = deployment["spec"]["template"]["spec"]
    spec["terminationGracePeriodSecond"] = spec.pop("terminationGracePeriodSeconds")
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, kv.latest_version(), strict=True)
    deployment = copy.deepcopy(find(render("sidecar"), "Deployment", "fcgi-lua"))
    container(deployment, "fcgi-lua")["resources"]["limits"]["cpu"] = {"cores": 2}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, kv.latest_version(), strict=True)


def test_yamllint() -> None:
    yamllint = need("yamllint", "pip install -e '.[test]'")
    argv = [yamllint, "-s", "-f", "parsable", "-c", str(KUBERNETES / ".yamllint.yaml")]
    result = subprocess.run(
        [*argv, str(KUBERNETES), str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("copied", sorted(COPIES))
def test_copies_match_their_originals(copied: str) -> None:
    original = REPO / COPIES[copied]
    assert (KUBERNETES / copied).read_bytes() == original.read_bytes(), (
        f"deploy/kubernetes/{copied} differs from {COPIES[copied]}: "
        f"cp {COPIES[copied]} deploy/kubernetes/{copied}"
    )


# -- the sidecar pod ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar() -> tuple[dict[str, Any], ...]:
    return render("sidecar")


def test_the_root_kustomization_is_the_sidecar(sidecar: tuple[dict[str, Any], ...]) -> None:
    assert render("") == sidecar


def test_the_socket_volume_is_shared(sidecar: tuple[dict[str, Any], ...]) -> None:
    deployment = find(sidecar, "Deployment", "fcgi-lua")
    nginx, fcgi = container(deployment, "nginx"), container(deployment, "fcgi-lua")
    socket_mount = mounts(fcgi)[SOCKET_DIR]
    assert mounts(nginx)[SOCKET_DIR]["name"] == socket_mount["name"]
    assert "emptyDir" in volumes(deployment)[socket_mount["name"]]
    assert not socket_mount.get("readOnly") and not mounts(nginx)[SOCKET_DIR].get("readOnly")
    assert argument(fcgi["command"], "--listen") == f"unix:{SHIPPED_SOCKET}"
    upstream = mounted_file(sidecar, deployment, nginx, "/etc/nginx/fcgi-lua-upstream.conf")
    assert upstream == (REPO / "nginx" / "fcgi-lua-upstream.conf").read_text()
    assert f"server unix:{SHIPPED_SOCKET};" in upstream


def test_the_same_config_and_site_as_compose(sidecar: tuple[dict[str, Any], ...]) -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    deployment = find(sidecar, "Deployment", "fcgi-lua")
    nginx, fcgi = container(deployment, "nginx"), container(deployment, "fcgi-lua")
    # fcgi-lua: the image's command (compose's, but for its extra listener
    # for Monkey), then --workers and memory limits of its own.
    cmd = image_cmd()
    assert fcgi["command"][: len(cmd)] == cmd
    extra = fcgi["command"][len(cmd) :]
    assert extra[:2] == ["--workers", "$(FCGI_LUA_WORKERS)"]
    assert set(options(extra)) == {"worker_memory_limit", "lua_memory_limit"}
    compose_cmd = compose["fcgi-lua"]["command"]
    assert argument(compose_cmd, "--config") == argument(fcgi["command"], "--config")
    assert argument(compose_cmd, "--root") == argument(fcgi["command"], "--root") == DOC_ROOT
    config_path = argument(fcgi["command"], "--config")
    assert mounted_file(sidecar, deployment, fcgi, config_path) == STACK_CONFIG.read_text()
    env = {e["name"]: e.get("value") for e in fcgi["env"]}
    assert env["REDIS_HOST"] == compose["fcgi-lua"]["environment"]["REDIS_HOST"] == "redis"
    # nginx: the files compose mounts, at the same paths.
    compose_nginx = compose["nginx"]["volumes"]
    for entry in compose_nginx:
        source, target, *_ = entry.split(":")
        if not target.startswith("/etc/nginx/") or target.endswith("-upstream.conf"):
            continue  # the upstream: the socket here (above), TCP in compose
        seen = mounted_file(sidecar, deployment, nginx, target)
        assert seen == (REPO / source).read_text(), target
    # The scripts at the same document root in both containers.
    for ctr in (nginx, fcgi):
        www = mounts(ctr)[DOC_ROOT]
        assert www["readOnly"] is True
        data = config_map_data(sidecar, volumes(deployment)[www["name"]])
        assert data["visits.lua"] == (REPO / "examples" / "visits.lua").read_text()


def test_probes_ask_the_ping_path(sidecar: tuple[dict[str, Any], ...]) -> None:
    ping = stack_config()["ping_path"]
    deployment = find(sidecar, "Deployment", "fcgi-lua")
    nginx, fcgi = container(deployment, "nginx"), container(deployment, "fcgi-lua")
    listen = mounted_file(sidecar, deployment, nginx, "/etc/nginx/fcgi-lua-listen.conf")
    port = int(re.search(r"^listen (\d+);$", listen, re.M).group(1))  # type: ignore[union-attr]
    assert nginx["ports"] == [{"name": "http", "containerPort": port}]
    # Through nginx, from loopback (nginx/fcgi-lua-status.conf allows no other).
    for probe in ("readinessProbe", "livenessProbe"):
        command = nginx[probe]["exec"]["command"]
        assert command[0] == "curl" and "-f" in command[1], command
        assert command[-1] == f"http://127.0.0.1:{port}{ping}", command
    status = mounted_file(sidecar, deployment, nginx, "/etc/nginx/fcgi-lua-status.conf")
    assert f"location = {ping} {{" in status
    # And fcgi-lua's own, over FastCGI on the shared socket.
    for probe in ("startupProbe", "livenessProbe"):
        command = fcgi[probe]["exec"]["command"]
        assert command == ["fcgi-lua-ping", f"unix:{SHIPPED_SOCKET}", ping], command
    # nginx restarts only after fcgi-lua's own liveness had its chance.
    n, f = nginx["livenessProbe"], fcgi["livenessProbe"]
    assert n["periodSeconds"] * n["failureThreshold"] > f["periodSeconds"] * f["failureThreshold"]


def workers_and_memory(deployment: dict[str, Any]) -> None:
    fcgi = container(deployment, "fcgi-lua")
    # --workers is the CPU limit, through the downward API, rounded up.
    variable = re.fullmatch(r"\$\((\w+)\)", argument(fcgi["command"], "--workers"))
    assert variable, fcgi["command"]
    (source,) = [e for e in fcgi["env"] if e["name"] == variable.group(1)]
    field = source["valueFrom"]["resourceFieldRef"]
    assert field == {"containerName": "fcgi-lua", "resource": "limits.cpu", "divisor": "1"}
    resources = fcgi["resources"]
    cpu_limit = quantity(resources["limits"]["cpu"])
    workers = math.ceil(cpu_limit)
    assert workers == cpu_limit, "a whole CPU limit: every worker gets a whole CPU"
    assert quantity(resources["requests"]["cpu"]) <= cpu_limit
    # Memory: the request covers the master and every worker busy; the limit
    # covers every worker at worker_memory_limit, so fcgi-lua's own check
    # (the master replaces the worker) acts before the kernel's OOM killer.
    mib = 1 << 20
    worker_limit = size_bytes(options(fcgi["command"])["worker_memory_limit"])
    lua_limit = size_bytes(options(fcgi["command"])["lua_memory_limit"])
    assert WORKER_RSS_PEAK_MIB * mib < lua_limit < worker_limit
    request = quantity(resources["requests"]["memory"])
    limit = quantity(resources["limits"]["memory"])
    assert request >= (MASTER_RSS_MIB + workers * WORKER_RSS_BUSY_MIB) * mib
    assert limit >= MASTER_RSS_MIB * mib + workers * worker_limit
    assert limit <= 2 * (MASTER_RSS_MIB * mib + workers * worker_limit), "not wasteful either"


@pytest.mark.parametrize("variant", VARIANTS)
def test_workers_and_memory_come_from_the_limits(variant: str) -> None:
    workers_and_memory(find(render(variant), "Deployment", "fcgi-lua"))


def test_the_check_can_fail() -> None:
    deployment = copy.deepcopy(find(render("sidecar"), "Deployment", "fcgi-lua"))
    container(deployment, "fcgi-lua")["resources"]["limits"]["memory"] = "256Mi"
    with pytest.raises(AssertionError):
        workers_and_memory(deployment)
    deployment = copy.deepcopy(find(render("sidecar"), "Deployment", "fcgi-lua"))
    container(deployment, "fcgi-lua")["resources"]["limits"]["cpu"] = "1500m"
    with pytest.raises(AssertionError):
        workers_and_memory(deployment)


def shutdown_timeout() -> float:
    value = stack_config().get("shutdown_timeout", Config().shutdown_timeout)
    return float(value)


def test_termination_covers_shutdown_timeout(sidecar: tuple[dict[str, Any], ...]) -> None:
    deployment = find(sidecar, "Deployment", "fcgi-lua")
    nginx, fcgi = container(deployment, "nginx"), container(deployment, "fcgi-lua")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # fcgi-lua's SIGTERM comes after nginx's (SIGQUIT, a graceful stop): the
    # socket answers while nginx still sends requests.
    assert pre_stop_seconds(fcgi) > pre_stop_seconds(nginx) > 0
    assert grace >= pre_stop_seconds(fcgi) + shutdown_timeout() + 5
    assert "shutdown_timeout" not in options(fcgi["command"])
    # A rolling update never takes a pod away before its replacement is ready.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_service_hpa_and_redis(sidecar: tuple[dict[str, Any], ...]) -> None:
    deployment = find(sidecar, "Deployment", "fcgi-lua")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = find(sidecar, "Service", "fcgi-lua")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = find(sidecar, "HorizontalPodAutoscaler", "fcgi-lua")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "fcgi-lua",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert hpa["spec"]["minReplicas"] >= 2
    # Utilization is relative to requests: every container must have one.
    for ctr in deployment["spec"]["template"]["spec"]["containers"]:
        assert "cpu" in ctr["resources"]["requests"], ctr["name"]
    redis_deployment = find(sidecar, "Deployment", "redis")
    redis_service = find(sidecar, "Service", "redis")
    assert redis_service["spec"]["selector"].items() <= (
        redis_deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    env = {e["name"]: e.get("value") for e in container(deployment, "fcgi-lua")["env"]}
    assert env["REDIS_HOST"] == redis_service["metadata"]["name"]
    assert int(env["REDIS_PORT"]) == redis_service["spec"]["ports"][0]["port"]


def test_images(sidecar: tuple[dict[str, Any], ...]) -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    deployment = find(sidecar, "Deployment", "fcgi-lua")
    assert container(deployment, "nginx")["image"] == compose["nginx"]["image"]
    assert container(deployment, "fcgi-lua")["image"] == "fcgi-lua:0.1.0"
    redis = container(find(sidecar, "Deployment", "redis"), "redis")
    assert redis["image"] == compose["redis"]["image"]
    assert redis["command"] == compose["redis"]["command"]


# -- the TCP variant ---------------------------------------------------------------------


def test_tcp_variant() -> None:
    objects = render("tcp")
    ping = stack_config()["ping_path"]
    fcgi_deployment = find(objects, "Deployment", "fcgi-lua")
    fcgi = container(fcgi_deployment, "fcgi-lua")
    assert [c["name"] for c in fcgi_deployment["spec"]["template"]["spec"]["containers"]] == [
        "fcgi-lua"
    ]
    listen = argument(fcgi["command"], "--listen")
    host, _, port = listen.rpartition(":")
    assert host == "0.0.0.0"
    assert fcgi["ports"] == [{"name": "fastcgi", "containerPort": int(port)}]
    service = find(objects, "Service", "fcgi-lua")
    assert service["spec"]["ports"][0]["targetPort"] == "fastcgi"
    service_port = service["spec"]["ports"][0]["port"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert fcgi[probe]["exec"]["command"] == ["fcgi-lua-ping", f"127.0.0.1:{port}", ping]
    config_path = argument(fcgi["command"], "--config")
    assert mounted_file(objects, fcgi_deployment, fcgi, config_path) == STACK_CONFIG.read_text()
    grace = fcgi_deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= pre_stop_seconds(fcgi) + shutdown_timeout() + 5
    # nginx reaches the Service by name, with the shipped keepalive settings.
    nginx_deployment = find(objects, "Deployment", "nginx")
    nginx = container(nginx_deployment, "nginx")
    upstream = mounted_file(objects, nginx_deployment, nginx, "/etc/nginx/fcgi-lua-upstream.conf")
    assert f"server {service['metadata']['name']}:{service_port};" in upstream
    shipped = (REPO / "nginx" / "fcgi-lua-upstream.conf").read_text()
    for directive in re.findall(r"^\s*(keepalive\w* [^;]+;)", shipped, re.M):
        assert directive in upstream
    command = nginx["readinessProbe"]["exec"]["command"]
    assert command[-1] == f"http://127.0.0.1:8080{ping}"
    hpa = find(objects, "HorizontalPodAutoscaler", "fcgi-lua")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "fcgi-lua"


# -- nginx's configuration, laid out as in the container --------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_nginx_config_passes_nginx_t(variant: str, tmp_path: Path) -> None:
    nginx_bin = need("nginx", "apt-get install nginx")
    objects = render(variant)
    deployment = find(objects, "Deployment", "fcgi-lua" if variant == "sidecar" else "nginx")
    nginx = container(deployment, "nginx")
    etc = tmp_path / "etc-nginx"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "nginx.conf").write_text(IMAGE_NGINX_CONF.format(tmp=tmp_path))
    for target in mounts(nginx):
        if target.startswith("/etc/nginx/"):
            text = mounted_file(objects, deployment, nginx, target)
            # The Service's name resolves in the cluster only.
            text = text.replace("server fcgi-lua:9000;", "server 127.0.0.1:9000;")
            (etc / target.removeprefix("/etc/nginx/")).write_text(text)
    argv = [nginx_bin, "-p", str(tmp_path), "-c", str(etc / "nginx.conf"), "-e", "stderr"]
    result = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    dump = subprocess.run([*argv, "-T"], capture_output=True, text=True, check=True).stdout
    assert "fastcgi_pass fcgi_lua;" in dump
    assert f"location = {stack_config()['ping_path']} {{" in dump
    assert shlex.quote(DOC_ROOT) in dump
