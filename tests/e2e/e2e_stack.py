"""The end-to-end stack: processes, rendered nginx config, log watching.

See conftest.py for the layout; this module holds the machinery so test
modules can import its types (importing conftest itself is fragile).
"""

from __future__ import annotations

import contextlib
import getpass
import grp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.net import free_port

from .e2e_clients import fastcgi_request, http_request

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCRIPTS = HERE / "scripts"
NGINX_DIR = REPO / "nginx"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
NGINX_MODULES = Path("/usr/share/nginx/modules")
# CGI comparison (test_e2e_cgi.py): Debian's fcgiwrap running the same
# cgi_*.lua files with a real Lua interpreter; optional off CI.
FCGIWRAP = shutil.which("fcgiwrap") or (
    "/usr/sbin/fcgiwrap" if Path("/usr/sbin/fcgiwrap").exists() else None
)
LUA_INTERPRETER = shutil.which("lua") or shutil.which("lua5.1")
START_TIMEOUT = 20.0
# The ngx.shared zone both nginx (lua_shared_dict) and fcgi-lua's main
# instance (shared_dicts) declare.
SHDICT_ZONE = "shdict_e2e"
SHDICT_SIZE = "1m"
STOP_TIMEOUT = 15.0

NGINX_ERROR = re.compile(r"\[(error|crit|alert|emerg)\]")
FCGI_ERROR = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")


def _connectable(address: str | tuple[str, int]) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(address)
        except OSError:
            return False
    return True


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace") if self.log.exists() else ""


