"""The sandbox and request isolation through real nginx (issue 12, B1-B3).

The module runs its own ``fcgi-lua serve --workers 1 -o sandbox=true``
behind its own nginx (the shipped nginx/ files), with a shared dict in
the default store (the system temp dir, ``fcgi-lua-shdict-*``) and the
default body temp dir: where the attack run found the escapes.  Each case
is an escape the attack run made; tests/unit/test_sandbox.py has the
whole adversarial list against the engine.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from fcgi_lua.lua import LuaEngine
from fcgi_lua.shdict import store_path

from .e2e_clients import http_request
from .e2e_stack import (
    NGINX,
    Service,
    Stack,
    fcgi_lua_argv,
    free_port,
    render_shipped_nginx_conf,
    wait_for,
)

pytestmark = pytest.mark.e2e

SECRET = "SECRET-OUTSIDE-THE-ROOT"

SCRIPTS = {
    # B1: io.input / io.output, then io.read / io.write through them
    "io_input.lua": """
local ok, err = pcall(io.input, ngx.var.arg_path)
ngx.say("input ", tostring(ok), " ", tostring(err))
if ok then ngx.say("read ", tostring(io.read("*l"))) end
ok, err = pcall(io.output, ngx.var.arg_out)
ngx.say("output ", tostring(ok), " ", tostring(err))
if ok then io.write("written by a sandboxed script") io.close() end
""",
    # B2: the spooled body of another request, found through a shared dict
    "hold_body.lua": """
ngx.req.read_body()
local path = ngx.req.get_body_file()
ngx.shared.zone:set("victim_body", path)
ngx.sleep(1)
ngx.say("held ", tostring(path ~= nil))
""",
    "steal_body.lua": """
local path = ngx.shared.zone:get("victim_body")
local f = path and io.open(path, "rb")
ngx.say("path ", tostring(path ~= nil), " opened ", tostring(f ~= nil))
if f then ngx.say(f:read("*a"):sub(1, 40)) end
""",
    # B2: the shared-dict LMDB file of this instance
    "steal_shdict.lua": """
ngx.shared.zone:set("k", "v")
local f = io.open(ngx.var.arg_path, "r+b")
ngx.say("opened ", tostring(f ~= nil))
if f then f:seek("set", 4096) f:write(("\\0"):rep(16)) f:close() end
ngx.say("get ", tostring(ngx.shared.zone:get("k")))
""",
    # B3: wrap ngx.say to capture the next request's output
    "wrap_say.lua": """
local say = ngx.say
local ok, err = pcall(function()
    ngx.say = function(...) return say("CAPTURED ", ...) end
end)
say("wrapped ", tostring(ok), " ", tostring(err))
""",
    "hello_args.lua": """ngx.say("hello ", tostring(ngx.var.arg_who))""",
    # B3: a module plant in the package path
    "plant.lua": """
local f, err = io.open(ngx.var.arg_dir .. "/planted.lua", "w")
if f then f:write("return 'PLANTED'") f:close() end
ngx.say("plant ", tostring(f ~= nil))
""",
    "use_plant.lua": """ngx.say("require ", tostring((pcall(require, "planted"))))""",
    # item 1: a binary chunk through load's reader function
    "load_reader.lua": """
