"""Command line: ``fcgi-lua serve`` and ``fcgi-lua run``.

Parses flags into the one Config (TOML file first, flags override), sets up
logging, and hands over: to one serving process (``fcgi_lua.worker``), to
the prefork master (``fcgi_lua.workers``), or runs one script in-process.
It must never serve requests itself nor handle a worker's signals.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from typing import Any

from fcgi_lua import __version__, errorlog, metrics
from fcgi_lua.config import Config, ConfigError, load
from fcgi_lua.listeners import bind_all, listen_error_text
from fcgi_lua.request import Request
from fcgi_lua.worker import make_engine, run_loop, serve, worker_main

log = logging.getLogger("fcgi_lua")

LOG_FORMAT = "%(asctime)s [%(levelname)s] %(process)d %(name)s: %(message)s"


def setup_logging(config: Config) -> None:
    handler = errorlog.open_error_log(
        config.error_log, LOG_FORMAT, config.log_max_line, config.log_repeat_limit
    )
    log.handlers[:] = [handler]
    log.setLevel(config.log_level.upper())
    log.propagate = False


def cmd_serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = dict(args.option)
    if args.listen:
        overrides["listen"] = args.listen
    if args.root is not None:
        overrides["root"] = args.root
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.debug:
        overrides["debug"] = True
    try:
        config = load(args.config, overrides)
    except ConfigError as exc:
        print(f"fcgi-lua: {exc}", file=sys.stderr)
        return 2
    setup_logging(config)
    if config.status_path:
        # before any fork: every worker writes its metrics there
        try:
            metrics.setup(config.metrics_dir)
        except OSError as exc:
            log.error("cannot use metrics_dir: %s", exc)
            return 1
    try:
        store = _prepare_shared_dicts(config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    try:
        return _serve_processes(config, args, overrides)
    finally:
        metrics.teardown()
        if store:
            from fcgi_lua import shdict

            shdict.remove(store)


def _prepare_shared_dicts(config: Config) -> str | None:
    """Empty ngx.shared zones before any worker starts (as nginx's are):
    the store's path, or None without zones."""
    if not config.shared_dicts:
        return None
    from fcgi_lua import shdict

    path = shdict.store_path(config.shared_dict_path, config.listen)
    try:
        shdict.prepare(path, config.shared_dicts)
    except shdict.SharedDictError as exc:
        raise ConfigError(str(exc)) from exc
    return path


def _serve_processes(config: Config, args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    if config.workers == 1:
        return run_loop(lambda: serve(config))
    from fcgi_lua.workers import Master, close_listeners

    try:
        sockets = bind_all(config)
    except OSError as exc:
        log.error("%s", listen_error_text(exc))
        return 1
    master = Master(config, lambda: load(args.config, overrides), worker_main)
    try:
        return master.run(sockets)
    finally:
        close_listeners(sockets)


# -- run -----------------------------------------------------------------------


class _StdoutSink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.write_nowait(data)

    def write_nowait(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        self.chunks.append(data)

    def stderr(self, data: bytes) -> None:
        sys.stderr.buffer.write(data)


def cgi_params(
    script: str,
    root: str,
    method: str,
    query: str,
    headers: Sequence[str],
    body: bytes | None,
) -> list[tuple[bytes, bytes]]:
    """The params nginx's fastcgi_params would send for such a request."""
    script_name = "/" + os.path.relpath(script, root)
    uri = script_name + ("?" + query if query else "")
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": f"fcgi-lua/{__version__}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "localhost",
        "SERVER_ADDR": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "0",
        "REQUEST_SCHEME": "http",
        "REQUEST_METHOD": method.upper(),
        "QUERY_STRING": query,
        "REQUEST_URI": uri,
        "DOCUMENT_URI": script_name,
        "SCRIPT_NAME": script_name,
        "SCRIPT_FILENAME": script,
        "DOCUMENT_ROOT": root,
        "CONTENT_TYPE": "",
        "CONTENT_LENGTH": "" if body is None else str(len(body)),
    }
    pairs = [(k.encode(), v.encode()) for k, v in params.items()]
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep:
            raise ConfigError(f"--header {header!r}: expected NAME: VALUE")
        key = "HTTP_" + name.strip().upper().replace("-", "_")
        if key == "HTTP_CONTENT_TYPE":
            pairs = [p for p in pairs if p[0] != b"CONTENT_TYPE"]
            pairs.append((b"CONTENT_TYPE", value.strip().encode()))
        pairs.append((key.encode(), value.strip().encode()))
    if body is None:
        pairs = [p for p in pairs if p[0] != b"CONTENT_LENGTH"]
    return pairs


async def _run_once(config: Config, request: Request, body: bytes | None) -> int:
    from fcgi_lua.lua import LuaInitError

    try:
        engine = make_engine(config)
    except LuaInitError as exc:
        log.error("%s", exc)
        request.close()
        return 1
    sink = _StdoutSink()
    if body is not None:
        request.feed_body(body)
        request.end_body()
    try:
        await engine.run(request, sink)
    finally:
        request.close()  # its temp files (a spooled --body, uploads)
    head = b"".join(sink.chunks)[:16]
    return 1 if head.startswith(b"Status: 5") else 0


def cmd_run(args: argparse.Namespace) -> int:
    script = os.path.abspath(args.script)
    if not os.path.isfile(script):
        print(f"fcgi-lua: no such script: {args.script}", file=sys.stderr)
        return 2
    root = os.path.abspath(args.root) if args.root else os.path.dirname(script)
    overrides: dict[str, Any] = dict(args.option)
    overrides["root"] = root
    if args.debug:
        overrides["debug"] = True
    try:
        # One run is one process, whatever the file says (ngx.worker.count()).
        config = load(args.config, overrides).replace(workers=1)
        body = None
        if args.body is not None:
            with open(args.body, "rb") as handle:
                body = handle.read()
        params = cgi_params(script, root, args.method, args.query, args.header, body)
    except (ConfigError, OSError) as exc:
        print(f"fcgi-lua: {exc}", file=sys.stderr)
        return 2
    setup_logging(config)
    request = Request(
        params,
        script,
        max_body_size=max(config.client_max_body_size, len(body or b"")),
        body_buffer_size=config.client_body_buffer_size,
        body_temp_dir=config.client_body_temp_path or None,
    )
    if not config.shared_dicts:
        return run_loop(lambda: _run_once(config, request, body))
    # One run, one private store (a server may use the default one).
    with tempfile.TemporaryDirectory(prefix="fcgi-lua-run-") as tmp:
        config = config.replace(shared_dict_path=os.path.join(tmp, "shdict"))
        try:
            _prepare_shared_dicts(config)
        except ConfigError as exc:
            print(f"fcgi-lua: {exc}", file=sys.stderr)
            return 2
        return run_loop(lambda: _run_once(config, request, body))


# -- parser ----------------------------------------------------------------------


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE in TOML syntax (bare words are strings)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcgi-lua",
        description="A FastCGI responder that runs Lua scripts OpenResty-style.",
    )
    # as pip's: which copy runs matters when several checkouts are installed
    here = os.path.dirname(os.path.abspath(__file__))
    python = ".".join(map(str, sys.version_info[:2]))
    version = f"fcgi-lua {__version__} from {here} (python {python})"
    parser.add_argument("--version", action="version", version=version)
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML config file (flags override it)")
    common.add_argument("--debug", action="store_true", help="send Lua tracebacks in 500 bodies")
    common.add_argument(
        "-o",
        "--option",
        metavar="KEY=VALUE",
        type=_option,
        action="append",
        default=[],
        help="set any config key (see docs/configuration.md), e.g. -o recompile=never",
    )

    serve = sub.add_parser("serve", parents=[common], help="serve FastCGI requests")
    serve.add_argument(
        "--listen",
        metavar="ADDR",
        action="append",
        help="unix:/path/to.sock or host:port; repeat for several (default 127.0.0.1:9000)",
    )
    serve.add_argument("--root", metavar="DIR", help="document root scripts are confined to")
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes (default: the CPUs this process may run on); with N > 1 a "
        "master binds once, forks N workers and replaces any that die or hang; "
        "1 is a single process with no master",
    )
    serve.set_defaults(func=cmd_serve)

    run = sub.add_parser("run", parents=[common], help="run one script once and print the response")
    run.add_argument("script", help="the Lua script to run")
    run.add_argument("--root", metavar="DIR", help="document root (default: the script's folder)")
    run.add_argument("--method", default="GET")
    run.add_argument("--query", default="", metavar="Q", help="query string, e.g. 'a=1&b=2'")
    run.add_argument(
        "--header", action="append", default=[], metavar="K:V", help="request header; repeatable"
    )
    run.add_argument("--body", metavar="FILE", help="request body read from FILE")
    run.set_defaults(func=cmd_run)
    return parser


def _use_system_malloc() -> None:
    """``serve`` from the command line: run on the C library's malloc.

    Python's own small-object allocator keeps 1 MiB arenas until every
    object in them is gone, so a worker that once held 10,000 requests
    stayed about 25 MB above its baseline forever (a few survivors pin each
    arena).  With glibc's malloc the collection and ``malloc_trim`` after a
    burst give it all back (docs/operations.md, "Memory after a burst"),
    for about 6 % of hello's throughput.  PYTHONMALLOC is only read at
    start-up, so the process replaces itself (same pid: supervisord and
    systemd see nothing) unless PYTHONMALLOC is already set, which is also
    how to opt out (PYTHONMALLOC=pymalloc).
    """
    if os.environ.get("PYTHONMALLOC"):
        return
    env = dict(os.environ, PYTHONMALLOC="malloc")
    argv = [sys.executable, "-m", "fcgi_lua", *sys.argv[1:]]
    try:
        os.execve(sys.executable, argv, env)
    except OSError as exc:  # keep serving on pymalloc rather than not at all
        log.warning("could not restart with PYTHONMALLOC=malloc (%s); using pymalloc", exc)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    if func is cmd_serve and argv is None:  # the real command line, not a caller
        _use_system_malloc()
    return func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
