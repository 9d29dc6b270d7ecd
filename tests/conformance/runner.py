"""Run lua-nginx-module's own Test::Nginx blocks against OpenResty (the
oracle) and against fcgi-lua behind the same nginx; see README.md.

    LUA_NGINX_MODULE_T=/tmp/lua-nginx-module/t \\
        python3 -m tests.conformance.runner [-j N] [FILE.t ...]

Each selected block gets its own nginx (Debian's, with lua-nginx-module
loaded) with two servers: the block's config verbatim, and the same
location turned into ``fastcgi_pass`` to its own ``fcgi-lua serve`` (the
handler's Lua written to a script file; the block's shared dicts, package
path and init code as fcgi-lua options), so no state leaks between blocks,
as Test::Nginx restarts nginx for each.  Both get the block's request; a
block counts when OpenResty's answer passes the block's checks (status,
body exact or regex, listed headers), and fcgi-lua passes it when its
answer passes the same checks.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import grp
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.net import free_port

from .cases import Case, Exclusion, select
from .tnginx import Block, parse_file, perl_regex

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENV_VAR = "LUA_NGINX_MODULE_T"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_MODULES = Path("/usr/share/nginx/modules")
SHIPPED_PARAMS = REPO / "nginx" / "fcgi_lua_params"
SCRIPT_LINE = "fastcgi_param  SCRIPT_FILENAME    $document_root$fastcgi_script_name;"


@dataclass
class Response:
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw_headers: str = ""
    body: str = ""
    error: str = ""

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None


@dataclass
class Result:
    file: str
    number: int
    title: str
    excluded: Exclusion | None = None
    oracle: list[str] | None = None  # problems; [] = passed
    fcgi: list[str] | None = None
    oracle_body: str = ""
    fcgi_body: str = ""

    @property
    def name(self) -> str:
        return f"{self.file} {self.title}"

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "number": self.number,
            "title": self.title,
            "excluded": None if self.excluded is None else vars(self.excluded),
            "oracle": self.oracle,
            "fcgi": self.fcgi,
        }


def t_dir() -> Path | None:
    value = os.environ.get(ENV_VAR)
    return Path(value) if value else None


def load(directory: Path, names: list[str] | None = None) -> list[tuple[Block, Case | Exclusion]]:
    files = sorted(directory.glob("*.t"))
    if names:
        files = [f for f in files if f.name in names or f.stem in names]
    out: list[tuple[Block, Case | Exclusion]] = []
    for path in files:
        test_file = parse_file(path)
        for block in test_file.blocks:
            out.append((block, select(block, test_file)))
    return out


# -- checking --------------------------------------------------------------


def check(case: Case, resp: Response) -> list[str]:
    """The block's checks on one answer: the problems (empty: passed)."""
    expect = case.expect
    problems: list[str] = []
    if resp.error and resp.status is None:
        return [f"no response: {resp.error}"]
    if expect.status is not None and resp.status != expect.status:
        problems.append(f"status {resp.status} (want {expect.status})")
    if expect.status_like is not None and not re.search(expect.status_like, str(resp.status)):
        problems.append(f"status {resp.status} (want like {expect.status_like})")
    if expect.body is not None and resp.body != expect.body:
        problems.append(f"body {_short(resp.body)} (want {_short(expect.body)})")
    for pattern, want in ((expect.body_like, True), (expect.body_unlike, False)):
        if pattern is None:
            continue
        try:
            found = perl_regex(pattern, dotall=True).search(resp.body) is not None
        except re.error as exc:
            problems.append(f"regex not understood: {exc}")
            continue
        if found != want:
            problems.append(f"body {_short(resp.body)} ({'un' if want else ''}like /{pattern}/)")
    for name, value in expect.headers.items():
        got = resp.header(name)
        if value is None:
            if got is not None:
                problems.append(f"header {name}: {got!r} (want absent)")
        elif (got or "") != value:
            problems.append(f"header {name}: {got!r} (want {value!r})")
    for name, value in expect.headers_like.items():
        got = resp.header(name) or ""
        if not re.fullmatch(value, got):
            problems.append(f"header {name}: {got!r} (want like {value!r})")
    for pattern, want in ((expect.raw_headers_like, True), (expect.raw_headers_unlike, False)):
        if pattern is not None:
            found = perl_regex(pattern, dotall=True).search(resp.raw_headers) is not None
            if found != want:
                problems.append(f"raw headers {'un' if want else ''}like /{pattern}/")
    if resp.error and not problems:
        problems.append(resp.error)
    return problems


