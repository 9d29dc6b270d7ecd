"""The other FastCGI fronts (lighttpd, Apache httpd, Caddy) in front of a
real ``fcgi-lua serve``, each started from the config that fronts/ ships.

One fcgi-lua for all of them, on a Unix socket. Each front runs as its own
process on loopback, with a config rendered from the shipped file by
replacing its placeholders (socket, document root, port) and nothing else;
the main config around it (modules, logs, pid file) stands in for what a
Debian install provides. A front starts on first use and stops at the end.

The document root and the socket live in a world-readable temp dir, not
under pytest's (mode 0700): run as root, Apache's workers drop to
``www-data`` and must still reach both.
"""

from __future__ import annotations

import getpass
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .e2e_clients import http_request
from .e2e_stack import (
    FCGI_ERROR,
    REPO,
    SCRIPTS,
    START_TIMEOUT,
    STOP_TIMEOUT,
    LogWatch,
    Service,
    _answers_fastcgi,
    _connectable,
    fcgi_lua_argv,
    free_port,
)

FRONTS_DIR = REPO / "fronts"


def _binary(name: str) -> str | None:
    return shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )


BINARIES = {
    "lighttpd": _binary("lighttpd"),
    "apache2": _binary("apache2"),
    "caddy": _binary("caddy"),
}
APACHE_MODULES = Path("/usr/lib/apache2/modules")

# The placeholders of the shipped configs, replaced when rendering.
SHIPPED_SOCKET = "/run/fcgi-lua/fcgi-lua.sock"
SHIPPED_ROOTS = {"lighttpd": "/var/www/html", "apache2": "/var/www/html", "caddy": "/srv/www"}

# What each front's error log calls an error. lighttpd's lines carry no
# level: anything but its start/stop notices is a problem.
FRONT_ERROR = {
    "lighttpd": re.compile(r"^(?!.*\) server (started|stopped)).+"),
    "apache2": re.compile(r"\[[\w.]+:(error|crit|alert|emerg)\]"),
    "caddy": re.compile(r'"level":"(error|panic|fatal)"'),
}

# A script that shows the CGI params a front sends, as fcgi-lua reads them.
FRONT_ENV_LUA = """\
local names = {"uri", "request_uri", "args", "script_name", "path_info",
  "script_filename", "request_filename", "scheme", "host", "server_port", "http_authorization",
  "cookie_a", "cookie_b"}
for _, name in ipairs(names) do
    ngx.say(name, ": ", tostring(ngx.var[name]))
end
"""


@dataclass
class Front:
    name: str
    url: str
    error_log: Path
    config: Path
    extra_urls: dict[str, str] = field(default_factory=dict)  # test-only variants