local bc = assert(ngx.decode_base64(ngx.req.get_uri_args().bc))
local given = false
local f, err = load(function() if given then return nil end given = true return bc end)
ngx.say("load ", tostring(f ~= nil), " ", tostring(err))
""",
}


@dataclass
class SandboxPool:
    stack: Stack
    fcgi: Service
    url: str
    lib: Path
    outside: Path
    store: str


def new_stack(tmp: Path) -> Stack:
    root = tmp / "root"
    root.mkdir()
    (root / "hello.lua").write_text('ngx.say("hello")\n')  # Stack.wait_until's probe
    for name, source in SCRIPTS.items():
        (root / name).write_text(source)
    (tmp / "logs").mkdir()
    sock = Path(f"/tmp/fcgi-lua-e2e-{os.getpid()}-sandbox.sock")
    sock.unlink(missing_ok=True)
    return Stack(
        tmp=tmp,
        root=root,
        outside=root,
        unix_socket=sock,
        debug_socket=sock,
        bodies_socket=sock,
        tcp_address=("127.0.0.1", 0),
        nginx_error_log=tmp / "logs" / "nginx-error.log",
    )


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxPool]:
    assert NGINX is not None
    tmp = tmp_path_factory.mktemp("sandbox")
    stack = new_stack(tmp)
    lib = tmp / "lib"
    lib.mkdir()
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET + "\n")
    listen = f"unix:{stack.unix_socket}"
    try:
        fcgi = stack.start(
            "fcgi-lua",
            fcgi_lua_argv(
                "serve",
                "--listen",
                listen,
                "--root",
                str(stack.root),
                "--workers",
                "1",
                "-o",
                "sandbox=true",
                "-o",
                f"lua_package_path={lib}/?.lua;;",
                "-o",
                'shared_dicts={zone="1m"}',
                "-o",
                "client_body_buffer_size=1k",
                "-o",
                "shutdown_timeout=5",
            ),
            tmp / "logs" / "fcgi-lua.log",
        )
        stack.wait_until(fcgi, str(stack.unix_socket), fastcgi=True)
        port = free_port()
        conf = render_shipped_nginx_conf(stack, port, connections=64)
        nginx_argv = [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(stack.nginx_error_log)]
        nginx = stack.start("nginx", [*nginx_argv, "-g", "daemon off;"], tmp / "logs" / "nginx.log")
        stack.wait_until(nginx, ("127.0.0.1", port))
        store = store_path("", [listen])
        wait_for(lambda: os.path.isdir(store), 10, "the shared-dict store")
        yield SandboxPool(stack, fcgi, f"http://127.0.0.1:{port}", lib, outside, store)
    finally:
        problems = stack.stop()
        stack.unix_socket.unlink(missing_ok=True)
    assert not problems, "; ".join(problems)


def get(pool: SandboxPool, path: str, method: str = "GET", body: bytes | None = None) -> str:
    resp = http_request(pool.url, path, method=method, body=body)
    assert resp.status == 200, (resp.status, resp.text, pool.fcgi.log_text()[-2000:])
    return str(resp.text)


def test_io_input_and_output_are_confined(pool: SandboxPool) -> None:
    written = pool.outside / "written.txt"
    text = get(pool, f"/io_input.lua?path={pool.outside}/secret.txt&out={written}")
    assert SECRET not in text
    assert text.count("outside the sandbox") == 2, text
    assert not written.exists()


def test_another_requests_spooled_body_is_out_of_reach(pool: SandboxPool) -> None:
    results: dict[str, str] = {}

    def hold() -> None:
        results["held"] = get(pool, "/hold_body.lua", method="POST", body=b"B" * 100_000)

    holder = threading.Thread(target=hold)
    holder.start()
    wait_for(
        lambda: "path true" in get(pool, "/steal_body.lua") or not holder.is_alive(),
        5,
        "the victim's body file",
    )
    stolen = get(pool, "/steal_body.lua")
    holder.join()
    assert results["held"] == "held true\n"
    assert stolen == "path true opened false\n", stolen


def test_the_shared_dict_store_is_out_of_reach(pool: SandboxPool) -> None:
    text = get(pool, f"/steal_shdict.lua?path={pool.store}/data.mdb")
    assert text == "opened false\nget v\n", text
    assert get(pool, "/steal_shdict.lua?path=/nonexistent") == "opened false\nget v\n"


def test_a_request_cannot_capture_the_next_ones_output(pool: SandboxPool) -> None:
    wrapped = get(pool, "/wrap_say.lua")
    assert wrapped.startswith("wrapped false ") and "read-only" in wrapped, wrapped
    for who in ("alice", "bob"):
        assert get(pool, f"/hello_args.lua?who={who}") == f"hello {who}\n"


def test_no_module_plant_in_the_package_path(pool: SandboxPool) -> None:
    assert get(pool, f"/plant.lua?dir={pool.lib}") == "plant false\n"
    assert not (pool.lib / "planted.lua").exists()
    assert get(pool, "/use_plant.lua") == "require false\n"


def test_load_refuses_bytecode_from_a_reader(pool: SandboxPool) -> None:
    dumped = LuaEngine()._lua.execute(b"return string.dump(function() return 1 end)")
    bc = base64.b64encode(dumped).decode()
    text = get(pool, f"/load_reader.lua?bc={quote(bc, safe='')}")
    assert text.startswith("load false ") and "binary" in text, text
