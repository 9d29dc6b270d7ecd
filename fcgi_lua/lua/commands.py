"""The command table: how Python performs what a request's coroutine yields.

ngx.lua yields ``(IO, cmd, arg)`` when a request must wait (an output the
peer has not read, the body, a cosocket; a sleep or a semaphore: the
engine's own commands); the
engine's driver looks ``cmd`` up in ``COMMANDS`` and awaits the handler
with the request, its sink and ``arg``; the coroutine is resumed with what
the handler returns (plain values and dicts: the driver converts them).

What it must never do: touch the Lua VM (handlers run between resumes and
return Python values), or wait for anything but the one thing asked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fcgi_lua.body import BodyError, BodyStorageError
from fcgi_lua.forms import MultipartError
from fcgi_lua.lua import cosocket

if TYPE_CHECKING:
    from fcgi_lua.lua.engine import LuaRequest, OutputSink

    Command = Callable[[LuaRequest, OutputSink, Any], Awaitable[Any]]

log = logging.getLogger("fcgi_lua.lua")


async def _do_write(request: LuaRequest, sink: OutputSink, data: Any) -> Any:
    await sink.write(data)
    return 1


def body_failure(request: LuaRequest, exc: BodyError) -> dict[bytes, Any]:
    # The script's read ends the request with this status, as in nginx.
    level = logging.ERROR if exc.status >= 500 else logging.WARNING
    log.log(level, "%s: %s; %d", request.script_path, exc, exc.status)
    return {b"status": exc.status, b"err": str(exc).encode("utf-8", "replace")}


async def _do_read_body(request: LuaRequest, sink: OutputSink, arg: Any) -> Any:
    # -> {data = string} | {file = path} | {status = 413, err = ...}
    try:
        await request.wait_body()
    except BodyError as exc:
        return body_failure(request, exc)
    path = request.body_path
    if path is not None:
        return {b"file": os.fsencode(path)}
    return {b"data": request.body_data or b""}


async def _do_discard_body(request: LuaRequest, sink: OutputSink, arg: Any) -> Any:
    request.discard_body()
    return None


async def _do_req_socket(request: LuaRequest, sink: OutputSink, owner: Any) -> Any:
    # ngx.req.socket() -> the handle of the body's reader | {err = ...}
    refused = request.stream_body()
    if refused is not None:
        return {b"err": refused.encode()}
    handle = cosocket.open_body_reader(owner, request.body)
    return {b"handle": handle} if handle is not None else {b"err": b"no request found"}


async def _do_multipart(request: LuaRequest, sink: OutputSink, max_parts: Any) -> Any:
    # -> {fields = {name = value | {values}}, files = {...}, truncated = bool}
    #    | {err = "..."} (a malformed body) | {status = N} (no body to parse)
    try:
        form = await request.multipart(int(max_parts))
    except BodyError as exc:
        return body_failure(request, exc)
    except MultipartError as exc:
        log.info("%s: %s", request.script_path, exc)
        return {b"err": str(exc).encode("utf-8", "replace")}
    except OSError as exc:
        return body_failure(request, BodyStorageError(f"cannot store an upload: {exc}"))
    fields = {
        name: values[0] if len(values) == 1 else values for name, values in form.fields.items()
    }
    files = [
        {
            b"name": f.name,
            b"filename": f.filename,
            b"content_type": f.content_type,
            b"size": f.size,
            b"path": os.fsencode(f.path),
        }
        for f in form.files
    ]
    return {b"fields": fields, b"files": files, b"truncated": form.truncated}


# What a coroutine may yield (ngx.lua's `co_yield(IO, cmd, arg)`), and how
# Python performs it.
COMMANDS: dict[bytes, Command] = {
    b"write": _do_write,
    b"read_body": _do_read_body,
    b"discard_body": _do_discard_body,
    b"multipart": _do_multipart,
    b"req_socket": _do_req_socket,  # ngx.req.socket (socket.lua)
    b"cosocket": cosocket.perform,  # ngx.socket.* waits (socket.lua)
}
# The engine adds its own to its copy of this table: b"park" (ngx.semaphore
# waits, thread.lua: scheduler.Parking.perform) and b"sleep" (ngx.sleep, on
# the worker's heap of deadlines that cosockets' timeouts use too).