def _short(text: str, limit: int = 160) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# -- HTTP ------------------------------------------------------------------


def http(port: int, case: Case) -> Response:
    req = case.request
    head = f"{req.method} {req.uri} {req.version}\r\n"
    names = {k.lower() for k, _ in req.headers}
    if "host" not in names:
        head += "Host: localhost\r\n"
    if "connection" not in names:
        head += "Connection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in req.headers) + "\r\n"
    raw = b""
    error = ""
    deadline = time.monotonic() + case.timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=case.timeout) as sock:
            sock.sendall((head + req.body).encode("latin-1"))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                raw += chunk
    except TimeoutError:
        error = f"timeout after {case.timeout}s"
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return parse_response(raw.decode("latin-1"), req.method == "HEAD", error)


def parse_response(raw: str, head: bool, error: str) -> Response:
    resp = Response(error=error)
    header_text, sep, rest = raw.partition("\r\n\r\n")
    if not sep:
        resp.error = error or "incomplete response head"
        return resp
    lines = header_text.split("\r\n")
    match = re.match(r"HTTP/\d\.\d (\d{3})", lines[0])
    if not match:
        resp.error = f"bad status line {lines[0]!r}"
        return resp
    resp.status = int(match.group(1))
    resp.raw_headers = header_text + "\r\n"
    for line in lines[1:]:
        key, _, value = line.partition(":")
        resp.headers.append((key.strip(), value.strip()))
    if head:
        return resp
    if (resp.header("Transfer-Encoding") or "").lower() == "chunked":
        body, pos = [], 0
        while True:
            end = rest.find("\r\n", pos)
            if end < 0:
                resp.error = resp.error or "truncated chunked body"
                break
            size = int(rest[pos:end].split(";")[0] or "0", 16)
            if size == 0:
                break
            body.append(rest[end + 2 : end + 2 + size])
            pos = end + 2 + size + 2
        resp.body = "".join(body)
    else:
        length = resp.header("Content-Length")
        resp.body = rest[: int(length)] if length and length.isdigit() else rest
    return resp


# -- processes -------------------------------------------------------------


