"""CPU per request of the Lua engine alone: ``LuaEngine.run`` in a loop.

No FastCGI, no sockets to the client, no server: one worker's engine (made
from the default config, as ``fcgi-lua serve`` makes it) runs a script of
bench/ sequentially on uvloop, and the process's CPU time per request is
printed (best of three runs).  What fcgi_load.py measures minus this is the
server's share (records, tasks, the write syscall).

    python3 bench/engine_run.py                          # hello.lua
    python3 bench/engine_run.py --script redis_incr.lua  # starts a redis-server
    python3 bench/engine_run.py -o max_instructions=0 -o lua_memory_limit=0
    python3 bench/engine_run.py --script redis_incr.lua --jit-profile

``--jit-profile`` (LuaJIT) runs LuaJIT's own sampling profiler in the
worker's VM over one more pass: how the CPU per request splits between Lua
interpreted (I), compiled (N), garbage collection (G), C functions called
from Lua (C: lupa's calls into Python, and Python), and everything outside
Lua (Python around the resumes, the loop, the kernel: the CPU time less
the samples inside, since a tick that comes outside Lua is taken at the
driver's next resume, or never), with the Lua lines most sampled.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import uvloop
from fcgi_load import nginx_params

from fcgi_lua.config import Config, load
from fcgi_lua.request import Request
from fcgi_lua.worker import make_engine

BENCH = Path(__file__).resolve().parent


class Sink:
    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = 0

    async def write(self, data: bytes) -> None:
        self.write_nowait(data)

    def write_nowait(self, data: bytes) -> None:
        self.sent += len(data)

    def stderr(self, data: bytes) -> None:
        return None


# LuaJIT's jit.profile in the worker's VM: samples by VM state and by line
PROFILE_START = """
local profile = require("jit.profile")
BENCH_PROFILE = {}
local dumpstack = profile.dumpstack
profile.start("i1", function(thread, samples, vmstate)
    local key = vmstate .. " " .. dumpstack(thread, "pl", 1)
    BENCH_PROFILE[key] = (BENCH_PROFILE[key] or 0) + samples
end)
"""
VM_STATES = {"N": "compiled", "I": "interpreted", "C": "in C", "G": "GC", "J": "JIT compiler"}


def print_profile(lua: Any, requests: int, cpu_us: float) -> None:
    """The 1 ms samples jit.profile took, as microseconds per request."""
    lua.execute("require('jit.profile').stop()")
    samples = {
        (k.decode() if isinstance(k, bytes) else str(k)): int(v)
        for k, v in lua.eval("BENCH_PROFILE").items()
    }
    per_request = 1000.0 / requests  # one sample is 1 ms
    by_state: dict[str, int] = {}
    for key, count in samples.items():
        # A tick that comes while Python runs is taken at the next Lua
        # instruction: the driver's (ngx.lua's) resume, in state C.  Those
        # are time outside Lua.
        state = "outside" if key.startswith("C ngx.lua:") else key[0]
        by_state[state] = by_state.get(state, 0) + count
    inside = sum(count for state, count in by_state.items() if state != "outside")
    print(f"jit.profile ({sum(by_state.values())} samples of 1 ms), us per request:")
    for state, count in sorted(by_state.items(), key=lambda item: -item[1]):
        if state != "outside":
            print(f"  {VM_STATES.get(state, state):<12} {count * per_request:6.2f}")
    outside = max(cpu_us - inside * per_request, 0.0)
    print(f"  {'outside Lua':<12} {outside:6.2f}  (CPU {cpu_us:.2f} - the above)")
    print("  most sampled lines:")
    for key, count in sorted(samples.items(), key=lambda item: -item[1])[:12]:
        print(f"    {count * per_request:6.2f}  {key}")


async def measure(
    script: Path, query: bytes, requests: int, overrides: dict[str, Any], jit_profile: bool
) -> None:
    engine = make_engine(load(None, {"root": str(script.parent), **overrides}))
    request_params = nginx_params(script, query, b"engine_run")
    path = str(script)
    sink = Sink()

    async def one() -> None:
        await engine.run(Request(request_params, path), sink)

    for _ in range(min(2000, requests)):  # warm-up: compile, pools, allocator
        await one()
    runs = []
    for _ in range(3):
        began = time.process_time()
        for _ in range(requests):
            await one()
        runs.append((time.process_time() - began) / requests * 1e6)
    print(
        f"{script.name}: engine.run {min(runs):.2f} us CPU per request "
        f"(runs: {', '.join(f'{r:.2f}' for r in runs)}); {sink.sent} bytes out"
    )
    if jit_profile:
        lua = engine._lua
        lua.execute(PROFILE_START)
        began = time.process_time()
        for _ in range(requests):
            await one()
        cpu_us = (time.process_time() - began) / requests * 1e6
        print_profile(lua, requests, cpu_us)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--script", default="hello.lua", help="a script in bench/")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("-o", dest="options", action="append", default=[], help="KEY=VALUE")
    parser.add_argument(
        "--jit-profile", action="store_true", help="LuaJIT's profiler in the VM (see above)"
    )
    args = parser.parse_args()
    defaults = Config()
    overrides: dict[str, Any] = {}
    for option in args.options:
        key, _, value = option.partition("=")
        overrides[key] = type(getattr(defaults, key))(value)
    script = BENCH / args.script
    query = b"name=bench"
    redis = None
    if "redis" in args.script:  # its own redis-server, on a free port
        import tempfile

        from fcgi_load import free_port, start_redis

        tmp = tempfile.mkdtemp(prefix="engine-run-")
        port = free_port()
        redis = start_redis(tmp, port)
        query = f"port={port}".encode()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(measure(script, query, args.requests, overrides, args.jit_profile))
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait()


if __name__ == "__main__":
    main()
