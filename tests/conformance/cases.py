"""Which Test::Nginx blocks the conformance runner takes, and how each is
turned into two nginx locations: the block's own (OpenResty runs it, the
oracle) and a FastCGI one (fcgi-lua runs the same Lua as a script).

A block is taken when it is self-contained: one ``location`` (besides
Test::Nginx's implicit root location), one ``content_by_lua*`` /
``rewrite_by_lua*`` / ``access_by_lua*`` handler in it, no other module's
handler (echo, proxy...), no mock server, one request.  Everything else is
excluded with a reason; the reasons of kind ``design`` are what cannot
exist over FastCGI at all (docs/conformance.md lists them by name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .nginxconf import ConfigError, Directive, location_matches, parse
from .tnginx import Block, TestFile

NGINX_VERSION = (1, 22, 1)

HANDLERS = (
    "content_by_lua",
    "content_by_lua_block",
    "content_by_lua_file",
    "rewrite_by_lua",
    "rewrite_by_lua_block",
    "rewrite_by_lua_file",
    "access_by_lua",
    "access_by_lua_block",
    "access_by_lua_file",
)
# Lua handlers of phases fcgi-lua does not have: a FastCGI responder
# produces the response, nothing runs before nginx's own phases or after.
OTHER_PHASES = re.compile(
    r"^(set_by_lua|header_filter_by_lua|body_filter_by_lua|log_by_lua|balancer_by_lua"
    r"|ssl_\w*by_lua|server_rewrite_by_lua|exit_worker_by_lua)"
)
# Location directives that only shape nginx's side of the exchange: kept in
# both locations.
COPIED = {
    "client_body_buffer_size",
    "client_max_body_size",
    "client_body_in_file_only",
    "client_body_in_single_buffer",
    "chunked_transfer_encoding",
    "keepalive_timeout",
    "client_body_timeout",
    "send_timeout",
    "postpone_output",
    "lingering_close",
}
# Location directives with no counterpart needed over FastCGI (fcgi-lua's
# behaviour is the directive's default or always on).
IGNORED = {
    "lua_code_cache",
    "default_type",
    "lua_check_client_abort",
    "lua_socket_log_errors",
    "lua_socket_connect_timeout",
    "lua_socket_send_timeout",
    "lua_socket_read_timeout",
    "lua_socket_buffer_size",
    "lua_socket_pool_size",
    "lua_socket_keepalive_timeout",
    "access_log",
    "error_log",
    "log_subrequest",
    "root",
}
# Request sections the runner does not model (several connections, raw
# bytes, a client that hangs up).
UNSUPPORTED_SECTIONS = {
    "raw_request": "raw request bytes",
    "pipelined_requests": "pipelined requests",
    "abort": "client aborts the request",
    "ignore_response": "response ignored (timeout/abort test)",
    "ignore_response_body": "response ignored",
    "tcp_listen": "mock TCP server",
    "tcp_reply": "mock TCP server",
    "udp_listen": "mock UDP server",
    "udp_reply": "mock UDP server",
    "must_die": "nginx must fail to start",
    "reload_fails": "nginx reload",
    "shutdown": "server shutdown",
    "stream_server_config": "stream module",
    "server_config": "server-level config",
    "post_main_config": "post main config",
    "http": "raw http config",
    "http2": "HTTP/2",
    "use_http2": "HTTP/2",
    "response": "raw response",
    "skip_eval": "skip_eval condition",
    "skip_openssl": "openssl-specific",
    "request_body_unlike": "request body checks",
}


_ISOLATION = "request isolation: a request cannot change the shared {} table for the worker"
_CAPTURES = "ngx.var[N]: the front server's regex location captures do not travel over FastCGI"
_LENGTH = "Content-Length: fcgi-lua gives a whole response one, where OpenResty streams"
# Blocks that check behaviour fcgi-lua differs from on purpose, by name
# (docs/sandbox.md "Isolation", docs/lua-api.md on ngx.var and the
# response's Content-Length).
DESIGN_BLOCKS = {
    ("015-status.t", 9): _ISOLATION.format("ngx"),
    ("091-coroutine.t", 5): _ISOLATION.format("coroutine"),
    ("014-bugs.t", 19): _CAPTURES,
    ("014-bugs.t", 22): _CAPTURES,
    ("002-content.t", 32): _LENGTH,
    ("016-resp-header.t", 5): _LENGTH,
}


@dataclass
class Exclusion:
    kind: str  # "design", "scope" (not self-contained), "skip" (marked SKIP)
    reason: str


@dataclass
class Request:
    method: str
    uri: str
    version: str
    headers: list[tuple[str, str]]
    body: str


@dataclass
class Expect:
    status: int | None = 200
    status_like: str | None = None
    body: str | None = None
    body_like: str | None = None  # a Perl/Python regex (search, DOTALL)
    body_unlike: str | None = None
    headers: dict[str, str | None] = field(default_factory=dict)  # None: absent
    headers_like: dict[str, str] = field(default_factory=dict)
    raw_headers_like: str | None = None
    raw_headers_unlike: str | None = None


@dataclass
class Case:
    block: Block
    request: Request
    expect: Expect
    timeout: float
    main_config: str
    http_config: str
    config: str  # the block's server config, verbatim (the oracle's)
    fcgi_location: str  # the translated location; {params} / {socket} / {script} filled later
    script: str  # the handler's Lua, the fcgi-lua script
    shared_dicts: dict[str, str]
    options: dict[str, str]  # other fcgi-lua -o options
    init_script: str = ""
    init_worker_script: str = ""
    user_files: dict[str, str] = field(default_factory=dict)


def select(block: Block, test_file: TestFile) -> Case | Exclusion:
    if block.has("SKIP"):
        return Exclusion("skip", "marked --- SKIP")
    named = DESIGN_BLOCKS.get((block.file, block.number))
    if named:
        return Exclusion("design", named)
    if block.problem:
        return Exclusion("scope", block.problem)
    if test_file.preprocessor_problem:
        return Exclusion("scope", test_file.preprocessor_problem)
    skip = _skip_nginx(block)
    if skip:
        return Exclusion("skip", skip)
    for section, why in UNSUPPORTED_SECTIONS.items():
        if block.has(section):
            return Exclusion("scope", f"--- {section}: {why}")
    texts = " ".join(v.text or "" for v in block.sections.values())
    design = _by_design(texts)
    if design:
        return Exclusion("design", design)
    checked = " ".join(
        (v.text or v.regex or "") for k, v in block.sections.items() if k in _CHECKED
    )
    if _CHUNK_NAME.search(checked):
        return Exclusion(
            "design",
            "chunk names: a script's code is named by its file, not content_by_lua(nginx.conf:N)",
        )
    env = sorted(set(re.findall(r"\$(TEST_NGINX_\w+)", texts)) - {"TEST_NGINX_HTML_DIR"})
    if env:
        return Exclusion("scope", f"external service or the test server itself (${env[0]})")
    config_text = block.text("config")
    if config_text is None:
        return Exclusion("scope", "no --- config")
    request_value = block.sections.get("request")
    if request_value is None:
        return Exclusion("scope", "no --- request")
    if request_value.text is None:
        return Exclusion("scope", "several requests")
    more = block.sections.get("more_headers")
    if more is not None and more.text is None:
        return Exclusion("scope", "several requests")
    try:
        request = _request(request_value.text, (more.text or "") if more else "")
    except ValueError as exc:
        return Exclusion("scope", str(exc))
    try:
        config = parse(config_text)
        http_config = parse(block.text("http_config") or "")
        main_config = parse(block.text("main_config") or "")
    except ConfigError as exc:
        return Exclusion("scope", f"config not understood: {exc}")
    for directive in _walk(config + http_config):
        if OTHER_PHASES.match(directive.name):
            return Exclusion("design", f"{directive.name}: a phase fcgi-lua does not have")
        if directive.name.startswith("echo"):
            return Exclusion("scope", "echo module")
    locations = [d for d in config if d.name == "location"]
    server_level = [d for d in config if d.name != "location"]
    # the innermost lua_need_request_body wins (location, server, http)
    need_body = False
    for level in (http_config, config, *(loc.block or [] for loc in locations[:1])):
        for d in level:
            if d.name == "lua_need_request_body":
                need_body = d.args == ["on"]
    for directive in server_level:
        if directive.name not in IGNORED | COPIED | {"lua_need_request_body"}:
            return Exclusion("scope", f"server-level directive {directive.name}")
    if len(locations) != 1:
        return Exclusion("scope", "several locations (subrequests, internal redirects)")
    location = locations[0]
    if not location_matches(location.args, request.uri.split("?")[0]):
        return Exclusion("scope", "the request is not for the block's location")
    if any(d.name == "location" for d in location.block or []):
        return Exclusion("scope", "nested locations")
    handlers = [d for d in location.block or [] if d.name in HANDLERS]
    if not handlers:
        return Exclusion("scope", "no Lua handler in the location")
    if len(handlers) > 1:
        return Exclusion("design", "handlers of several phases in one location")
    handler = handlers[0]
    if not handler.name.startswith("content_") and "get_phase" in texts:
        return Exclusion("design", "ngx.get_phase() outside the content phase")
    user_files = _user_files(block)
    if user_files is None:
        return Exclusion("scope", "--- user_files not understood")
    script = _handler_code(handler, user_files)
    if script is None:
        return Exclusion("scope", f"{handler.name} file not among --- user_files")
    copied: list[str] = [
        f"{d.name} {' '.join(_q(a) for a in d.args)};" for d in server_level if d.name in COPIED
    ]
    if need_body:
        # lua_need_request_body on: the body is read before the handler runs
        # (on the handler's first line, so line numbers stay the same).
        script = "ngx.req.read_body() " + script
    for directive in location.block or []:
        if directive is handler or directive.name in IGNORED:
            continue
        if directive.name == "lua_need_request_body":
            continue  # need_body above
        if directive.name in COPIED:
            copied.append(f"{directive.name} {' '.join(_q(a) for a in directive.args)};")
        elif directive.name == "set" and len(directive.args) == 2:
            var = directive.args[0].lstrip("$")
            copied.append(f"set ${var} {_q(directive.args[1])};")
            copied.append(f"fastcgi_param {var} ${var};")
        else:
            return Exclusion("scope", f"location directive {directive.name}")
    shared_dicts: dict[str, str] = {}
    options: dict[str, str] = {}
    init_script = init_worker_script = ""
    for directive in http_config:
        name = directive.name
        if name == "lua_shared_dict" and len(directive.args) == 2:
            shared_dicts[directive.args[0]] = directive.args[1]
        elif name in ("lua_package_path", "lua_package_cpath") and directive.args:
            options[name] = directive.args[0]
        elif name in ("lua_max_pending_timers", "lua_max_running_timers"):
            options[name.removeprefix("lua_")] = directive.args[0]
        elif name in ("init_by_lua", "init_by_lua_block"):
            init_script = directive.lua if directive.lua is not None else directive.args[0]
        elif name in ("init_worker_by_lua", "init_worker_by_lua_block"):
            init_worker_script = directive.lua if directive.lua is not None else directive.args[0]
        elif name in IGNORED or name in ("lua_regex_cache_max_entries", "lua_need_request_body"):
            continue
        else:
            return Exclusion("scope", f"http_config directive {name}")
    for directive in main_config:
        if directive.name != "env":
            return Exclusion("scope", f"main_config directive {directive.name}")
    for directive in server_level + (location.block or []) + http_config:
        if directive.name == "default_type" and directive.args != ["text/plain"]:
            # fcgi-lua's default Content-Type is text/plain (nginx's built-in
            # one, which Test::Nginx's http block sets too), not configurable
            return Exclusion("scope", "default_type other than text/plain")
    for directive in server_level + (location.block or []):
        # nginx's body buffering, mirrored by fcgi-lua's own (it gets the
        # body over FastCGI and spools it itself)
        if directive.name == "client_body_buffer_size" and directive.args:
            options.setdefault("client_body_buffer_size", directive.args[0])
        elif directive.name == "client_body_in_file_only" and directive.args[:1] != ["off"]:
            options["client_body_buffer_size"] = "1"  # every non-empty body to a file
    expect = _expect(block)
    if isinstance(expect, Exclusion):
        return expect
    if _body_short(request):
        # The client sends less than its Content-Length: OpenResty's
        # handler runs at once (it reads no body), where nginx's buffering
        # would wait for the rest before passing the request on.
        copied.append("fastcgi_request_buffering off;")
    fcgi_location = "\n".join(
        [
            f"location {' '.join(_q(a) for a in location.args)} {{",
            *(f"    {line}" for line in copied),
            "    include {params};",
            "    fastcgi_pass unix:{socket};",
            "}",
        ]
    )
    timeout = float(block.text("timeout") or 3)
    return Case(
        block=block,
        request=request,
        expect=expect,
        timeout=timeout,
        main_config=block.text("main_config") or "",
        http_config=block.text("http_config") or "",
        config=config_text,
        fcgi_location=fcgi_location,
        script=script,
        shared_dicts=shared_dicts,
        options=options,
        init_script=init_script,
        init_worker_script=init_worker_script,
        user_files=user_files,
    )


def _q(word: str) -> str:
    if re.fullmatch(r"[^\s;{}'\"#\\]+", word):
        return word
    return "'" + word.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _walk(directives: list[Directive]) -> list[Directive]:
    out: list[Directive] = []
    for directive in directives:
        out.append(directive)
        out.extend(_walk(directive.block or []))
    return out


_DESIGN = [
    (re.compile(r"ngx\.location\.capture"), "ngx.location.capture*: subrequests"),
    (re.compile(r"ngx\.req\.socket\(\s*true"), "ngx.req.socket(true): the raw client socket"),
    (re.compile(r"\bngx\.ssl\b|require\W+ngx\.ssl"), "ngx.ssl: TLS is nginx's"),
    (re.compile(r"ngx\.balancer|ngx\.ocsp"), "ngx.balancer / ngx.ocsp: other phases"),
    (re.compile(r"ngx\.req\.http_version\(\)\s*==\s*2|http2"), "HTTP/2"),
]
# Expected output that names the handler's chunk as nginx does.
_CHUNK_NAME = re.compile(r"by_lua\w*\\?\(|nginx\\?\.conf:\d|nginx\\?\.conf\\?:")
_CHECKED = ("response_body", "response_body_like", "response_body_unlike", "response_headers")


def _by_design(texts: str) -> str:
    for pattern, reason in _DESIGN:
        if pattern.search(texts):
            return reason
    return ""


def _skip_nginx(block: Block) -> str:
    for section in ("skip_nginx", "skip_nginx2"):
        text = block.text(section)
        if not text:
            continue
        match = re.search(r"(<|>|<=|>=|==)\s*([\d.]+)", text)
        if not match:
            continue
        op, version = match.group(1), tuple(int(x) for x in match.group(2).split("."))
        mine = NGINX_VERSION[: len(version)]
        result = {
            "<": mine < version,
            ">": mine > version,
            "<=": mine <= version,
            ">=": mine >= version,
            "==": mine == version,
        }[op]
        if result:
            return f"skip_nginx {op} {match.group(2)}"
    return ""


def _request(text: str, more_headers: str) -> Request:
    # Test::Nginx: leading blanks and comment lines go; the first line is
    # "METHOD [URI [VERSION]]"; the rest is the body, trimmed, with a
    # Content-Length unless more_headers gives one or says chunked.
    while True:
        new = re.sub(r"^\s*#[^\n]+\s+|^\s+", "", text)
        if new == text:
            break
        text = new
    first, _, content = text.partition("\n")
    parts = first.split()
    if not parts:
        raise ValueError("empty request line")
    method = parts[0]
    uri = parts[1] if len(parts) > 1 else "/"
    version = parts[2] if len(parts) > 2 else "HTTP/1.1"
    headers: list[tuple[str, str]] = []
    chunked = False
    for line in re.split(r"\n+", more_headers):
        if not line.strip() or re.match(r"^\s*#", line):
            continue
        key, _, value = line.partition(":")
        value = value.lstrip()
        if key.lower() == "transfer-encoding" and value == "chunked":
            chunked = True
        headers.append((key, value))
    has_length = any(k.lower() == "content-length" for k, _ in headers)
    if content and not chunked and not has_length:
        content = content.strip()
        headers.append(("Content-Length", str(len(content))))
    return Request(method, uri, version, headers, content)


def _body_short(request: Request) -> bool:
    """Whether the request declares more body than it sends."""
    for key, value in request.headers:
        if key.lower() == "content-length":
            return value.strip().isdigit() and int(value) > len(request.body.encode("latin-1"))
    return False


def _expect(block: Block) -> Expect | Exclusion:
    expect = Expect()
    code = block.sections.get("error_code")
    if code is not None:
        if code.text is None:
            return Exclusion("scope", "several requests")
        text = code.text.strip()
        expect.status = int(text) if text.isdigit() else None
        if not text.isdigit() and text:
            return Exclusion("scope", f"error_code {text!r}")
    like = block.text("error_code_like")
    if like is not None:
        expect.status, expect.status_like = None, like.strip()
    body = block.sections.get("response_body")
    if body is not None:
        if body.regex is not None:
            expect.body_like = body.regex
        elif body.text is not None:
            expect.body = body.text
        else:
            return Exclusion("scope", "several requests")
    for section in ("response_body_like", "response_body_unlike"):
        value = block.sections.get(section)
        if value is None:
            continue
        pattern = value.regex if value.regex is not None else value.text
        if pattern is None:
            return Exclusion("scope", "several requests")
        if section == "response_body_like":
            expect.body_like = pattern
        else:
            expect.body_unlike = pattern
    for section in ("response_headers", "response_headers_like"):
        value = block.sections.get(section)
        if value is None:
            continue
        if value.text is None:
            return Exclusion("scope", "several requests")
        for line in re.split(r"\n+", value.text):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.startswith("!"):
                expect.headers[line[1:].strip()] = None
                continue
            key, _, val = line.partition(":")
            if section == "response_headers":
                expect.headers[key.strip()] = val.strip()
            else:
                expect.headers_like[key.strip()] = val.strip()
    for section in ("raw_response_headers_like", "raw_response_headers_unlike"):
        value = block.sections.get(section)
        if value is None:
            continue
        pattern = value.regex if value.regex is not None else value.text
        if pattern is None:
            return Exclusion("scope", "several requests")
        if section.endswith("unlike"):
            expect.raw_headers_unlike = pattern
        else:
            expect.raw_headers_like = pattern
    return expect


def _user_files(block: Block) -> dict[str, str] | None:
    text = block.text("user_files")
    if text is None:
        return {} if not block.has("user_files") else None
    files: dict[str, str] = {}
    current = None
    for line in text.splitlines(keepends=True):
        match = re.match(r"^>>> (\S+)", line)
        if match:
            current = match.group(1)
            files[current] = ""
        elif current is not None:
            files[current] += line
    return files


def _handler_code(handler: Directive, user_files: dict[str, str]) -> str | None:
    if handler.lua is not None:
        return handler.lua
    if not handler.args:
        return None
    if handler.name.endswith("_file"):
        path = handler.args[0]
        for prefix in ("html/", "$TEST_NGINX_HTML_DIR/"):
            if path.startswith(prefix) and path[len(prefix) :] in user_files:
                return user_files[path[len(prefix) :]]
        return None
    return handler.args[0]
