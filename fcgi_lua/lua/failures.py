"""How a request's Lua failure reads in the error log.

Owns three things, each as OpenResty writes them: the line for a script
that does not compile (``failed to load external Lua file``), the request
context a request's log lines end with (``, client: ..., server: ...,
request: "GET /x HTTP/1.1", host: "..."``), and tracebacks that show the
script's and its libraries' frames, not fcgi-lua's own Lua layers (which
OpenResty has in C, where no traceback sees them).

What it must never do: run on the success path.  Everything here is called
once a line is about to be logged, never per request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources

# fcgi-lua's own Lua layers, by chunk name: each is loaded as "@<file name>"
# (lua/loader.py's load_chunk; compat.lua by runtimes.py),
# while scripts and libraries are loaded by path ("@/srv/www/x.lua",
# "@/usr/share/lua/5.1/resty/redis.lua", "@./lib.lua").
# ngx.lua's API areas are "@ngx/<area>.lua".
INTERNAL_CHUNKS = frozenset(
    prefix + entry.name
    for prefix, folder in (("", ""), ("ngx/", "ngx"))
    for entry in resources.files("fcgi_lua.lua").joinpath(folder).iterdir()
    if entry.name.endswith(".lua")
)

_TRACEBACK = "\nstack traceback:\n"
# "\tngx.lua:123: in function 'x'", "\tngx.lua: in function 'x'" (LuaJIT
# leaves out the line of a frame that made a tail call)
_FRAME_SOURCE = re.compile(r"\t?([^:\t]+\.lua)(?::\d+)?: in ")
_TAIL_CALLS = ("(...tail calls...)", "(tail call): ?")  # 5.2+ and LuaJIT, 5.1


def expand_short_src(message: str, path: str) -> str:
    """Undo Lua's shortening of long chunk names ("...tail/of/path.lua")."""
    if "..." not in message:
        return message
    for n in range(len(path) - 1, 8, -1):
        short = "..." + path[-n:]
        if short in message:
            return message.replace(short, path)
    return message


def load_error(path: str, reason: str, *, syntax: bool) -> str:
    """The log line of a script that cannot be loaded, as OpenResty's
    content_by_lua_file says it (``failed to load external Lua file
    "/srv/x.lua": /srv/x.lua:2: ')' expected near 'y'``), saying
    "syntax error" when it is one."""
    kind = "syntax error: " if syntax else ""
    return f'failed to load external Lua file "{path}": {kind}{reason}'


def request_context(params: Sequence[tuple[bytes, bytes]]) -> str:
    """What nginx appends to a request's error log lines (its
    ngx_http_log_error_handler), from the FastCGI params nginx's
    fastcgi_params sends: ``, client: 127.0.0.1, server: localhost,
    request: "GET /x.lua?a=1 HTTP/1.1", host: "127.0.0.1:8080"`` (and
    ``referrer``).  A part whose param is missing is left out (an empty
    server_name is written empty, as nginx does)."""
    wanted = {
        b"REMOTE_ADDR": "",
        b"SERVER_NAME": "",
        b"REQUEST_METHOD": "",
        b"REQUEST_URI": "",
        b"SERVER_PROTOCOL": "",
        b"HTTP_HOST": "",
        b"HTTP_REFERER": "",
    }
    for name, value in params:
        if name in wanted and not wanted[name]:
            # client bytes: no line breaks or quotes that could forge a line
            wanted[name] = value.decode("utf-8", "replace").translate(_UNSAFE)
    parts = []
    if wanted[b"REMOTE_ADDR"]:
        parts.append(f", client: {wanted[b'REMOTE_ADDR']}")
    if any(name == b"SERVER_NAME" for name, _ in params):  # nginx writes it even if ""
        parts.append(f", server: {wanted[b'SERVER_NAME']}")
    line = " ".join(
        v
        for v in (wanted[b"REQUEST_METHOD"], wanted[b"REQUEST_URI"], wanted[b"SERVER_PROTOCOL"])
        if v
    )
    if line:
        parts.append(f', request: "{line}"')
    if wanted[b"HTTP_HOST"]:
        parts.append(f', host: "{wanted[b"HTTP_HOST"]}"')
    if wanted[b"HTTP_REFERER"]:
        parts.append(f', referrer: "{wanted[b"HTTP_REFERER"]}"')
    return "".join(parts)


# control characters and the quote, as nginx's log escapes them (\xHH)
_UNSAFE = {c: f"\\x{c:02X}" for c in (*range(0x20), 0x22, 0x7F)}


def clean_traceback(text: str, script: str | None = None) -> str:
    """``text`` (an error message and its "stack traceback:") without the
    frames of fcgi-lua's own Lua layers, nor the C functions they call
    (``[C]: in function 'error'`` raised by the ngx API's argument checks) or
    tail calls next to them; the script's and its libraries' frames stay,
    and so does a C function the script called.  ``script`` given (an
    entry thread's traceback): its bottom frame, the script's main chunk
    that fcgi-lua compiles as a function, reads ``in main chunk`` as in
    OpenResty.  A traceback with no frame of the script's is left whole:
    the failure is fcgi-lua's own."""
    head, found, frames_text = text.partition(_TRACEBACK)
    if not found:
        return text
    frames = frames_text.split("\n")
    keep = [True] * len(frames)
    caller_internal = False  # the frame below (the caller) is fcgi-lua's
    for i in range(len(frames) - 1, -1, -1):
        frame = frames[i].lstrip("\t")
        if frame in _TAIL_CALLS or frame == "...":
            continue
        if frame.startswith("[C]:"):
            keep[i] = not caller_internal  # called by fcgi-lua, or by the script
            continue
        match = _FRAME_SOURCE.match(frame)
        caller_internal = match is not None and match.group(1) in INTERNAL_CHUNKS
        keep[i] = not caller_internal
    for i, frame in enumerate(frames):  # tail calls into or out of a hidden frame
        if frame.lstrip("\t") in _TAIL_CALLS:
            keep[i] = (i == 0 or keep[i - 1]) and (i + 1 == len(frames) or keep[i + 1])
    kept = [frame for frame, k in zip(frames, keep, strict=True) if k]
    if not any(f.lstrip("\t") not in (*_TAIL_CALLS, "...") for f in kept):
        return text
    if script is not None and kept:
        main = f" in function <{script}:1>"
        if kept[-1].endswith(main):
            kept[-1] = kept[-1][: -len(main)] + " in main chunk"
    return head + _TRACEBACK + "\n".join(kept)
