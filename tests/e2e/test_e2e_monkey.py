"""End to end through a real Monkey 1.6 in front of fcgi-lua (docs/monkey.md).

Monkey is not packaged in Debian, so this module runs only when it is given
one, and is reported as skipped otherwise:

    MONKEY_BIN=/path/to/monkey [MONKEY_PLUGINS=/dir/of/monkey-fastcgi.so] \\
        python3 -m pytest tests/e2e/test_e2e_monkey.py

``MONKEY_PLUGINS`` defaults to the first of the binary's directory,
``lib/monkey`` beside it (a ``-DBUILD_LOCAL=1`` build's layout), ``../lib``,
``../lib/monkey``, ``/usr/lib`` and ``/usr/local/lib`` that holds
``monkey-fastcgi.so``.  Only Monkey is needed: nginx may be missing.

The shipped ``monkey_conf/`` is rendered into a temp dir with only its
ports and paths substituted (each substituted line is asserted to exist,
so the test breaks if the shipped file changes shape); ``plugins.load`` is
used verbatim, its bare ``Load monkey-fastcgi.so`` found through
LD_LIBRARY_PATH.  The module's Monkey uses the shipped ``ServerAddr``
(TCP) to reach one ``fcgi-lua serve`` (2 workers) over the e2e scripts;
one smoke test starts a second Monkey with the commented ``ServerPath``
alternative switched on (a Unix socket: see docs/monkey.md for why only a
smoke test).

This module does not use the nginx stack (it overrides the package's
autouse log fixture); it checks its own logs: no ERROR/traceback in
fcgi-lua's unless a test allows it, no Error/Warning from Monkey.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import getpass
import hashlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .e2e_clients import Response, http_request, raw_http
from .e2e_stack import FCGI_ERROR, REPO, SCRIPTS, Service, Stack, fcgi_lua_argv, free_port

MONKEY_CONF = REPO / "monkey_conf"
MONKEY_BIN = os.environ.get("MONKEY_BIN", "")
# What the shipped monkey.conf says; the upload tests stay either side of it.
MAX_REQUEST_KB = 1024

pytestmark = pytest.mark.skipif(
    not MONKEY_BIN, reason="set MONKEY_BIN=/path/to/monkey (1.6.x) to run: see docs/monkey.md"
)

MONKEY_PROBLEM = re.compile(r"\[\s*(Error|Warning)\]")

# Test-only scripts, next to the shared e2e ones in the temp document root.
EXTRA_SCRIPTS = {
    "mk_sleep_echo.lua": 'ngx.sleep(0.1)\nngx.say("n=", ngx.var.arg_n)\n',
    "mk_big.lua": 'ngx.print(string.rep("0123456789abcdef", 65536))\n',
    "mk_head.lua": 'ngx.header["X-Head"] = "yes"\nngx.say("HEAD-MUST-NOT-SHOW")\n',
}


def plugins_dir(binary: str) -> Path:
    given = os.environ.get("MONKEY_PLUGINS")
    if given:
        return Path(given)
    here = Path(binary).resolve().parent
    candidates = [here, here / "lib" / "monkey"]  # the binary's, a BUILD_LOCAL build's
    candidates += [here.parent / "lib", here.parent / "lib" / "monkey"]
    candidates += [Path("/usr/lib"), Path("/usr/local/lib")]
    for candidate in candidates:
        if (candidate / "monkey-fastcgi.so").exists():
            return candidate
    raise RuntimeError(
        f"monkey-fastcgi.so not found beside {binary} nor in {candidates}: set MONKEY_PLUGINS"
    )


def _replace_line(text: str, old: str, new: str, where: str) -> str:
    assert old in text, f"shipped {where} no longer has {old!r}"
    return text.replace(old, new, 1)


def render_monkey_conf(dest: Path, *, port: int, root: Path, backend: str, tmp: Path) -> Path:
    """monkey_conf/ copied to ``dest`` with ports and paths substituted.

    ``backend`` is ``host:port`` (the shipped ServerAddr line) or
    ``unix:/path`` (its commented ServerPath alternative, switched on).
    """
    shutil.copytree(MONKEY_CONF, dest)
    conf = dest / "monkey.conf"
    text = conf.read_text()
    text = _replace_line(text, "Listen 127.0.0.1:2001", f"Listen 127.0.0.1:{port}", "monkey.conf")
    text = _replace_line(
        text, "PidFile /var/run/monkey.pid", f"PidFile {tmp}/monkey-{port}.pid", "monkey.conf"
    )
    # Monkey switches to User only when started as root: stay who we are.
    text = _replace_line(text, "User nobody", f"User {getpass.getuser()}", "monkey.conf")
    assert f"MaxRequestSize {MAX_REQUEST_KB}\n" in text
    conf.write_text(text)
    site = dest / "sites" / "default"
    site.write_text(
        _replace_line(site.read_text(), "DocumentRoot /srv/www", f"DocumentRoot {root}", "site")
    )
    fastcgi = dest / "plugins" / "fastcgi" / "fastcgi.conf"
    text = fastcgi.read_text()
    if backend.startswith("unix:"):
        text = _replace_line(text, "    ServerAddr 127.0.0.1:9000", "    # ServerAddr", "fastcgi")
        text = _replace_line(
            text,
            "    # ServerPath /run/fcgi-lua/fcgi-lua.sock",
            f"    ServerPath {backend[5:]}",
            "fastcgi.conf",
        )
    else:
        text = _replace_line(text, "ServerAddr 127.0.0.1:9000", f"ServerAddr {backend}", "fastcgi")
    fastcgi.write_text(text)
    return dest


@dataclass
class MonkeyStack:
    stack: Stack  # the process bookkeeping of the nginx e2e stack, reused
    fcgi_log: Path
    monkey_logs: list[Path]
    urls: dict[str, str] = field(default_factory=dict)
    plugins: Path = Path()

    def log_sizes(self) -> dict[Path, int]:
        return {
            p: p.stat().st_size if p.exists() else 0 for p in [self.fcgi_log, *self.monkey_logs]
        }


def _start_monkey(stack: Stack, name: str, conf: Path, plugins: Path, port: int) -> Service:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(plugins), env.get("LD_LIBRARY_PATH")]))
    log = stack.tmp / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [MONKEY_BIN, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=stack.tmp,
            env=env,
        )
    service = Service(name, proc, log)
    stack.services.append(service)
    stack.wait_until(service, ("127.0.0.1", port))
    return service


@pytest.fixture(scope="module")
def monkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonkeyStack]:
    tmp = tmp_path_factory.mktemp("monkey")
    (tmp / "logs").mkdir()
    root = tmp / "root"
    shutil.copytree(SCRIPTS, root)
    for name, source in EXTRA_SCRIPTS.items():
        (root / name).write_text(source)
    (root / "static.txt").write_text("served by Monkey\n")
    shutil.copy(REPO / "examples" / "index.html", root / "index.html")  # what "/" gets
    (root / "index.lua").write_text('ngx.say("the index script")\n')
    (root / "a b").mkdir()
    (root / "a b" / "uri.lua").write_text(
        'ngx.say("uri=", ngx.var.uri, " request_uri=", ngx.var.request_uri)\n'
    )
    plugins = plugins_dir(MONKEY_BIN)
    sock = Path(os.environ.get("E2E_SOCK_DIR", "/tmp")) / f"fcgi-lua-monkey-{os.getpid()}.sock"
    sock.unlink(missing_ok=True)
    tcp = ("127.0.0.1", free_port())
    stack = Stack(
        tmp=tmp,
        root=root,
        outside=tmp,
        unix_socket=sock,
        debug_socket=sock,
        bodies_socket=sock,
        tcp_address=tcp,
    )
    fcgi_log = tmp / "logs" / "fcgi-lua.log"
    result = MonkeyStack(stack, fcgi_log, [])
    try:
        fcgi = stack.start(
            "fcgi-lua",
            fcgi_lua_argv(
                "serve",
                "--listen",
                f"unix:{sock}",
                "--listen",
                f"{tcp[0]}:{tcp[1]}",
                "--root",
                str(root),
                "--workers",
                "2",
            ),
            fcgi_log,
        )
        stack.wait_until(fcgi, str(sock), fastcgi=True)
        stack.wait_until(fcgi, tcp, fastcgi=True)
        port = free_port()
        conf = render_monkey_conf(
            tmp / "conf-tcp", port=port, root=root, backend=f"{tcp[0]}:{tcp[1]}", tmp=tmp
        )
        service = _start_monkey(stack, "monkey-tcp", conf, plugins, port)
        result.monkey_logs.append(service.log)
        result.urls["tcp"] = f"http://127.0.0.1:{port}"
        result.plugins = plugins
        for route, url in result.urls.items():
            resp = http_request(url, "/hello.lua")
            if resp.status != 200:
                raise RuntimeError(
                    f"probe of Monkey {route} answered {resp.status}: {resp.text}\n"
                    + "\n".join(p.read_text() for p in result.monkey_logs)
                    + _read(fcgi_log)
                )
        for log in result.monkey_logs:
            text = log.read_text("utf-8", "replace")
            # The shipped config must load cleanly, the plugin included.
            assert "fastcgi" in text and not MONKEY_PROBLEM.search(text), text
        yield result
    finally:
        problems = stack.stop()
        sock.unlink(missing_ok=True)
    assert not problems, "; ".join(problems) + "\n" + _read(fcgi_log)[-3000:]


def _read(path: Path) -> str:
    return path.read_text("utf-8", "replace") if path.exists() else ""


@dataclass
class MonkeyLogs:
    stack: MonkeyStack
    marks: dict[Path, int]
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """fcgi-lua error lines matching ``pattern`` are expected."""
        self.allowed.append(re.compile(pattern))

    def new(self, path: Path) -> str:
        with path.open("rb") as f:
            f.seek(self.marks.get(path, 0))
            return f.read().decode("utf-8", "replace")

    def problems(self) -> list[str]:
        found = []
        for line in self.new(self.stack.fcgi_log).splitlines():
            if FCGI_ERROR.search(line) and not any(p.search(line) for p in self.allowed):
                found.append(f"fcgi-lua: {line}")
        for log in self.stack.monkey_logs:
            found += [
                f"{log.name}: {x}" for x in self.new(log).splitlines() if MONKEY_PROBLEM.search(x)
            ]
        return found


@pytest.fixture
def logs(monkey: MonkeyStack) -> Iterator[MonkeyLogs]:
    if problem := monkey.stack.dead_service():
        pytest.fail(problem, pytrace=False)
    watch = MonkeyLogs(monkey, monkey.log_sizes())
    yield watch
    time.sleep(0.05)  # a finished request's log line may trail its last byte
    problems = watch.problems()
    assert not problems, "unexpected log lines:\n" + "\n".join(problems)


@pytest.fixture(autouse=True)
def _every_test_checks_logs(logs: MonkeyLogs) -> None:
    """Replaces the package's autouse fixture: no nginx stack here."""


