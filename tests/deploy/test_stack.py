"""The docker-compose topology without Docker, end to end: redis-server,
fcgi-lua and nginx under supervisord on loopback, with the configs
`bash deploy/run --render-only` writes (README's run command, same
templates), so with the very nginx site (deploy/fcgi-lua-site.conf) and
fcgi-lua config (deploy/fcgi-lua.toml) that docker-compose.yml mounts.
Requests cover the examples a newcomer opens; every case runs twice, and
every test fails if an error was logged that it did not expect."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.e2e_clients import Response, http_request
from tests.helpers.net import free_port

from .tools import DEPLOY, REPO, SHIPPED_SOCKET, need, require

pytestmark = pytest.mark.e2e

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
RUNS = [1, 2]
RESTY_REDIS = Path("/usr/share/lua/5.1/nginx/redis.lua")  # Debian's lua-nginx-redis
NGINX_ERROR = re.compile(r"\[(error|crit|alert|emerg)\]")
FCGI_ERROR = re.compile(r"\[(ERROR|CRITICAL)\]|Traceback \(most recent call last\)")
SUPERVISOR_TROUBLE = re.compile(r"FATAL|not expected|gave up|BACKOFF")


@dataclass
class Topology:
    run_dir: Path
    base: str
    redis_port: int
    socket: Path
    supervisord: subprocess.Popen[bytes]
    output: Path  # supervisord's stdout: every program's log, interleaved
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def log_text(self) -> str:
        return self.output.read_text("utf-8", "replace")

    def get(self, path: str, **kwargs: object) -> Response:
        return http_request(self.base, path, **kwargs)  # type: ignore[arg-type]

    def supervisorctl(self, *args: str) -> None:
        argv = [sys.executable, "-m", "supervisor.supervisorctl", "-c", "supervisord.conf"]
        subprocess.run([*argv, *args], cwd=self.run_dir, capture_output=True, check=True)


def _render(run_dir: Path, port: int, redis_port: int) -> None:
    env = dict(os.environ)
    env.update(
        RUN_DIR=str(run_dir),
        PORT=str(port),
        REDIS_PORT=str(redis_port),
        NGINX=need("nginx", "apt-get install nginx"),
        REDIS_SERVER=need("redis-server", "apt-get install redis-server"),
        # This interpreter's fcgi-lua: the code under test.
        FCGI_LUA=f"{sys.executable} -m fcgi_lua",
    )
    result = subprocess.run(
        ["bash", str(DEPLOY / "run"), "--render-only"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _wait_ready(topology: Topology) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if topology.supervisord.poll() is not None:
            break
        try:
            resp = topology.get("/fcgi-ping", timeout=2)
            redis = _redis_ping(topology.redis_port)
            if resp.status == 200 and redis:
                return
            last = f"ping {resp.status}, redis {redis}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"the stack did not come up ({last}):\n{topology.log_text()[-5000:]}")


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64) == b"+PONG\r\n"
    except OSError:
        return False


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    need("nginx", "apt-get install nginx")
    need("redis-server", "apt-get install redis-server")
    require("lua-nginx-redis", RESTY_REDIS.exists(), "apt-get install lua-nginx-redis")
    run_dir = tmp_path_factory.mktemp("stack")
    port, redis_port = free_port(), free_port()
    _render(run_dir, port, redis_port)
    output = run_dir / "supervisord.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", "supervisord.conf"],
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own process group: Ctrl-C on pytest must not reach it first.
            start_new_session=True,
        )
    topology = Topology(
        run_dir=run_dir,
        base=f"http://127.0.0.1:{port}",
        redis_port=redis_port,
        socket=run_dir / "fcgi-lua.sock",
        supervisord=proc,
        output=output,
    )
    try:
        _wait_ready(topology)
        yield topology
    finally:
        stopped = _stop(proc)
    log = topology.log_text()
    # A graceful stop is part of the contract: supervisord stops nginx
    # (SIGQUIT), fcgi-lua (SIGTERM: finish, exit 0), redis, then exits 0.
    assert stopped == 0, f"supervisord exited with {stopped}:\n{log[-5000:]}"
    assert "stopped: fcgi-lua (exit status 0)" in log, log[-5000:]
    assert "stopped: nginx (exit status 0)" in log, log[-5000:]
    assert not SUPERVISOR_TROUBLE.search(log), log[-5000:]


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
    return proc.returncode


@pytest.fixture
def stack(topology: Topology) -> Iterator[Topology]:
    """The running topology; after the test, no unexpected error logged."""
    if topology.supervisord.poll() is not None:
        pytest.fail(f"supervisord died:\n{topology.log_text()[-5000:]}", pytrace=False)
    mark = topology.output.stat().st_size
    topology.allowed = []
    yield topology
    time.sleep(0.1)  # log lines of a finished request may trail its response
    with topology.output.open("rb") as f:
        f.seek(mark)
        new = f.read().decode("utf-8", "replace")
    errors = [
        line
        for line in new.splitlines()
        if (NGINX_ERROR.search(line) or FCGI_ERROR.search(line) or SUPERVISOR_TROUBLE.search(line))
        and not any(p.search(line) for p in topology.allowed)
    ]
    assert not errors, "unexpected errors logged:\n" + "\n".join(errors)


# -- the same files as docker-compose.yml ------------------------------------------------


def test_nginx_runs_the_site_compose_mounts(stack: Topology) -> None:
    nginx_dir = stack.run_dir / "nginx"
    assert (nginx_dir / "fcgi-lua-site.conf").read_bytes() == (
        DEPLOY / "fcgi-lua-site.conf"
    ).read_bytes()
    for name in ("fcgi-lua.conf", "fcgi_lua_params", "fcgi-lua-status.conf"):
        assert (nginx_dir / name).read_bytes() == (REPO / "nginx" / name).read_bytes(), name
    # The upstream differs from nginx/'s in its socket path only.
    shipped = (REPO / "nginx" / "fcgi-lua-upstream.conf").read_text()
    rendered = (nginx_dir / "fcgi-lua-upstream.conf").read_text()
    server = "server unix:{};"
    assert rendered == shipped.replace(server.format(SHIPPED_SOCKET), server.format(stack.socket))
    supervisord_conf = (stack.run_dir / "supervisord.conf").read_text()
    assert f"--config {DEPLOY / 'fcgi-lua.toml'} " in supervisord_conf


def test_the_image_health_check_passes(stack: Topology) -> None:
    # The Docker image's HEALTHCHECK command, against this fcgi-lua.
    for _ in RUNS:
        ping = subprocess.run(
            [sys.executable, str(DEPLOY / "fcgi-lua-ping"), f"unix:{stack.socket}", "/fcgi-ping"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert ping.returncode == 0, ping.stderr
    missing = subprocess.run(
        [sys.executable, str(DEPLOY / "fcgi-lua-ping"), f"unix:{stack.socket}", "/nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1
    assert "403" in missing.stderr  # not a .lua file: fcgi-lua refuses it
    stack.allowed.append(re.compile(r"403: extension not allowed"))


# -- the examples, through nginx ---------------------------------------------------------


@dataclass(frozen=True)
class Case:
    path: str
    status: int = 200
    body: tuple[str, ...] = ()  # substrings of the body
    headers: tuple[tuple[str, str], ...] = ()  # (name, regex) of a response header
    method: str = "GET"
    request_headers: tuple[tuple[str, str], ...] = ()
    request_body: bytes | None = None


BOUNDARY = "fcgiluastackboundary"
UPLOAD = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="title"\r\n\r\nholiday\r\n'
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="files"; filename="notes.txt"\r\n'
    "Content-Type: text/plain\r\n\r\n"
    "hello from the stack\n\r\n"
    f"--{BOUNDARY}--\r\n"
).encode()

CASES = {
    "index": Case(
        "/",
        body=('<a href="/json.lua?name=Lua">', '<a href="/upload.lua">', "/fcgi-status?html"),
    ),
    "hello": Case(
        "/hello.lua?name=Lua",
        body=("<h1>Hello, Lua!</h1>", "<p>GET /hello.lua?name=Lua</p>", "served at"),
        headers=(("content-type", r"text/html; charset=utf-8"),),
    ),
    "hello escapes html": Case(
        "/hello.lua?name=John%20%3Cb%3ESmith",
        body=("<h1>Hello, John &lt;b&gt;Smith!</h1>",),
    ),
    "json get": Case(
        "/json.lua?name=Lua",
        body=('"hello":"Lua"',),
        headers=(("content-type", r"application/json"),),
    ),
    "json post": Case(
        "/json.lua",
        method="POST",
        request_headers=(("Content-Type", "application/json"),),
        request_body=b'{"b": [1, 2], "a": true}',
        body=('"keys":["a","b"]', '"b":[1,2]'),
    ),
    "json not json": Case(
        "/json.lua",
        method="POST",
        request_body=b"{oops",
        status=400,
        body=('"error":"expected a JSON object: Expected object key string',),
    ),
    "status html": Case(
        "/fcgi-status?html",
        body=("<h1>fcgi-lua status</h1>", "<h2>Workers</h2>"),
        headers=(("content-type", r"text/html; charset=utf-8"),),
    ),
    "args": Case(
        "/args.lua?a=1&a=2&flag&name=Lua",
        body=("a = { 1, 2 }  (repeated)", "flag = true  (no value)", "name = Lua"),
    ),
    "headers": Case(
        "/headers.lua",
        request_headers=(("User-Agent", "stack-test"),),
        body=("User-Agent: stack-test",),
        headers=(("x-powered-by", "fcgi-lua"), ("cache-control", "no-store")),
    ),
    "cookie set": Case(
        "/cookies.lua?set=flavour&value=mint",
        status=303,
        headers=(
            ("set-cookie", r"flavour=mint; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"),
            ("location", r"(http://127\.0\.0\.1:\d+)?/cookies\.lua"),
        ),
    ),
    "cookie read": Case(
        "/cookies.lua",
        request_headers=(("Cookie", "flavour=mint; theme=dark"),),
        body=("ngx.var.cookie_flavour = mint", "<td>theme</td><td>dark</td>"),
    ),
    "cookie delete": Case(
        "/cookies.lua?delete=theme",
        status=303,
        headers=(("set-cookie", r"theme=; Path=/; Max-Age=0"),),
    ),
    "redirect": Case(
        "/redirect.lua",
        status=302,
        headers=(("location", r"(http://127\.0\.0\.1:\d+)?/index\.lua\?name=redirected"),),
    ),
    "redirect to": Case(
        "/redirect.lua?to=/args.lua%3Fx%3D1",
        status=302,
        headers=(("location", r"(http://127\.0\.0\.1:\d+)?/args\.lua\?x=1"),),
    ),
    "form post": Case(
        "/upload.lua",
        method="POST",
        request_headers=(("Content-Type", "application/x-www-form-urlencoded"),),
        request_body=b"name=Ann&color=red&color=blue",
        body=("name: Ann<br>colors: red, blue",),
    ),
    "upload": Case(
        "/upload.lua",
        method="POST",
        request_headers=(("Content-Type", f"multipart/form-data; boundary={BOUNDARY}"),),
        request_body=UPLOAD,
        body=(
            "title: holiday",
            "notes.txt (text/plain): 21 bytes, starts with <code>hello from the s</code>",
        ),
    ),
    "missing script": Case("/missing.lua", status=404),
    "ping": Case("/fcgi-ping", body=("pong",)),
    "status": Case("/fcgi-status", headers=(("content-type", "application/json"),)),
}


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("name", list(CASES))
def test_example(stack: Topology, name: str, run: int) -> None:
    case = CASES[name]
    resp = stack.get(
        case.path,
        method=case.method,
        headers=list(case.request_headers),
        body=case.request_body,
    )
    assert resp.status == case.status, resp.text
    for fragment in case.body:
        assert fragment in resp.text, resp.text
    for header, pattern in case.headers:
        values = resp.header_all(header)
        assert any(re.fullmatch(pattern, v) for v in values), (header, values)


def test_streaming_example(stack: Topology) -> None:
    resp = stack.get("/countdown.lua?from=1")
    assert resp.status == 200
    assert resp.text == "1...\nliftoff!\n"


def test_error_example_is_a_plain_500(stack: Topology) -> None:
    stack.allowed.append(re.compile(r"error\.lua"))
    resp = stack.get("/error.lua")
    assert resp.status == 500
    assert "order.items" not in resp.text  # no traceback without --debug


@pytest.mark.parametrize("run", RUNS)
def test_redis_example_counts_across_workers(stack: Topology, run: int) -> None:
    first = stack.get("/visits.lua?reset=1")
    assert first.status == 200, first.text
    assert first.text.startswith("visits: 1\n"), first.text
    assert f"redis: 127.0.0.1:{stack.redis_port}" in first.text
    workers = set()
    for expected in range(2, 12):
        resp = stack.get("/visits.lua")
        assert resp.status == 200, resp.text
        assert resp.text.startswith(f"visits: {expected}\n"), resp.text
        workers.update(re.findall(r"counted by worker (\d+)", resp.text))
    assert workers  # every answer says which worker counted it


def test_redis_example_without_redis_says_so(stack: Topology) -> None:
    # The page's own failure path: a 503 with the reason; the worker carries on.
    stack.supervisorctl("stop", "redis")
    try:
        resp = stack.get("/visits.lua")
        assert resp.status == 503
        assert "cannot reach Redis" in resp.text
    finally:
        stack.supervisorctl("start", "redis")
    assert stack.get("/visits.lua").status == 200
