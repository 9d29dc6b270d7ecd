"""Several fcgi-lua hosts on one machine, really apart: each in a network
namespace of its own, made here with `ip netns` and veth pairs.

    switch   a bridge; one veth pair per namespace below, its other end
             the namespace's eth0 on 10.77.0.0/24
    front    nginx (10.77.0.1:8080), with an upstream of the hosts over TCP;
             wrk runs here too
    h1..hN   `python3 -m fcgi_lua serve` on 10.77.0.1N:9000
    redis    redis-server on 10.77.0.20:6379

Only namespaces, links and addresses of the cluster's own are made or
touched (the root namespace is left alone), and all of them are removed at
the end.  Names carry this process's id, so two runs never collide.
Needs root (CAP_SYS_ADMIN) and iproute2: ``netns_problem()`` says why not.

tests/hosts/test_hosts.py uses it; so does `python3 -m tests.hosts.measure`.
"""

from __future__ import annotations

import contextlib
import getpass
import grp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.77.0"
FRONT_ADDR = f"{SUBNET}.1"
REDIS_ADDR = f"{SUBNET}.20"
FCGI_PORT = 9000
NGINX_PORT = 8080
# nginx's upstream knobs under test, as docs/scaling.md recommends them.
FAIL_TIMEOUT = 2  # s: a failed host is tried again after this
CONNECT_TIMEOUT = 1  # s: an unreachable host (link down) costs this much
READ_TIMEOUT = 3  # s: a host gone silent mid-request (link down)

# nginx's access log: one line per request, what the tests count ("|"
# apart: $upstream_addr lists every host tried, ", " between them).
LOG_FORMAT = (
    "$msec|$request_time|$request_method|$status|$upstream_addr|$upstream_status|$request_uri"
)

# The scripts every host serves (the same directory: the namespaces share
# the filesystem, as hosts deployed from one image share their files).
SCRIPTS = {
    # bench/hello.lua: the per-request cost, nothing else.
    "hello.lua": (REPO / "bench" / "hello.lua").read_text(),
    # examples/visits.lua: a counter in Redis.
    "visits.lua": (REPO / "examples" / "visits.lua").read_text(),
    # A POST that changes something: reads its body, answers its length.
    "post.lua": (
        "ngx.req.read_body()\n"
        'local body = ngx.req.get_body_data() or ""\n'
        'ngx.say("stored ", #body)\n'
    ),
    # A session in Redis: ?sid=... set=... stores, get reads it back.
    "session.lua": """\
local redis = require "resty.redis"
local red = redis:new()
red:set_timeout(1000)
assert(red:connect(os.getenv("REDIS_HOST"), tonumber(os.getenv("REDIS_PORT"))))
local args = ngx.req.get_uri_args()
local key = "session:" .. args.sid
if args.set then
    red:hset(key, "name", args.set)
    red:expire(key, 60)
end
local name = red:hget(key, "name")
ngx.say("name=", name == ngx.null and "" or name)
red:set_keepalive(10000, 32)
""",
}


def netns_problem() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    ip = shutil.which("ip") or ("/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else None)
    if ip is None:
        return "`ip` not installed (apt-get install iproute2)"
    name = f"flprobe{os.getpid()}"
    made = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    subprocess.run([ip, "netns", "delete", name], capture_output=True)
    return None


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def program(name: str) -> str:
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path("/usr/sbin", name).exists() else None
    )
    if found is None:
        raise RuntimeError(f"{name} not installed")
    return found


def wait_tcp(namespace: str, address: str, port: int, timeout: float = 20.0) -> None:
    """Until something listens on address:port, seen from ``namespace``."""
    deadline = time.monotonic() + timeout
    probe = (
        "import socket,sys\n"
        f"s=socket.socket();s.settimeout(0.5)\n"
        f"sys.exit(s.connect_ex(({address!r},{port})))\n"
    )
    while time.monotonic() < deadline:
        result = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", probe],
            capture_output=True,
        )
        if result.returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {address}:{port} (from {namespace})")


@dataclass
class Host:
    index: int
    namespace: str
    port_name: str  # its veth end on the switch: link down cuts the host off
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def upstream(self) -> str:
        return f"{self.address}:{FCGI_PORT}"


