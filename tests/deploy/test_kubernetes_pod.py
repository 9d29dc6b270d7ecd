"""The sidecar pod of deploy/kubernetes/ run without a cluster: its two
containers' commands, verbatim from the rendered Deployment, in a mount and
network namespace of their own (`unshare`), with every volume where the pod
mounts it: the socket `emptyDir` at /run/fcgi-lua in both, the ConfigMaps
laid out as the kubelet does (files as symlinks through `..data`, subPath
files bind-mounted), /etc/hosts naming `redis`.  The readiness and liveness
probes' commands must pass, and the site must answer through nginx.

Not like the pod: one mount namespace for both containers (they mount
nothing at the same path differently), fcgi-lua runs as root (the image's
user 10001 cannot read this machine's Python), /tmp is the machine's, and
nginx is Debian's (the image's nginx.conf is stood in for, as in
test_compose.py)."""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .manifests import container, find, quantity, render
from .tools import DEPLOY, REPO, need, require

pytestmark = pytest.mark.e2e

# Namespaces of the pod's own: mounts, network, and processes (every one of
# them ends with the script, whatever happens to the test).
UNSHARE = ["--mount", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
UNSHARE += ["--propagation", "private"]

IMAGE_NGINX_CONF = """\
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    include /etc/nginx/conf.d/*.conf;
}
"""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) in command and args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def container_env(ctr: dict[str, Any]) -> dict[str, str]:
    env = {}
    for entry in ctr.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        field = entry["valueFrom"]["resourceFieldRef"]
        assert field["resource"] == "limits.cpu" and field["divisor"] == "1"
        # The downward API rounds up to the divisor.
        env[entry["name"]] = str(math.ceil(quantity(ctr["resources"]["limits"]["cpu"])))
    return env


def config_map_volume(directory: Path, data: dict[str, str]) -> None:
    """The kubelet's layout: ..TIMESTAMP/ holds the files, ..data points
    at it, each file is a symlink through ..data."""
    stamp = directory / "..2026_01_01_00_00_00.000000000"
    stamp.mkdir(parents=True)
    for name, text in data.items():
        (stamp / name).write_text(text)
        (directory / name).symlink_to(f"..data/{name}")
    (directory / "..data").symlink_to(stamp.name)