def _wait(check_ready: object, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {_tail(log)}")
        if check_ready():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not start: {_tail(log)}")


def _tail(path: Path) -> str:
    return path.read_text("latin-1")[-600:] if path.exists() else ""


def _connectable(address: str | tuple[str, int]) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(address)
        except OSError:
            return False
    return True


def _stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _user_line() -> str:
    if os.geteuid() != 0:
        return ""
    return f"user {getpass.getuser()} {grp.getgrgid(os.getegid()).gr_name};"


def run_case(
    case: Case, workdir: Path, index: int, *, always: bool = False
) -> tuple[list[str], list[str], str, str]:
    """Run one block both ways: (oracle problems, fcgi-lua problems, oracle
    body, fcgi-lua body); fcgi-lua only when the oracle passes, or ``always``."""
    base = workdir / f"{index:04d}"
    html, logs, root = base / "html", base / "logs", base / "fcgi-root"
    for directory in (html, logs, root, base / "tmp", base / "conf"):
        directory.mkdir(parents=True)
    for name, content in case.user_files.items():
        (html / name).parent.mkdir(parents=True, exist_ok=True)
        (html / name).write_text(content, "latin-1")
    script = root / "handler.lua"
    script.write_text(case.script, "latin-1")
    sock = Path(tempfile.gettempdir()) / f"cf-{os.getpid()}-{index}.sock"
    sock.unlink(missing_ok=True)

    def expand(text: str) -> str:
        return text.replace("$TEST_NGINX_HTML_DIR", str(html))

    # fcgi-lua
    argv = [sys.executable, "-m", "fcgi_lua", "serve", "--listen", f"unix:{sock}"]
    argv += ["--root", str(root), "--workers", "1", "-o", "request_timeout=30"]
    argv += ["-o", f"shared_dict_path={base / 'shdict'}"]
    argv += ["-o", f"client_body_temp_path={base / 'tmp'}"]
    if case.shared_dicts:
        zones = ",".join(f'{k}="{v}"' for k, v in case.shared_dicts.items())
        argv += ["-o", f"shared_dicts={{{zones}}}"]
    for key, value in case.options.items():
        value = expand(value)  # $prefix: fcgi-lua's own, its cwd (base)
        argv += ["-o", f"{key}={value if value.isdigit() else json.dumps(value)}"]
    for key, code in (
        ("init_script", case.init_script),
        ("init_worker_script", case.init_worker_script),
    ):
        if code:
            path = base / f"{key}.lua"
            path.write_text(code, "latin-1")
            argv += ["-o", f"{key}={json.dumps(str(path))}"]
    fcgi_log = logs / "fcgi-lua.log"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with fcgi_log.open("wb") as out:
        fcgi = subprocess.Popen(
            argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=base, env=env,
            start_new_session=True,
        )  # fmt: skip
    # nginx
    oracle_port, fcgi_port = free_port(), free_port()
    params = SHIPPED_PARAMS.read_text()
    if SCRIPT_LINE not in params:
        raise RuntimeError(f"{SHIPPED_PARAMS} changed: no line {SCRIPT_LINE!r}")
    params = params.replace(SCRIPT_LINE, f"fastcgi_param  SCRIPT_FILENAME    {script};")
    (base / "conf" / "fcgi_lua_params").write_text(params)
    location = (
        case.fcgi_location.replace("{params}", str(base / "conf" / "fcgi_lua_params"))
        .replace("{socket}", str(sock))
    )  # fmt: skip
    tmp = base / "tmp"
    conf = f"""
load_module {NGINX_MODULES}/ndk_http_module.so;
load_module {NGINX_MODULES}/ngx_http_lua_module.so;
{_user_line()}
worker_processes 1;
daemon off;
master_process off;
pid {logs}/nginx.pid;
error_log {logs}/error.log info;
{expand(case.main_config)}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    fastcgi_temp_path {tmp}/fastcgi;
    proxy_temp_path {tmp}/proxy;
    scgi_temp_path {tmp}/scgi;
    uwsgi_temp_path {tmp}/uwsgi;
    default_type text/plain;
    keepalive_timeout 68000ms;
{expand(case.http_config)}
    server {{
        listen 127.0.0.1:{oracle_port};
        server_name 'localhost';
        client_max_body_size 30M;
{expand(case.config)}
        location / {{ root {html}; index index.html index.htm; }}
    }}
    server {{
        listen 127.0.0.1:{fcgi_port};
        server_name 'localhost';
        client_max_body_size 30M;
{location}
        location / {{ root {html}; index index.html index.htm; }}
    }}
}}
"""
    conf_path = base / "conf" / "nginx.conf"
    conf_path.write_text(conf, "latin-1")
    nginx_log = logs / "nginx.out"
    with nginx_log.open("wb") as out:
        nginx = subprocess.Popen(
            [NGINX, "-p", f"{base}/", "-c", str(conf_path)],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        try:
            _wait(lambda: _connectable(("127.0.0.1", fcgi_port)), nginx, "nginx", nginx_log)
        except RuntimeError as exc:
            problem = f"nginx: {exc}"
            return [problem], [problem], "", ""
        oracle_resp = http(oracle_port, case)
        oracle = check(case, oracle_resp)
        if oracle and not always:
            return oracle, ["not run: the oracle fails"], oracle_resp.body, ""
        try:
            _wait(lambda: _connectable(str(sock)), fcgi, "fcgi-lua", fcgi_log)
        except RuntimeError as exc:
            return oracle, [f"fcgi-lua: {exc}"], oracle_resp.body, ""
        resp = http(fcgi_port, case)
        return oracle, check(case, resp), oracle_resp.body, resp.body
    finally:
        _stop(nginx, signal.SIGQUIT)
        _stop(fcgi, signal.SIGTERM)
        sock.unlink(missing_ok=True)


def run(
    directory: Path,
    names: list[str] | None = None,
    jobs: int = 2,
    keep: Path | None = None,
    progress: bool = False,
    always: bool = False,
) -> list[Result]:
    selected = load(directory, names)
    results: list[Result] = []
    todo: list[tuple[Result, Case]] = []
    for block, outcome in selected:
        result = Result(block.file, block.number, block.title)
        results.append(result)
        if isinstance(outcome, Exclusion):
            result.excluded = outcome
        else:
            todo.append((result, outcome))
    workdir = Path(tempfile.mkdtemp(prefix="conformance-", dir=keep))
    done = 0

    def one(item: tuple[int, tuple[Result, Case]]) -> None:
        nonlocal done
        index, (result, case) = item
        try:
            result.oracle, result.fcgi, result.oracle_body, result.fcgi_body = run_case(
                case, workdir, index, always=always
            )
        except Exception as exc:  # reported as the block's failure
            result.oracle = [f"runner error: {exc!r}"]
        done += 1
        if progress and done % 50 == 0:
            print(f"  {done}/{len(todo)}", file=sys.stderr, flush=True)

    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, enumerate(todo)))
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