@dataclass
class Stack:
    tmp: Path
    root: Path
    outside: Path
    unix_socket: Path
    debug_socket: Path
    bodies_socket: Path
    tcp_address: tuple[str, int]
    urls: dict[str, str] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    nginx_error_log: Path = Path()
    broken: str = ""  # why the stack can no longer be trusted, once it cannot
    fcgiwrap_socket: Path | None = None  # set when fcgiwrap runs (the "cgi" route)

    # -- logs -------------------------------------------------------------
    @property
    def fcgi_log(self) -> Path:
        return self.tmp / "logs" / "fcgi-lua.log"

    @property
    def fcgi_debug_log(self) -> Path:
        return self.tmp / "logs" / "fcgi-lua-debug.log"

    @property
    def fcgi_bodies_log(self) -> Path:
        return self.tmp / "logs" / "fcgi-lua-bodies.log"

    # client_body_temp_path of the main instance and of the "bodies" one.
    @property
    def body_temp_main(self) -> Path:
        return self.tmp / "fcgi-body-main"

    @property
    def body_temp(self) -> Path:
        return self.tmp / "fcgi-body"

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def fcgi_log_text(self) -> str:
        return _read(self.fcgi_log) + _read(self.fcgi_debug_log) + _read(self.fcgi_bodies_log)

    def nginx_error_text(self) -> str:
        return _read(self.nginx_error_log)

    def log_files(self) -> dict[str, Path]:
        return {
            "nginx": self.nginx_error_log,
            "fcgi-lua": self.fcgi_log,
            "fcgi-lua-debug": self.fcgi_debug_log,
            "fcgi-lua-bodies": self.fcgi_bodies_log,
        }

    # -- health --------------------------------------------------------------
    def dead_service(self) -> str:
        for service in self.services:
            if service.proc.poll() is not None:
                return (
                    f"{service.name} died (exit {service.proc.returncode}); its log ends:\n"
                    + service.log_text()[-3000:]
                )
        return ""

    def check_health(self) -> None:
        """After a failed test: does fcgi-lua still answer through nginx?"""
        if problem := self.dead_service():
            self.broken = problem
            return
        try:
            resp = http_request(self.urls["unix"], "/hello.lua", timeout=3)
        except OSError as exc:
            self.broken = f"fcgi-lua stopped answering through nginx ({exc!r})"
            return
        if resp.status != 200:
            self.broken = f"fcgi-lua answers {resp.status} to /hello.lua through nginx"

    # -- processes ---------------------------------------------------------
    def start(self, name: str, argv: list[str], log: Path) -> Service:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            # its own process group: stop() ends its children too (fcgiwrap's
            # -c N children outlive their parent otherwise)
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=self.tmp,
                start_new_session=True,
            )
        service = Service(name, proc, log)
        self.services.append(service)
        return service

    def wait_until(
        self, service: Service, address: str | tuple[str, int], *, fastcgi: bool = False
    ) -> None:
        """Until ``address`` accepts connections or, with ``fastcgi``, until
        fcgi-lua there answers a real request for hello.lua."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                argv = " ".join(map(str, service.proc.args))  # type: ignore[arg-type]
                raise RuntimeError(
                    f"{service.name} exited with {service.proc.returncode} while starting:\n"
                    f"{argv}\n{service.log_text()}"
                )
            if fastcgi and _answers_fastcgi(address, self.root):
                return
            if not fastcgi and _connectable(address):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{service.name} not ready on {address}:\n{service.log_text()}")

    def stop(self) -> list[str]:
        """Stop in reverse order; return the problems found (graceful stop failed)."""
        problems = []
        for service in reversed(self.services):
            proc = service.proc
            if proc.poll() is None:
                # nginx: SIGQUIT is its graceful stop; fcgi-lua: SIGTERM is.
                proc.send_signal(signal.SIGQUIT if service.name == "nginx" else signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    problems.append(f"{service.name} ignored its stop signal for {STOP_TIMEOUT}s")
                # fcgiwrap has no graceful stop: SIGTERM kills it, as expected
                killed_ok = service.name == "fcgiwrap" and proc.returncode == -signal.SIGTERM
                if proc.returncode not in (0, -signal.SIGKILL) and not killed_ok:
                    problems.append(f"{service.name} exited with {proc.returncode} when stopped")
            else:
                problems.append(f"{service.name} had died during the tests ({proc.returncode})")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind
        return problems


def _answers_fastcgi(address: str | tuple[str, int], root: Path) -> bool:
    # A whole request rather than a bare connect: it proves the responder
    # serves, and a connect-then-close probe is not what nginx does at start.
    params: dict[str, str | bytes] = {
        "SCRIPT_FILENAME": str(root / "hello.lua"),
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "",
    }
    try:
        result = fastcgi_request(address, params, timeout=5)
    except OSError:
        return False
    return result.response.status == 200


def _read(path: Path) -> str:
    return path.read_text("utf-8", "replace") if path.exists() else ""


def fcgi_lua_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "fcgi_lua", *args]


def _make_document_root(tmp: Path) -> tuple[Path, Path]:
    root = tmp / "root"
    shutil.copytree(SCRIPTS, root)
    # The mk example a newcomer opens is the one the tests run.
    shutil.copy(REPO / "examples" / "mk_example.lua", root / "mk_example.lua")
    # Fixtures for the confinement tests: secrets outside the root, reached
    # through a symlink inside it; a file with a disallowed extension.
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.lua").write_text('ngx.say("SECRET-OUTSIDE-ROOT")\n')
    (root / "escape.lua").symlink_to(outside / "secret.lua")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    (root / "notes.txt").write_text("TXT-SECRET\n")
    (root / "notes.lua.txt").write_text('ngx.say("LUA-TXT-SECRET")\n')
    (root / "sub").mkdir()
    (root / "sub" / "inner.lua").write_text('ngx.say("inner")\n')
    return root, outside


def _nginx_user_line() -> str:
    # nginx workers must be able to connect to fcgi-lua's socket, which is
    # owned by whoever runs the tests: run them as that same user.
    if os.geteuid() != 0:
        return ""
    return f"user {getpass.getuser()} {grp.getgrgid(os.getegid()).gr_name};"


def render_nginx_conf(stack: Stack, ports: dict[str, int]) -> Path:
    conf_dir = stack.tmp / "conf"
    conf_dir.mkdir()
    # The files users install, copied verbatim; relative includes resolve
    # against the directory of nginx.conf.
    shutil.copy(NGINX_DIR / "fcgi_lua_params", conf_dir)
    shutil.copy(NGINX_DIR / "fcgi-lua.conf", conf_dir)
    shutil.copy(NGINX_DIR / "fcgi-lua-status.conf", conf_dir)
    upstream = (NGINX_DIR / "fcgi-lua-upstream.conf").read_text()
    shipped_socket = "unix:/run/fcgi-lua/fcgi-lua.sock"
    assert shipped_socket in upstream
    (conf_dir / "fcgi-lua-upstream.conf").write_text(
        upstream.replace(shipped_socket, f"unix:{stack.unix_socket}")
    )
    tmp, root = stack.tmp, stack.root
    host, tcp_port = stack.tcp_address
    # ngx.exec targets (test_e2e_exec.py), in every server that runs scripts
    exec_locations = """
        location /exec-internal/ {
            internal;
            default_type text/plain;
            return 200 "internal uri=$uri args=$args\\n";
        }
        location @exec_named {
            default_type text/plain;
            return 200 "named uri=$uri args=$args\\n";
        }"""
    cgi_server = ""
    if stack.fcgiwrap_socket is not None:
        cgi_server = f"""
    server {{  # cgi: fcgiwrap runs the same cgi_*.lua files as real CGI scripts
        listen 127.0.0.1:{ports["cgi"]};
        root {root};
        location ~ [^/]\\.lua$ {{
            include fcgi_lua_params;
            fastcgi_pass unix:{stack.fcgiwrap_socket};
        }}
    }}"""
    conf = f"""