def test_the_sidecar_pod_serves_and_its_probes_pass(tmp_path: Path) -> None:
    require("root (unshare)", os.geteuid() == 0, "run the tests as root")
    unshare = need("unshare", "apt-get install util-linux")
    nginx_bin = need("nginx", "apt-get install nginx")
    redis_server = need("redis-server", "apt-get install redis-server")
    need("curl", "apt-get install curl")
    objects = render("sidecar")
    deployment = find(objects, "Deployment", "fcgi-lua")
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    config_maps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}

    # The volumes' contents, and the script that mounts them.
    mounts: list[str] = []
    for name, volume in volumes.items():
        where = tmp_path / "volumes" / name
        if "emptyDir" in volume:
            where.mkdir(parents=True)
            where.chmod(0o777)  # as the kubelet makes an emptyDir
        else:
            config_map_volume(where, config_maps[volume["configMap"]["name"]])
    seen: dict[str, str] = {}
    for ctr in spec["containers"]:
        for mount in ctr["volumeMounts"]:
            target = mount["mountPath"]
            if target == "/tmp":
                continue  # the machine's /tmp holds this test
            source = tmp_path / "volumes" / mount["name"]
            if "subPath" in mount:
                source = source / mount["subPath"]
            if target in seen:
                assert seen[target] == str(source), f"{target} mounted twice, differently"
                continue
            seen[target] = str(source)
            make = "touch" if "subPath" in mount else "mkdir -p"
            mounts.append(f"{make} {shlex.quote(target)}")
            mounts.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(target)}")
            if mount.get("readOnly"):
                mounts.append(f"mount -o remount,bind,ro {shlex.quote(target)}")

    # Programs by the names the manifests use.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fcgi-lua").write_text(f'#!/bin/sh\nexec {sys.executable} -m fcgi_lua "$@"\n')
    (bin_dir / "fcgi-lua").chmod(0o755)
    shutil.copy(DEPLOY / "fcgi-lua-ping", bin_dir / "fcgi-lua-ping")
    (bin_dir / "nginx").symlink_to(nginx_bin)

    nginx, fcgi = container(deployment, "nginx"), container(deployment, "fcgi-lua")
    fcgi_env = container_env(fcgi)
    fcgi_command = [expand(word, fcgi_env) for word in fcgi["command"]]
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in fcgi_env.items())
    probes = {
        "nginx readiness": nginx["readinessProbe"]["exec"]["command"],
        "nginx liveness": nginx["livenessProbe"]["exec"]["command"],
        "fcgi-lua startup": fcgi["startupProbe"]["exec"]["command"],
        "fcgi-lua liveness": fcgi["livenessProbe"]["exec"]["command"],
    }
    probe_lines = "\n".join(
        f'{shlex.join(cmd)} && echo "PROBE {name}: ok" || echo "PROBE {name}: failed"'
        for name, cmd in probes.items()
    )
    readiness = shlex.join(probes["nginx readiness"])
    script = f"""\
set -eu
export PATH={shlex.quote(str(bin_dir))}:$PATH PYTHONPATH={shlex.quote(str(REPO))}
ip link set lo up
# /etc: an overlay (nothing reaches the machine's); /run, /srv: fresh.
mkdir -p {tmp_path}/etc-upper {tmp_path}/etc-work
mount -t overlay overlay /etc \
    -o lowerdir=/etc,upperdir={tmp_path}/etc-upper,workdir={tmp_path}/etc-work
mount -t tmpfs none /run
mount -t tmpfs none /srv
echo "127.0.0.1 redis" >> /etc/hosts
rm -rf /etc/nginx/conf.d /etc/nginx/sites-enabled /etc/nginx/modules-enabled
mkdir -p /etc/nginx/conf.d
cat > /etc/nginx/nginx.conf <<'EOF'
{IMAGE_NGINX_CONF}EOF
{chr(10).join(mounts)}
pids=""
trap 'kill $pids 2>/dev/null; wait' EXIT
{shlex.quote(redis_server)} --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
    > {tmp_path}/redis.log 2>&1 &
pids="$pids $!"
env {exports} {shlex.join(fcgi_command)} > {tmp_path}/fcgi-lua.log 2>&1 &
fcgi_lua=$!
pids="$pids $fcgi_lua"
nginx -g 'daemon off;' > {tmp_path}/nginx.log 2>&1 &
pids="$pids $!"
# What the kubelet does: the readiness probe until it passes.
for i in $(seq 100); do
    if {readiness} 2>/dev/null; then break; fi
    sleep 0.2
done
{probe_lines}
echo "VISITS $(curl -fsS 'http://127.0.0.1:8080/visits.lua?reset=1' | head -1)"
echo "VISITS $(curl -fsS 'http://127.0.0.1:8080/visits.lua' | head -1)"
echo "ARGS $(curl -fsS 'http://127.0.0.1:8080/args.lua?a=1' | head -1)"
echo "STATUS $(curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:8080/nope.lua)"
echo "WORKERS $(ps -o args= --ppid $fcgi_lua | grep -c 'fcgi_lua serve')"
"""
    (tmp_path / "pod.sh").write_text(script)
    result = subprocess.run(
        [unshare, *UNSHARE, "bash", str(tmp_path / "pod.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(tmp_path.glob("*.log"))
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr + logs
    for name in probes:
        assert f"PROBE {name}: ok" in out, out + logs
    assert "VISITS visits: 1\n" in out and "VISITS visits: 2\n" in out, out + logs
    assert "ARGS a = 1" in out, out + logs
    assert "STATUS 404" in out, out + logs
    # --workers $(FCGI_LUA_WORKERS): the CPU limit, 2.
    assert "WORKERS 2" in out, out + logs
    assert "Traceback" not in logs, logs