# -- report ----------------------------------------------------------------


def cause(problems: list[str]) -> str:
    first = problems[0]
    return re.sub(r"'.*", "", first.split(" (")[0])[:60]


def report(results: list[Result], *, verbose: bool = False) -> str:
    excluded = [r for r in results if r.excluded is not None]
    ran = [r for r in results if r.excluded is None]
    oracle_ok = [r for r in ran if r.oracle == []]
    fcgi_ok = [r for r in oracle_ok if r.fcgi == []]
    lines = [
        f"blocks read:            {len(results)}",
        f"excluded:               {len(excluded)}"
        f" (by design {sum(r.excluded.kind == 'design' for r in excluded)},"  # type: ignore[union-attr]
        f" not self-contained {sum(r.excluded.kind == 'scope' for r in excluded)},"  # type: ignore[union-attr]
        f" marked SKIP {sum(r.excluded.kind == 'skip' for r in excluded)})",  # type: ignore[union-attr]
        f"selected:               {len(ran)}",
        f"OpenResty passes:       {len(oracle_ok)}",
        f"fcgi-lua passes:        {len(fcgi_ok)}"
        + (f" ({100 * len(fcgi_ok) / len(oracle_ok):.1f} %)" if oracle_ok else ""),
    ]
    reasons = Counter(f"{r.excluded.kind}: {r.excluded.reason}" for r in excluded)  # type: ignore[union-attr]
    lines.append("\nexclusions by reason:")
    lines += [f"  {n:5d}  {reason}" for reason, n in reasons.most_common()]
    by_file: dict[str, list[Result]] = defaultdict(list)
    for r in oracle_ok:
        if r.fcgi:
            by_file[r.file].append(r)
    lines.append("\nfcgi-lua failures (OpenResty passes), by file:")
    for file in sorted(by_file):
        lines.append(f"  {file}: {len(by_file[file])}")
        for r in by_file[file]:
            lines.append(f"      {r.title[:76]}")
            lines.append(f"          {'; '.join(r.fcgi or [])[:300]}")
    if verbose:
        lines.append("\nOpenResty failures (not counted):")
        for r in ran:
            if r.oracle:
                lines.append(f"  {r.name[:80]}: {'; '.join(r.oracle)[:200]}")
    return "\n".join(lines)


def design_exclusions(results: list[Result]) -> str:
    """The blocks excluded by design, by reason, as a Markdown list."""
    by_reason: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r.excluded is not None and r.excluded.kind == "design":
            by_reason[r.excluded.reason].append(r)
    lines: list[str] = []
    for reason in sorted(by_reason, key=lambda k: -len(by_reason[k])):
        lines.append(f"- **{reason}** ({len(by_reason[reason])}):")
        lines += [f"  - `{r.file}` {r.title}" for r in by_reason[reason]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="only these .t files (001-set.t or 001-set)")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--t-dir", type=Path, default=t_dir(), help=f"default: ${ENV_VAR}")
    parser.add_argument("--json", type=Path, help="write every block's result here")
    parser.add_argument("--keep", type=Path, help="keep each block's nginx/fcgi-lua files here")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "--bodies",
        action="store_true",
        help="run fcgi-lua even where OpenResty fails; print both bodies of every block",
    )
    parser.add_argument(
        "--design-md", type=Path, help="write the by-design exclusions (Markdown) here"
    )
    args = parser.parse_args(argv)
    if args.t_dir is None:
        parser.error(f"set {ENV_VAR}=/path/to/lua-nginx-module/t or pass --t-dir")
    started = time.monotonic()
    results = run(args.t_dir, args.files, args.jobs, args.keep, progress=True, always=args.bodies)
    print(report(results, verbose=args.verbose))
    if args.bodies:
        for r in results:
            if r.excluded is None:
                print(f"\n== {r.name}\n-- OpenResty:\n{r.oracle_body}-- fcgi-lua:\n{r.fcgi_body}")
    print(f"\n{time.monotonic() - started:.0f} s")
    if args.design_md:
        args.design_md.write_text(design_exclusions(results) + "\n")
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