@dataclass
class Cluster:
    tmp: Path
    size: int = 3
    workers: int = 1
    prefix: str = field(default_factory=lambda: f"fl{os.getpid()}")
    hosts: list[Host] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.prefix}sw"

    @property
    def front(self) -> str:
        return f"{self.prefix}fr"

    @property
    def redis_ns(self) -> str:
        return f"{self.prefix}rd"

    @property
    def root(self) -> Path:
        return self.tmp / "www"

    @property
    def access_log(self) -> Path:
        return self.tmp / "access.log"

    @property
    def base(self) -> str:
        return f"http://{FRONT_ADDR}:{NGINX_PORT}"

    # -- the network -------------------------------------------------------------------

    def _namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _attach(self, name: str, port_name: str, address: str) -> None:
        """A veth pair made inside the switch: port_name stays on the bridge,
        its peer moves into ``name`` as eth0 with ``address``."""
        sw = self.switch
        run("ip", "-n", sw, "link", "add", port_name, "type", "veth", "peer", "name", "eth0",
            "netns", name)  # fmt: skip
        run("ip", "-n", sw, "link", "set", port_name, "master", "br0", "up")
        run("ip", "-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "-n", name, "link", "set", "eth0", "up")

    def build_network(self) -> None:
        self._namespace(self.switch)
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")
        self._namespace(self.front)
        self._attach(self.front, "pfr", FRONT_ADDR)
        self._namespace(self.redis_ns)
        self._attach(self.redis_ns, "prd", REDIS_ADDR)
        for index in range(1, self.size + 1):
            host = Host(index, f"{self.prefix}h{index}", f"ph{index}")
            self._namespace(host.namespace)
            self._attach(host.namespace, host.port_name, host.address)
            self.hosts.append(host)

    def link(self, host: Host, up: bool) -> tuple[float, float]:
        """The host's link up or down; when the change began and ended."""
        began = time.time()
        run("ip", "-n", self.switch, "link", "set", host.port_name, "up" if up else "down")
        return began, time.time()

    # -- the programs ------------------------------------------------------------------

    def _spawn(
        self, namespace: str, argv: list[str], log: str, **env: str
    ) -> subprocess.Popen[bytes]:
        environment = dict(os.environ, PYTHONPATH=str(REPO), **env)
        with (self.tmp / log).open("ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", namespace, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=self.tmp,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def write_files(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for name, text in SCRIPTS.items():
            (self.root / name).write_text(text)
        self.write_nginx_conf(self.hosts)

    def upstream(self, hosts: list[Host]) -> None:
        """nginx's upstream becomes ``hosts``: the config is rewritten and
        nginx reloaded (SIGHUP); returns once the new workers answer."""
        self.write_nginx_conf(hosts)
        pid = int((self.tmp / "nginx.pid").read_text())
        os.kill(pid, signal.SIGHUP)
        time.sleep(1.0)

    def write_nginx_conf(self, hosts: list[Host]) -> None:
        servers = "\n".join(
            f"        server {h.upstream} max_fails=1 fail_timeout={FAIL_TIMEOUT}s;" for h in hosts
        )
        for sub in ("body", "fastcgi", "proxy", "scgi", "uwsgi"):
            (self.tmp / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
        user = f"{getpass.getuser()} {grp.getgrgid(os.getegid()).gr_name}"
        (self.tmp / "nginx.conf").write_text(f"""\
user {user};
worker_processes 1;
pid {self.tmp}/nginx.pid;
error_log {self.tmp}/nginx-error.log notice;
events {{ worker_connections 4096; }}
http {{
    log_format hosts '{LOG_FORMAT}';
    access_log {self.access_log} hosts buffer=64k flush=100ms;
    client_body_temp_path {self.tmp}/nginx-tmp/body;
    fastcgi_temp_path {self.tmp}/nginx-tmp/fastcgi;
    proxy_temp_path {self.tmp}/nginx-tmp/proxy;
    scgi_temp_path {self.tmp}/nginx-tmp/scgi;
    uwsgi_temp_path {self.tmp}/nginx-tmp/uwsgi;

    # docs/scaling.md: several fcgi-lua hosts behind one nginx.
    upstream fcgi_lua {{
{servers}
        keepalive 32;
        keepalive_requests 10000;
        keepalive_timeout 60s;
        keepalive_time 5s;
    }}

    server {{
        listen {FRONT_ADDR}:{NGINX_PORT};
        root {self.root};
        add_header X-Upstream $upstream_addr always;
        location ~ [^/]\\.lua(/|$) {{
            fastcgi_split_path_info ^(.+?\\.lua)(/.*)$;
            include {REPO}/nginx/fcgi_lua_params;
            fastcgi_pass fcgi_lua;
            fastcgi_keep_conn on;
            # A host that refuses, resets or stays silent: the request goes
            # to the next one.  nginx never does that for a POST (or any
            # non-idempotent method) once it was sent: those fail instead.
            fastcgi_next_upstream error timeout;
            fastcgi_connect_timeout {CONNECT_TIMEOUT}s;
            fastcgi_read_timeout {READ_TIMEOUT}s;
            fastcgi_send_timeout {READ_TIMEOUT}s;
        }}
    }}
}}
""")

    def start_host(self, host: Host) -> None:
        argv = [
            sys.executable, "-m", "fcgi_lua", "serve",
            "--config", str(REPO / "deploy" / "fcgi-lua.toml"),
            "--listen", host.upstream,
            "--root", str(self.root),
            "--workers", str(self.workers),
            "-o", "log_level=warning",
            # FastCGI has no authentication: only the front may connect.
            "-o", f'allowed_clients=["{FRONT_ADDR}"]',
            # Per host, as in a real deployment (its own /tmp).
            "-o", f"shared_dict_path={self.tmp / host.namespace}-shdict",
        ]  # fmt: skip
        host.process = self._spawn(
            host.namespace,
            argv,
            f"{host.namespace}.log",
            REDIS_HOST=REDIS_ADDR,
            REDIS_PORT="6379",
        )

    def wait_host(self, host: Host) -> None:
        # From the front: the only peer allowed_clients admits.
        wait_tcp(self.front, host.address, FCGI_PORT)

    def kill_host(self, host: Host) -> tuple[float, float]:
        """SIGKILL every process in the host's namespace, as a crash or a
        power cut would; when the kills began and ended."""
        pids = [int(p) for p in run("ip", "netns", "pids", host.namespace).split()]
        assert pids, f"nothing runs in {host.namespace}"
        began = time.time()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        ended = time.time()
        if host.process is not None:
            host.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while run("ip", "netns", "pids", host.namespace).split():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host.namespace}: processes survive SIGKILL")
            time.sleep(0.05)
        return began, ended

    def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.build_network()
        self.write_files()
        self._spawn(
            self.redis_ns,
            [program("redis-server"), "--bind", REDIS_ADDR, "--port", "6379", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            "redis.log",
        )  # fmt: skip
        for host in self.hosts:
            self.start_host(host)
        nginx = program("nginx")
        self._spawn(
            self.front,
            [nginx, "-p", str(self.tmp), "-c", str(self.tmp / "nginx.conf"), "-e", "stderr",
             "-g", "daemon off;"],
            "nginx.log",
        )  # fmt: skip
        wait_tcp(self.redis_ns, REDIS_ADDR, 6379)
        for host in self.hosts:
            self.wait_host(host)
        wait_tcp(self.front, FRONT_ADDR, NGINX_PORT)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        for name in reversed(self.namespaces):
            # Anything left in it (a worker that outlived its master).
            for pid in subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True
            ).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        self.namespaces.clear()

    # -- load and what it shows ------------------------------------------------------------

    def get(self, *paths: str) -> list[tuple[int, dict[str, str], str]]:
        """GETs from the front namespace, one after the other, each on a new
        connection (one Python process for all): status, headers, body."""
        script = (
            "import http.client,json,sys\n"
            "out=[]\n"
            "for path in json.loads(sys.argv[1]):\n"
            f"    c=http.client.HTTPConnection({FRONT_ADDR!r},{NGINX_PORT},timeout=10)\n"
            "    c.request('GET',path)\n"
            "    r=c.getresponse()\n"
            "    h={k.lower():v for k,v in r.getheaders()}\n"
            "    out.append([r.status,h,r.read().decode()])\n"
            "    c.close()\n"
            "print(json.dumps(out))\n"
        )
        argv = ["ip", "netns", "exec", self.front, sys.executable, "-c", script]
        out = run(*argv, json.dumps(list(paths)))
        return [(int(status), headers, body) for status, headers, body in json.loads(out)]

    def wrk(
        self,
        path: str,
        connections: int,
        duration: float,
        threads: int = 1,
        script: Path | None = None,
    ) -> subprocess.Popen[str]:
        """wrk in the front namespace, started; ``finish_wrk`` reads it."""
        argv = ["ip", "netns", "exec", self.front, program("wrk"), f"-t{threads}",
                f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s"]  # fmt: skip
        if script is not None:
            argv += ["-s", str(script)]
        return subprocess.Popen(
            [*argv, f"{self.base}{path}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def log_lines(self) -> list[LogLine]:
        time.sleep(0.3)  # the access log's flush=100ms
        lines = []
        for raw in self.access_log.read_text().splitlines():
            at, took, method, status, upstream, upstream_status, uri = raw.split("|", 6)
            line = LogLine(float(at), float(took), method, int(status), upstream)
            line.upstream_status, line.uri = upstream_status, uri
            lines.append(line)
        return lines


@dataclass
class LogLine:
    at: float  # when nginx finished it (epoch seconds, ms)
    took: float  # $request_time: it started at `at - took`
    method: str
    status: int
    upstream: str  # "a:9000" or, after a retry, "a:9000, b:9000"
    upstream_status: str = ""
    uri: str = ""

    @property
    def started(self) -> float:
        return self.at - self.took

    @property
    def served_by(self) -> str:
        """The host that answered: the last one tried."""
        return self.upstream.split(",")[-1].strip()

    @property
    def retried(self) -> bool:
        return "," in self.upstream


def requests_per_second(wrk_output: str) -> float:
    match = re.search(r"Requests/sec:\s+([0-9.]+)", wrk_output)
    if match is None:
        raise AssertionError(wrk_output)
    return float(match.group(1))


def spread(lines: list[LogLine]) -> Counter[str]:
    return Counter(line.served_by for line in lines)