load_module {NGINX_MODULES}/ndk_http_module.so;
load_module {NGINX_MODULES}/ngx_http_lua_module.so;
{_nginx_user_line()}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {stack.nginx_error_log} info;
events {{ worker_connections 4096; }}
http {{
    access_log {tmp}/logs/nginx-access.log;
    client_body_temp_path {tmp}/nginx-tmp/body;
    fastcgi_temp_path {tmp}/nginx-tmp/fastcgi;
    proxy_temp_path {tmp}/nginx-tmp/proxy;
    scgi_temp_path {tmp}/nginx-tmp/scgi;
    uwsgi_temp_path {tmp}/nginx-tmp/uwsgi;
    # What OpenResty answers when a script sets no Content-Type.
    default_type text/plain;
    # Large enough for the upload tests, so fcgi-lua's own limit is the one
    # tested; the buffer as fcgi-lua's default, so the oracle spools alike.
    client_max_body_size 200m;
    client_body_buffer_size 16k;
    # ngx.shared.DICT (test_e2e_shdict.py); fcgi-lua's main instance has the same
    lua_shared_dict {SHDICT_ZONE} {SHDICT_SIZE};

    include fcgi-lua-upstream.conf;
    upstream fcgi_lua_tcp {{ server {host}:{tcp_port}; keepalive 32; }}
    upstream fcgi_lua_debug {{ server unix:{stack.debug_socket}; keepalive 8; }}
    upstream fcgi_lua_bodies {{ server unix:{stack.bodies_socket}; keepalive 8; }}

    server {{  # unix: the shipped snippet, verbatim
        listen 127.0.0.1:{ports["unix"]};
        root {root};
        include fcgi-lua.conf;
        include fcgi-lua-status.conf;
        {exec_locations}
    }}
    server {{  # tcp
        listen 127.0.0.1:{ports["tcp"]};
        root {root};
        {exec_locations}
        location ~ [^/]\\.lua(/|$) {{
            fastcgi_split_path_info ^(.+?\\.lua)(/.*)$;
            include fcgi_lua_params;
            fastcgi_pass fcgi_lua_tcp;
            fastcgi_keep_conn on;
        }}
    }}
    server {{  # debug
        listen 127.0.0.1:{ports["debug"]};
        root {root};
        location ~ [^/]\\.lua(/|$) {{
            include fcgi_lua_params;
            fastcgi_pass fcgi_lua_debug;
            fastcgi_keep_conn on;
        }}
    }}
    server {{  # unbuffered: request bodies stream to fcgi-lua as they arrive
        listen 127.0.0.1:{ports["unbuffered"]};
        root {root};
        location ~ [^/]\\.lua(/|$) {{
            include fcgi_lua_params;
            fastcgi_pass fcgi_lua;
            fastcgi_keep_conn on;
            fastcgi_request_buffering off;
        }}
    }}
    server {{  # passall: every path goes to fcgi-lua
        listen 127.0.0.1:{ports["passall"]};
        root {root};
        location / {{
            include fcgi_lua_params;
            fastcgi_pass fcgi_lua;
            fastcgi_keep_conn on;
        }}
    }}
    server {{  # bodies: the instance with large body limits (150m)
        listen 127.0.0.1:{ports["bodies"]};
        root {root};
        location ~ [^/]\\.lua(/|$) {{
            include fcgi_lua_params;
            fastcgi_pass fcgi_lua_bodies;
            fastcgi_keep_conn on;
        }}
    }}
    server {{  # bodies_unbuffered: the same, bodies streamed as they arrive
        listen 127.0.0.1:{ports["bodies_unbuffered"]};
        root {root};
        location ~ [^/]\\.lua(/|$) {{
            include fcgi_lua_params;
            fastcgi_pass fcgi_lua_bodies;
            fastcgi_keep_conn on;
            fastcgi_request_buffering off;
        }}
    }}
    server {{  # oracle: OpenResty runs the same files
        listen 127.0.0.1:{ports["oracle"]};
        root {root};
        # fcgi-lua always notices a client abort (ngx.on_abort)
        lua_check_client_abort on;
        location ~ [^/]\\.lua$ {{
            content_by_lua_file $document_root$uri;
        }}
        {exec_locations}
    }}{cgi_server}
}}
"""
    path = conf_dir / "nginx.conf"
    path.write_text(conf)
    for sub in ("body", "fastcgi", "proxy", "scgi", "uwsgi"):
        (tmp / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    return path


def render_shipped_nginx_conf(stack: Stack, port: int, connections: int = 1024) -> Path:
    """An nginx.conf for one server on ``port`` made of the shipped nginx/
    files (params, location, upstream with its keepalive pool) pointed at
    ``stack.unix_socket``: what a user installs, for one fcgi-lua instance."""
    conf_dir = stack.tmp / "conf"
    conf_dir.mkdir()
    for name in ("fcgi_lua_params", "fcgi-lua.conf"):
        shutil.copy(NGINX_DIR / name, conf_dir)
    upstream = (NGINX_DIR / "fcgi-lua-upstream.conf").read_text()
    (conf_dir / "fcgi-lua-upstream.conf").write_text(
        upstream.replace("unix:/run/fcgi-lua/fcgi-lua.sock", f"unix:{stack.unix_socket}")
    )
    temp = stack.tmp / "nginx-tmp"
    for sub in ("body", "fastcgi", "proxy", "scgi", "uwsgi"):
        (temp / sub).mkdir(parents=True)
    path = conf_dir / "nginx.conf"
    path.write_text(f"""
{_nginx_user_line()}
worker_processes 1;
pid {stack.tmp}/nginx.pid;
error_log {stack.nginx_error_log} info;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    fastcgi_temp_path {temp}/fastcgi;
    proxy_temp_path {temp}/proxy;
    scgi_temp_path {temp}/scgi;
    uwsgi_temp_path {temp}/uwsgi;
    include fcgi-lua-upstream.conf;
    server {{
        listen 127.0.0.1:{port};
        root {stack.root};
        include fcgi-lua.conf;
    }}
}}
""")
    return path


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def needs(what: str, present: bool) -> None:
    """Skip a test whose tool is missing, except under CI, which installs it."""
    if not present:
        if os.environ.get("CI"):
            pytest.fail(f"{what} missing: scripts/test installs it")
        pytest.skip(f"{what} not installed")


@contextlib.contextmanager
def peer_server(
    name: str, argv: list[str], workdir: Path, ready: Callable[[], bool]
) -> Iterator[subprocess.Popen[bytes]]:
    """A server the scripts talk to (redis-server, memcached, dnsmasq):
    started with its output in ``workdir/NAME.log``, yielded once
    ``ready()``, terminated afterwards."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 10
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: " + _read(log))
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def start_stack(tmp: Path) -> Stack:
    if NGINX is None:
        raise RuntimeError("nginx binary not found; CI must install it (apt-get install nginx)")
    for module in ("ndk_http_module.so", "ngx_http_lua_module.so"):
        if not (NGINX_MODULES / module).exists():
            raise RuntimeError(
                f"{NGINX_MODULES / module} missing: apt-get install libnginx-mod-http-lua"
            )
    (tmp / "logs").mkdir()
    for body_temp in ("fcgi-body-main", "fcgi-body"):  # Stack.body_temp_main, .body_temp
        (tmp / body_temp).mkdir()
    root, outside = _make_document_root(tmp)
    # Unix socket paths are limited to ~107 bytes: keep them short.
    sock_dir = Path(os.environ.get("E2E_SOCK_DIR", "/tmp"))
    sock_base = sock_dir / f"fcgi-lua-e2e-{os.getpid()}"
    stack = Stack(
        tmp=tmp,
        root=root,
        outside=outside,
        unix_socket=Path(f"{sock_base}.sock"),
        debug_socket=Path(f"{sock_base}-debug.sock"),
        bodies_socket=Path(f"{sock_base}-bodies.sock"),
        tcp_address=("127.0.0.1", free_port()),
        nginx_error_log=tmp / "logs" / "nginx-error.log",
    )
    try:
        host, port = stack.tcp_address
        # Each instance is one process (--workers 1), as the oracle is one
        # nginx worker: a semaphore handoff between two requests, module
        # state and the RSS measured in test_e2e_bodies.py need one Lua VM.
        # Multi-worker behaviour: test_e2e_processes.py, integration tests.
        main = stack.start(
            "fcgi-lua",
            fcgi_lua_argv(
                "serve",
                "--listen",
                f"unix:{stack.unix_socket}",
                "--listen",
                f"{host}:{port}",
                "--root",
                str(root),
                "--workers",
                "1",
                "-o",
                f"client_body_temp_path={stack.body_temp_main}",
                # the zone the oracle declares with lua_shared_dict (test_e2e_shdict.py)
                "-o",
                f'shared_dicts={{{SHDICT_ZONE}="{SHDICT_SIZE}"}}',
                "-o",
                f"shared_dict_path={tmp / 'shdict'}",
                # the shipped nginx/fcgi-lua-status.conf (test_e2e_status.py)
                "-o",
                "status_path=/fcgi-status",
                "-o",
                "ping_path=/fcgi-ping",
            ),
            stack.fcgi_log,
        )
        debug = stack.start(
            "fcgi-lua-debug",
            fcgi_lua_argv(
                "serve",
                "--listen",
                f"unix:{stack.debug_socket}",
                "--root",
                str(root),
                "--workers",
                "1",
                "--debug",
                # short, for test_e2e_limits.py (the budget is the default one)
                "-o",
                "request_timeout=2",
            ),
            stack.fcgi_debug_log,
        )
        bodies = stack.start(
            "fcgi-lua-bodies",
            fcgi_lua_argv(
                "serve",
                "--listen",
                f"unix:{stack.bodies_socket}",
                "--root",
                str(root),
                "--workers",
                "1",
                "-o",
                "client_max_body_size=150m",
                "-o",
                f"client_body_temp_path={stack.body_temp}",
            ),
            stack.fcgi_bodies_log,
        )
        stack.wait_until(main, str(stack.unix_socket), fastcgi=True)
        stack.wait_until(bodies, str(stack.bodies_socket), fastcgi=True)
        stack.wait_until(main, stack.tcp_address, fastcgi=True)
        stack.wait_until(debug, str(stack.debug_socket), fastcgi=True)
        routes = ["unix", "tcp", "debug", "passall", "oracle", "unbuffered"]
        routes += ["bodies", "bodies_unbuffered"]
        if FCGIWRAP and LUA_INTERPRETER:
            stack.fcgiwrap_socket = Path(f"{sock_base}-fcgiwrap.sock")
            stack.fcgiwrap_socket.unlink(missing_ok=True)
            fcgiwrap = stack.start(
                "fcgiwrap",
                [FCGIWRAP, "-c", "4", "-s", f"unix:{stack.fcgiwrap_socket}"],
                tmp / "logs" / "fcgiwrap.log",
            )
            stack.wait_until(fcgiwrap, str(stack.fcgiwrap_socket))
            routes.append("cgi")

        ports = {name: free_port() for name in routes}
        conf = render_nginx_conf(stack, ports)
        nginx_argv = [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(stack.nginx_error_log)]
        check = subprocess.run([*nginx_argv, "-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        nginx = stack.start(
            "nginx", [*nginx_argv, "-g", "daemon off;"], tmp / "logs" / "nginx-stderr.log"
        )
        for name, port in ports.items():
            stack.wait_until(nginx, ("127.0.0.1", port))
            stack.urls[name] = f"http://127.0.0.1:{port}"
        for name in ("unix", "tcp", "debug", "oracle"):
            resp = http_request(stack.urls[name], "/hello.lua")
            if resp.status != 200:
                raise RuntimeError(
                    f"probe of {name} answered {resp.status}: {resp.text}\n"
                    f"nginx: {stack.nginx_error_text()}\nfcgi-lua: {stack.fcgi_log_text()}"
                )
    except BaseException:
        stack.stop()
        raise
    return stack


class LogWatch:
    """Log files read from a mark (their size when the test began): what a
    test produced, the error lines (``patterns``) it allows, and the rest."""

    def __init__(self, files: dict[str, Path], patterns: dict[str, re.Pattern[str]]) -> None:
        self.files = files
        self.patterns = patterns
        self.marks = {name: _size(path) for name, path in files.items()}
        self.allowed: list[tuple[str, re.Pattern[str]]] = []

    def new(self, name: str) -> str:
        """What log ``name`` got since the mark."""
        path = self.files[name]
        if not path.exists():
            return ""
        with path.open("rb") as f:
            f.seek(self.marks[name])
            return f.read().decode("utf-8", "replace")

    def allow(self, name: str, pattern: str) -> None:
        """Error lines of log ``name`` matching ``pattern`` are expected."""
        self.allowed.append((name, re.compile(pattern)))

    def wait_for(self, name: str, pattern: str, timeout: float = 5.0) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.new(name)
            match = regex.search(text)
            if match:
                return match.group(0)
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} log never matched {pattern!r}; it got:\n{text}")
            time.sleep(0.05)

    def unexpected_errors(self) -> list[str]:
        found = []
        for name, regex in self.patterns.items():
            for line in self.new(name).splitlines():
                if not regex.search(line):
                    continue
                if any(n == name and p.search(line) for n, p in self.allowed):
                    continue
                found.append(f"{name}: {line}")
        return found


class Logs(LogWatch):
    """The log lines a test produced ("nginx", "fcgi-lua", "fcgi-lua-debug"),
    and the errors it is allowed to produce."""

    def __init__(self, stack: Stack) -> None:
        files = stack.log_files()
        super().__init__(
            files, {name: NGINX_ERROR if name == "nginx" else FCGI_ERROR for name in files}
        )
        self.stack = stack
        self.checked = False

    def assert_no_errors(self) -> None:
        self.checked = True
        # Log lines of a finished request can trail its last byte slightly.
        time.sleep(0.05)
        errors = self.unexpected_errors()
        assert not errors, "unexpected errors logged:\n" + "\n".join(errors)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