def get(monkey: MonkeyStack, path: str, **kwargs: object) -> Response:
    return http_request(monkey.urls["tcp"], path, **kwargs)  # type: ignore[arg-type]


def assert_single_framing(resp: Response) -> None:
    # Monkey chunks every FastCGI response to an HTTP/1.1 client; a
    # Content-Length of ours beside it would be an invalid message.
    assert resp.header("transfer-encoding") == "Chunked"
    assert resp.header("content-length") is None


# -- requests and responses ----------------------------------------------------


def test_get_with_query(monkey: MonkeyStack) -> None:
    resp = get(monkey, "/vars.lua?a=1&b=x%20y&c")
    assert resp.status == 200
    assert resp.header("content-type") == "text/plain"
    assert (resp.header("server") or "").startswith("Monkey/1.6")
    assert_single_framing(resp)
    # REQUEST_URI arrives without the query: fcgi-lua puts it back.
    assert resp.text == (
        "method: GET\nuri: /vars.lua\nargs: a=1&b=x%20y&c\n"
        "request_uri: /vars.lua?a=1&b=x%20y&c\nrequest_method: GET\n"
    )
    args = get(monkey, "/args.lua?b=2&a=x%20y&a=z&flag")
    assert args.text == "a = [x y, z]\nb = 2 (string)\nflag = true (boolean)\n"