@dataclass
class FrontsStack:
    tmp: Path  # configs and logs (pytest's temp dir)
    shared: Path  # document root and socket (readable by a front's workers)
    services: list[Service] = field(default_factory=list)
    fronts: dict[str, Front] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.shared / "root"

    @property
    def socket(self) -> Path:
        return self.shared / "fcgi-lua.sock"

    @property
    def fcgi_log(self) -> Path:
        return self.tmp / "logs" / "fcgi-lua.out"  # its stderr (Service log)

    @property
    def body_temp(self) -> Path:
        return self.tmp / "fcgi-body"

    # -- processes -------------------------------------------------------------
    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Service:
        log = self.tmp / "logs" / f"{name}.out"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=self.tmp, env=env
            )
        service = Service(name, proc, log)
        self.services.append(service)
        return service

    def wait_until(self, service: Service, address: str | tuple[str, int]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        fastcgi = isinstance(address, str)
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with {service.proc.returncode} while starting:\n"
                    f"{service.log_text()}"
                )
            if _answers_fastcgi(address, self.root) if fastcgi else _connectable(address):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{service.name} not ready on {address}:\n{service.log_text()}")

    def stop(self) -> list[str]:
        """Stop everything, fronts first; the problems found (no graceful stop)."""
        problems = []
        for service in reversed(self.services):
            proc = service.proc
            if proc.poll() is not None:
                problems.append(f"{service.name} had died during the tests ({proc.returncode})")
                continue
            # SIGTERM is the stop of fcgi-lua, Apache (-DFOREGROUND) and Caddy;
            # lighttpd's graceful one is SIGINT.
            proc.send_signal(signal.SIGINT if service.name == "lighttpd" else signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                problems.append(f"{service.name} ignored its stop signal for {STOP_TIMEOUT}s")
                continue
            if proc.returncode != 0:
                problems.append(f"{service.name} exited with {proc.returncode} when stopped")
        return problems

    def dead_service(self) -> str:
        for service in self.services:
            if service.proc.poll() is not None:
                return (
                    f"{service.name} died (exit {service.proc.returncode}):\n"
                    + (service.log_text()[-3000:])
                )
        return ""

    # -- fronts ----------------------------------------------------------------
    def front(self, name: str) -> Front:
        """The running front ``name``, started on first use."""
        if name in self.fronts:
            return self.fronts[name]
        if name in self.failed:
            raise RuntimeError(f"{name} failed to start earlier:\n{self.failed[name]}")
        binary = BINARIES[name]
        if binary is None:
            raise RuntimeError(f"{name} binary not found; CI must install it (apt-get install)")
        starter = {"lighttpd": _start_lighttpd, "apache2": _start_apache2, "caddy": _start_caddy}
        try:
            front = starter[name](self, binary)
            resp = http_request(front.url, "/hello.lua")
            if resp.status != 200:
                raise RuntimeError(
                    f"probe of {name} answered {resp.status}: {resp.text}\n"
                    f"{name}: {_read(front.error_log)}\nfcgi-lua: {_read(self.fcgi_log)}"
                )
        except Exception as exc:
            self.failed[name] = str(exc)
            raise
        self.fronts[name] = front
        return front


def start_fronts_stack(tmp: Path) -> FrontsStack:
    """fcgi-lua on a Unix socket; the fronts start later, on first use."""
    shared = Path(tempfile.mkdtemp(prefix="fcgi-lua-fronts-"))
    shared.chmod(0o755)
    stack = FrontsStack(tmp=tmp, shared=shared)
    (tmp / "logs").mkdir()
    stack.body_temp.mkdir()
    shutil.copytree(SCRIPTS, stack.root)
    (stack.root / "front_env.lua").write_text(FRONT_ENV_LUA)
    (stack.root / "static.txt").write_text("static file\n")
    (stack.root / "sub").mkdir()
    (stack.root / "sub" / "inner.lua").write_text('ngx.say("inner")\n')
    try:
        service = stack.start(
            "fcgi-lua",
            fcgi_lua_argv(
                "serve",
                "--listen",
                f"unix:{stack.socket}",
                "--root",
                str(stack.root),
                "--workers",
                "1",
                "-o",
                f"client_body_temp_path={stack.body_temp}",
            ),
        )
        stack.wait_until(service, str(stack.socket))
    except BaseException:
        stack.stop()
        shutil.rmtree(shared, ignore_errors=True)
        raise
    return stack


def remove_shared(stack: FrontsStack) -> None:
    shutil.rmtree(stack.shared, ignore_errors=True)


def shipped(name: str, relative: str, stack: FrontsStack) -> str:
    """The shipped config file, with its socket and document root ours."""
    text = (FRONTS_DIR / name / relative).read_text()
    for placeholder in (SHIPPED_SOCKET, SHIPPED_ROOTS[name]):
        assert placeholder in text, f"fronts/{name}/{relative} no longer names {placeholder}"
    return text.replace(SHIPPED_SOCKET, str(stack.socket)).replace(
        SHIPPED_ROOTS[name], str(stack.root)
    )


def _read(path: Path) -> str:
    return path.read_text("utf-8", "replace") if path.exists() else ""


# -- lighttpd ------------------------------------------------------------------


def _start_lighttpd(stack: FrontsStack, binary: str) -> Front:
    conf_dir = stack.tmp / "lighttpd"
    (conf_dir / "uploads").mkdir(parents=True)
    snippet = conf_dir / "15-fcgi-lua.conf"
    snippet.write_text(shipped("lighttpd", "15-fcgi-lua.conf", stack))
    port = free_port()
    error_log = stack.tmp / "logs" / "lighttpd-error.log"
    # Debian's lighttpd.conf, reduced to what matters here, then the snippet
    # the way `lighty-enable-mod fcgi-lua` includes it (10-fastcgi first).
    conf = conf_dir / "lighttpd.conf"
    conf.write_text(
        f"""
server.modules = ("mod_indexfile", "mod_access", "mod_alias", "mod_redirect")
server.document-root = "{stack.root}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{error_log}"
server.pid-file = "{conf_dir}/lighttpd.pid"
server.upload-dirs = ("{conf_dir}/uploads")
static-file.exclude-extensions = (".php", ".pl", ".fcgi")
server.modules += ("mod_fastcgi")
include "{snippet}"
server.modules += ("mod_dirlisting", "mod_staticfile")
"""
    )
    check = subprocess.run(
        [binary, "-tt", "-f", str(conf)], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        raise RuntimeError(f"lighttpd -tt failed:\n{check.stdout}{check.stderr}")
    service = stack.start("lighttpd", [binary, "-D", "-f", str(conf)])
    stack.wait_until(service, ("127.0.0.1", port))
    return Front("lighttpd", f"http://127.0.0.1:{port}", error_log, conf)


# -- Apache httpd ----------------------------------------------------------------


def _apache_user_lines() -> str:
    # Apache refuses to serve as root: as root, its workers become www-data
    # (hence the world-readable shared dir); otherwise they stay who we are.
    if os.geteuid() != 0:
        return ""
    for user, group in (("www-data", "www-data"), ("nobody", "nogroup")):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return f"User {user}\nGroup {group}"
    raise RuntimeError(f"running as {getpass.getuser()}: no www-data or nobody user for Apache")


def _start_apache2(stack: FrontsStack, binary: str) -> Front:
    conf_dir = stack.tmp / "apache2"
    (conf_dir / "run").mkdir(parents=True)
    snippet = conf_dir / "fcgi-lua.conf"
    snippet.write_text(shipped("apache2", "fcgi-lua.conf", stack))
    port, fpm_port = free_port(), free_port()
    error_log = stack.tmp / "logs" / "apache2-error.log"
    modules = ["mpm_event", "authz_core", "mime", "dir", "proxy", "proxy_fcgi"]
    loads = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in modules)
    # The snippet in the main server, as `a2enconf fcgi-lua` puts it; a
    # second vhost has the php-fpm guides' config instead (SCRIPT_FILENAME
    # "proxy:fcgi://localhost/...": fcgi-lua must strip the prefix).
    conf = conf_dir / "apache2.conf"
    conf.write_text(
        f"""
ServerRoot {conf_dir}
DefaultRuntimeDir {conf_dir}/run
PidFile {conf_dir}/apache2.pid
ServerName 127.0.0.1
{_apache_user_lines()}
{loads}
ErrorLog {error_log}
LogLevel warn
TypesConfig /etc/mime.types
Listen 127.0.0.1:{port}
Listen 127.0.0.1:{fpm_port}
DocumentRoot {stack.root}
<Directory {stack.root}>
    Require all granted
</Directory>
Include {snippet}

<VirtualHost 127.0.0.1:{fpm_port}>
    DocumentRoot {stack.root}
    <FilesMatch "\\.lua$">
        SetHandler "proxy:unix:{stack.socket}|fcgi://localhost"
        ProxyFCGIBackendType FPM
    </FilesMatch>
</VirtualHost>
"""
    )
    argv = [binary, "-d", str(conf_dir), "-f", str(conf)]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"apache2 -t failed:\n{check.stdout}{check.stderr}")
    service = stack.start("apache2", [*argv, "-DFOREGROUND"])
    stack.wait_until(service, ("127.0.0.1", port))
    stack.wait_until(service, ("127.0.0.1", fpm_port))
    return Front(
        "apache2",
        f"http://127.0.0.1:{port}",
        error_log,
        conf,
        {"fpm-style": f"http://127.0.0.1:{fpm_port}"},
    )


