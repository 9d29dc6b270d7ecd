"""Helpers for the Lua engine tests: a fake request, an in-memory sink, and
a runner that parses the CGI response.  (No tests here.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcgi_lua.body import Body
from fcgi_lua.lua import LuaEngine
from fcgi_lua.request import Request


class FakeRequest(Request):
    """A real Request whose whole body (if any) has already arrived."""

    def __init__(
        self,
        script_path: str,
        params: Sequence[tuple[bytes, bytes]],
        body: bytes = b"",
        **body_options: Any,
    ) -> None:
        super().__init__(params, script_path, **body_options)
        if body:
            self.body = Body(str(len(body)).encode(), **_body_args(body_options))
            self.feed_body(body)
            self.end_body()
        self.body_reads = 0

    async def wait_body(self) -> None:
        self.body_reads += 1
        await asyncio.sleep(0)
        await super().wait_body()


def _body_args(options: dict[str, Any]) -> dict[str, Any]:
    names = {"max_body_size": "max_size", "body_buffer_size": "buffer_size"}
    names["body_temp_dir"] = "temp_dir"
    return {names[k]: v for k, v in options.items()}


class MemorySink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.errors: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.write_nowait(data)

    def write_nowait(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.chunks.append(data)

    def stderr(self, data: bytes) -> None:
        self.errors.append(data)


@dataclass
class Response:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunks: list[bytes] = field(default_factory=list)
    raw: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def parse(chunks: list[bytes]) -> Response:
    raw = b"".join(chunks)
    assert chunks, "no output at all"
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    assert chunks[0].find(b"\r\n\r\n") != -1, "first write must hold the whole header block"
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"Status: "), lines[0]
    code, _, reason = lines[0][8:].partition(b" ")
    headers = [tuple(line.split(b": ", 1)) for line in lines[1:]]
    return Response(int(code), reason, headers, body, chunks, raw)  # type: ignore[arg-type]


def make_params(
    method: bytes = b"GET",
    query: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = (),
    extra: Sequence[tuple[bytes, bytes]] = (),
    uri: bytes = b"/t.lua",
) -> list[tuple[bytes, bytes]]:
    params = [
        (b"REQUEST_METHOD", method),
        (b"QUERY_STRING", query),
        (b"REQUEST_URI", uri + (b"?" + query if query else b"")),
        (b"DOCUMENT_URI", uri),
        (b"SCRIPT_NAME", uri),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"REMOTE_ADDR", b"127.0.0.1"),
        (b"SERVER_PORT", b"8080"),
    ]
    params.extend(extra)
    params.extend(headers)
    return params


def write_script(tmp_path: Path, source: str, name: str = "t.lua") -> str:
    path = tmp_path / name
    path.write_text(source)
    return str(path)


def run_script(
    tmp_path: Path,
    source: str,
    *,
    engine: LuaEngine | None = None,
    params: Sequence[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    sink: MemorySink | None = None,
    **engine_args: object,
) -> Response:
    path = write_script(tmp_path, source)
    engine = engine or LuaEngine(**engine_args)  # type: ignore[arg-type]
    sink = sink or MemorySink()
    request = FakeRequest(path, params if params is not None else make_params(), body)
    asyncio.run(engine.run(request, sink))
    return parse(sink.chunks)


def engine_with_probe(**options: Any) -> tuple[LuaEngine, Any]:
    """An engine, and a Lua table scripts reach as package.loaded.probe."""
    engine = LuaEngine(**options)
    probe = engine._lua.table()
    engine._lua.globals().package.loaded[b"probe"] = probe
    return engine, probe


def items(probe: Any) -> list[Any]:
    return [probe[i] for i in range(1, len(probe) + 1)]