def test_escaped_path(monkey: MonkeyStack) -> None:
    # Monkey's SCRIPT_NAME is decoded, its REQUEST_URI raw: as nginx's $uri
    # and $request_uri.
    resp = get(monkey, "/a%20b/uri.lua?x=%41")
    assert resp.status == 200
    assert resp.text == "uri=/a b/uri.lua request_uri=/a%20b/uri.lua?x=%41\n"


def test_get_without_query(monkey: MonkeyStack) -> None:
    # Monkey sends no QUERY_STRING then: $args is nil, as in nginx.
    resp = get(monkey, "/vars.lua")
    assert resp.text == (
        "method: GET\nuri: /vars.lua\nargs: nil\nrequest_uri: /vars.lua\nrequest_method: GET\n"
    )


def test_post_form(monkey: MonkeyStack) -> None:
    body = b"name=J%C3%BCrgen+M&city=Z%C3%BCrich&empty="
    resp = get(
        monkey,
        "/body.lua",
        method="POST",
        headers=[("Content-Type", "application/x-www-form-urlencoded")],
        body=body,
    )
    assert resp.status == 200
    assert_single_framing(resp)
    assert resp.text == (
        "method: POST\n"
        f"bytes: {len(body)}\n"
        f"body: {body.decode()}\n"
        "arg city = Zürich\n"
        "arg empty = \n"
        "arg name = Jürgen M\n"
    )