# -- Caddy -----------------------------------------------------------------------


def _start_caddy(stack: FrontsStack, binary: str) -> Front:
    conf_dir = stack.tmp / "caddy"
    conf_dir.mkdir()
    port = free_port()
    site = shipped("caddy", "Caddyfile", stack)
    assert ":8080 {" in site, "fronts/caddy/Caddyfile no longer has the :8080 site"
    site = site.replace(":8080 {", f"http://127.0.0.1:{port} {{", 1)
    error_log = stack.tmp / "logs" / "caddy.log"
    # Global options for a test instance: no admin endpoint (port 2019 is
    # shared by every Caddy on the machine), no HTTPS, its own storage.
    conf = conf_dir / "Caddyfile"
    conf.write_text(
        f"""{{
\tadmin off
\tauto_https off
\tstorage file_system {conf_dir}/storage
\tlog {{
\t\toutput file {error_log}
\t}}
}}
{site}"""
    )
    env = {
        **os.environ,
        "HOME": str(conf_dir),
        "XDG_CONFIG_HOME": str(conf_dir / "config"),
        "XDG_DATA_HOME": str(conf_dir / "data"),
    }
    argv = [binary, "run", "--config", str(conf), "--adapter", "caddyfile"]
    check = subprocess.run(
        [binary, "validate", "--config", str(conf), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if check.returncode != 0:
        raise RuntimeError(f"caddy validate failed:\n{check.stdout}{check.stderr}")
    service = stack.start("caddy", argv, env)
    stack.wait_until(service, ("127.0.0.1", port))
    return Front("caddy", f"http://127.0.0.1:{port}", error_log, conf)


class FrontLogs(LogWatch):
    """What fcgi-lua's log and one front's error log got during a test."""

    def __init__(self, stack: FrontsStack, front: str) -> None:
        files = {"fcgi-lua": stack.fcgi_log}
        patterns = {"fcgi-lua": FCGI_ERROR}
        if front in stack.fronts:
            files[front] = stack.fronts[front].error_log
            patterns[front] = FRONT_ERROR[front]
        super().__init__(files, patterns)
