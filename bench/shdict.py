"""ngx.shared.DICT ops/s from Lua, in one process: the engine, a store with
one zone, and a script that loops over dict:get / set / incr.

    python3 bench/shdict.py [--ops 100000] [--runtime luajit21]

Each figure is one script run of ``--ops`` calls (the loop, the method's
argument checks, the one call into Python, the LMDB transaction).  Not a
test: nothing fails on a slow machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fcgi_lua.lua import DEFAULT_RUNTIME, LuaEngine
from fcgi_lua.request import Request
from fcgi_lua.shdict import SharedDicts, prepare

SCRIPT = """
local d = ngx.shared.bench
local n = tonumber(ngx.var.arg_n)
d:set("hit", "a value of some twenty bytes")
d:set("count", 0)
for i = 1, 1000 do d:set("key" .. i, i) end
local function measure(name, f)
    ngx.update_time()
    local began = ngx.now()
    f()
    ngx.update_time()
    local took = ngx.now() - began
    ngx.say(string.format("%-12s %10.0f ops/s", name, n / took))
end
measure("get (hit)", function() for _ = 1, n do d:get("hit") end end)
measure("get (miss)", function() for _ = 1, n do d:get("nothing") end end)
measure("set", function() for i = 1, n do d:set("key" .. (i % 1000), i) end end)
measure("incr", function() for _ = 1, n do d:incr("count", 1) end end)
ngx.say("count ", d:get("count"))
"""


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    async def write(self, data: bytes) -> None:
        self.write_nowait(data)

    def write_nowait(self, data: bytes) -> None:
        self.data += data

    def stderr(self, data: bytes) -> None:
        sys.stderr.buffer.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--runtime", default=DEFAULT_RUNTIME)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zones = {"bench": 64 << 20}
        path = os.path.join(tmp, "shdict")
        prepare(path, zones)
        store = SharedDicts(path, zones)
        engine = LuaEngine(runtime=args.runtime, shared_dicts=store, slow_resume_warning=0)
        script = os.path.join(tmp, "bench.lua")
        Path(script).write_text(SCRIPT)
        params = [(b"REQUEST_METHOD", b"GET"), (b"QUERY_STRING", f"n={args.ops}".encode())]
        sink = _Sink()
        asyncio.run(engine.run(Request(params, script), sink))
        store.close()
    body = sink.data.partition(b"\r\n\r\n")[2]
    print(f"runtime {args.runtime}, {args.ops} calls each, one process")
    print(body.decode())


if __name__ == "__main__":
    main()