def test_post_without_body_has_no_stdin_record(monkey: MonkeyStack) -> None:
    # Monkey sends CONTENT_LENGTH=0 and no STDIN record at all.
    resp = get(monkey, "/body.lua", method="POST", body=b"")
    assert resp.status == 200
    assert resp.text == "method: POST\nbytes: 0\nbody: \n"


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        disposition = f'Content-Disposition: form-data; name="{name}"'
        parts.append(f"--{boundary}\r\n{disposition}\r\n\r\n{value}\r\n".encode())
    for name, (filename, data) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


def test_upload_within_max_request_size(monkey: MonkeyStack) -> None:
    data = os.urandom(900 * 1024)  # several STDIN records, each padded by Monkey
    ctype, body = multipart({"title": "holiday"}, {"photo": ("p.bin", data)})
    assert len(body) < MAX_REQUEST_KB * 1024
    resp = get(
        monkey,
        "/body_multipart.lua",
        method="POST",
        headers=[("Content-Type", ctype)],
        body=body,
    )
    assert resp.status == 200, resp.text
    assert resp.text == (
        "field title = holiday\n"
        f"file 1 photo p.bin application/octet-stream {len(data)} {hashlib.md5(data).hexdigest()}\n"
        "truncated: nil\n"
    )


def test_body_above_max_request_size_is_refused_by_monkey(monkey: MonkeyStack) -> None:
    body = b"x" * ((MAX_REQUEST_KB + 100) * 1024)
    # Raw socket: Monkey answers before the client is done sending, then
    # closes; the rest of the send may fail.
    url = monkey.urls["tcp"]
    port = int(url.rsplit(":", 1)[1])
    head = (
        f"POST /body.lua HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(head + body)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer[:300]
    # Monkey's own page: no "Status:" line nor fcgi-lua's page, so the
    # request never reached fcgi-lua.
    assert b"\r\nStatus:" not in rest and b"fcgi-lua" not in rest


@pytest.mark.parametrize(
    ("path", "status", "marker"),
    [
        ("/status_201.lua", 201, "created\n"),
        ("/exit_404.lua", 404, "<center>fcgi-lua</center>"),
        ("/exit_503.lua", 503, "<h1>503 Service Unavailable</h1>"),
        ("/no-such-script.lua", 404, "<h1>404 Not Found</h1>"),
        ("/notes.lua.txt", 403, "<h1>403 Forbidden</h1>"),  # fcgi-lua refuses the extension
    ],
)
def test_status_codes(monkey: MonkeyStack, path: str, status: int, marker: str) -> None:
    if path == "/notes.lua.txt":
        (monkey.stack.root / "notes.lua.txt").write_text('ngx.say("source")\n')
    resp = get(monkey, path)
    assert resp.status == status
    assert marker in resp.text
    assert_single_framing(resp)


def test_script_error_is_500(monkey: MonkeyStack, logs: MonkeyLogs) -> None:
    logs.allow(r"boom from e2e")
    resp = get(monkey, "/error.lua")
    assert resp.status == 500
    assert "<h1>500 Internal Server Error</h1>" in resp.text


def test_set_cookie(monkey: MonkeyStack) -> None:
    resp = get(monkey, "/cookie_set.lua")
    assert resp.status == 200
    assert resp.header_all("set-cookie") == [
        "a=1; Path=/",
        "b=2; HttpOnly; Secure",
        "c=3; Max-Age=60; SameSite=Lax",
    ]
    assert resp.text == "set 3\n"


def test_cookie_in(monkey: MonkeyStack) -> None:
    resp = get(monkey, "/cookie_get.lua", headers=[("Cookie", "a=1; b=x%20y")])
    assert resp.status == 200
    assert resp.text == (
        "cookie_a = 1\ncookie_b = x%20y\ncookie_c = nil\ncookie_missing = nil\n"
        "http_cookie = a=1; b=x%20y\nheader = a=1; b=x%20y\n"
    )


@pytest.mark.parametrize(
    ("path", "status", "location"),
    [
        ("/redirect_302.lua", 302, "/hello.lua"),
        ("/redirect_301.lua", 301, "http://example.com/moved"),
    ],
)
def test_redirect(monkey: MonkeyStack, path: str, status: int, location: str) -> None:
    resp = get(monkey, path)
    assert resp.status == status
    assert resp.header("location") == location


def test_head_has_no_body(monkey: MonkeyStack) -> None:
    raw = raw_http(
        monkey.urls["tcp"],
        b"HEAD /mk_head.lua HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    head, _, after = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nX-Head: yes" in head and b"\r\nContent-Type: text/plain" in head
    assert b"HEAD-MUST-NOT-SHOW" not in raw
    # Monkey 1.6.9 itself appends the last-chunk of its chunked framing even
    # to a HEAD response (docs/monkey.md); fcgi-lua sends no body bytes.
    assert after in (b"", b"0\r\n\r\n")


def test_repeated_request_headers(monkey: MonkeyStack) -> None:
    resp = get(monkey, "/headers_multi.lua", headers=[("X-Multi", "a"), ("X-Multi", "b")])
    assert resp.text == "table: a|b\n"


@pytest.mark.parametrize(
    "header", [("X-Long", "v" * 127), ("X-" + "k" * 120, "v")], ids=["value", "name"]
)
def test_127_byte_param_gets_a_quick_400(monkey: MonkeyStack, header: tuple[str, str]) -> None:
    # Monkey 1.6.9 miscounts a 127-byte param (HTTP_ + 122-byte name, or a
    # 127-byte value): fcgi-lua answers 400 instead of leaving the client
    # waiting ~25 s for an empty reply.
    started = time.monotonic()
    resp = get(monkey, "/headers_in.lua", headers=[header], timeout=10)
    assert resp.status == 400
    assert "<h1>400 Bad Request</h1>" in resp.text
    assert time.monotonic() - started < 3


def test_large_response_is_intact(monkey: MonkeyStack) -> None:
    # 1 MiB: many STDOUT records, each within Monkey's 65528-byte buffer.
    resp = get(monkey, "/mk_big.lua")
    assert resp.status == 200
    assert resp.body == b"0123456789abcdef" * 65536


def test_static_files_stay_with_monkey(monkey: MonkeyStack) -> None:
    resp = get(monkey, "/static.txt")
    assert resp.status == 200
    assert resp.text == "served by Monkey\n"
    assert resp.header("status") is None  # not a FastCGI response


def test_root_leads_to_the_index_script(monkey: MonkeyStack) -> None:
    # Monkey's Indexfile serves index files statically, so "/" cannot run
    # index.lua; examples/index.html (shipped for this) sends browsers on.
    resp = get(monkey, "/")
    assert resp.status == 200
    assert '<meta http-equiv="refresh" content="0; url=/index.lua">' in resp.text
    assert "ngx.say" not in resp.text  # never a script's source
    assert get(monkey, "/index.lua").text == "the index script\n"


# -- load: zero failures ---------------------------------------------------------


def test_100_sequential_requests_on_one_keepalive_connection(monkey: MonkeyStack) -> None:
    # TCP only: over a Unix socket Monkey 1.6 may take the next request on a
    # keep-alive connection before it has seen fcgi-lua's EOF, and then
    # drops (or crashes); over TCP fcgi-lua's last record and FIN arrive
    # together (quirks.send_with_fin), which this test holds to.
    port = int(monkey.urls["tcp"].rsplit(":", 1)[1])
    failures = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(100):
            conn.request("GET", f"/vars.lua?n={i}")
            try:
                resp = conn.getresponse()
            except OSError as exc:
                raise AssertionError(f"request {i}: {exc!r}") from exc
            body = resp.read().decode()
            if resp.status != 200 or f"args: n={i}\n" not in body:
                failures.append((i, resp.status, body))
            # Monkey opens one FastCGI connection per request: one client
            # connection all along proves Monkey never closed it.
            assert resp.will_close is False
    finally:
        conn.close()
    assert failures == []


def test_100_sequential_requests(monkey: MonkeyStack) -> None:
    failures = []
    for i in range(100):
        resp = get(monkey, f"/vars.lua?n={i}")
        if resp.status != 200 or f"args: n={i}\n" not in resp.text:
            failures.append((i, resp.status, resp.text))
    assert failures == []


def test_50_concurrent_requests(monkey: MonkeyStack) -> None:
    def one(i: int) -> tuple[int, int, str]:
        resp = get(monkey, f"/mk_sleep_echo.lua?n={i}", timeout=20)
        return i, resp.status, resp.text

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    elapsed = time.monotonic() - started
    failures = [r for r in results if r[1] != 200 or r[2] != f"n={r[0]}\n"]
    assert failures == []
    # 50 sleeps of 0.1 s overlap in fcgi-lua: far below 50 x 0.1 s.
    assert elapsed < 2.5, elapsed


def test_clients_closing_right_after_large_responses(monkey: MonkeyStack) -> None:
    # A client that closes as soon as it has the whole response: Monkey
    # 1.6.9 crashes (use after free in fcgi_exit) if that close is seen
    # before fcgi-lua's EOF; fcgi-lua's last record and FIN travel together.
    for i in range(30):
        resp = get(monkey, f"/mk_big.lua?n={i}")
        assert resp.status == 200 and len(resp.body) == 1024 * 1024
    assert not monkey.stack.dead_service()


# -- the commented ServerPath alternative -------------------------------------


def test_server_path_alternative_serves(monkey: MonkeyStack) -> None:
    """fastcgi.conf's ServerPath line, switched on, makes a working config.

    Only a smoke test: over a Unix socket Monkey 1.6.9 can see the client's
    next request or close before fcgi-lua's EOF, and then drops the
    connection or crashes (docs/monkey.md), so the client here waits a
    moment before it closes.
    """
    stack = monkey.stack
    port = free_port()
    conf = render_monkey_conf(
        stack.tmp / "conf-unix",
        port=port,
        root=stack.root,
        backend=f"unix:{stack.unix_socket}",
        tmp=stack.tmp,
    )
    service = _start_monkey(stack, "monkey-unix", conf, monkey.plugins, port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /vars.lua?via=unix HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while not answer.endswith(b"\r\n0\r\n\r\n"):
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
            time.sleep(0.2)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"request_uri: /vars.lua?via=unix\n" in answer
        log = service.log.read_text("utf-8", "replace")
        assert "fastcgi" in log and not MONKEY_PROBLEM.search(log), log
    finally:
        stack.services.remove(service)
        service.proc.terminate()
        service.proc.wait(15)
