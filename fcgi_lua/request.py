"""One request as the Lua engine sees it: params, script path, body.

The body arrives in STDIN records while the script may already run; how it
is stored and when it is complete is ``fcgi_lua.body``'s job, parsing a
form upload is ``fcgi_lua.forms``'s.  This module ties them to one request
and does no I/O itself; the server feeds it and closes it when the request
ends (which removes the request's temp files).
"""

from __future__ import annotations

from collections.abc import Sequence

from fcgi_lua.body import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_MAX_SIZE,
    BadBody,
    Body,
    BodyError,
    BodyStorageError,
    BodyTooLarge,
)
from fcgi_lua.forms import Multipart, MultipartError, parse_multipart

__all__ = [
    "BadBody",
    "BodyError",
    "BodyStorageError",
    "BodyTooLarge",
    "MultipartError",
    "Request",
]


class Request:
    __slots__ = ("_lowered", "_multipart", "body", "by_name", "method", "params", "script_path")

    def __init__(
        self,
        params: Sequence[tuple[bytes, bytes]],
        script_path: str = "",
        max_body_size: int = DEFAULT_MAX_SIZE,
        *,
        body_buffer_size: int = DEFAULT_BUFFER_SIZE,
        body_temp_dir: str | None = None,
    ) -> None:
        self.params = params
        self.script_path = script_path
        # By name, the first of each (as param() finds them): what the
        # server looks up (method, body, script, built-in pages, logs).
        self.by_name = by_name = dict(reversed(params))
        length = by_name.get(b"CONTENT_LENGTH")
        chunked = b"HTTP_TRANSFER_ENCODING" in by_name
        method = by_name.get(b"REQUEST_METHOD")
        self.method = method or b""
        if length is None and chunked:
            # Apache's mod_proxy_fcgi forwards a chunked body it has not read
            # whole with no CONTENT_LENGTH: it runs to the end of STDIN.
            # (No CONTENT_LENGTH and no Transfer-Encoding is Monkey's
            # bodyless request: no STDIN record will come.)
            length = b""
        self.body = Body(
            length, max_size=max_body_size, buffer_size=body_buffer_size, temp_dir=body_temp_dir
        )
        self._multipart: Multipart | MultipartError | None = None
        self._lowered: dict[bytes, bytes] | None = None  # var()'s, when first asked

    def param(self, name: bytes) -> bytes | None:
        return self.by_name.get(name)

    def var(self, name: bytes) -> bytes | None:
        """The first param whose name, lower-cased, is ``name``: an nginx
        variable as ngx.var reads it ($request_uri is REQUEST_URI)."""
        lowered = self._lowered
        if lowered is None:
            by_name = self.by_name
            # Every name upper-case, as nginx's are: by_name serves as it is
            # (0.3 us); else a lower-cased copy, the first of each (1.6 us).
            if b"".join(by_name).isupper():
                lowered = by_name
            else:
                lowered = {key.lower(): value for key, value in reversed(self.params)}
            self._lowered = lowered
        if lowered is self.by_name:
            return lowered.get(name.upper())
        return lowered.get(name)

    # -- fed by the server ---------------------------------------------------

    @property
    def body_error(self) -> BodyError | None:
        return self.body.error

    @property
    def body_complete(self) -> bool:
        return self.body.complete

    def feed_body(self, data: bytes) -> None:
        """Called by the server for each STDIN record's content."""
        self.body.feed(data)

    def end_body(self) -> None:
        """Called by the server at the empty STDIN record (or connection end)."""
        self.body.end()

    def close(self) -> None:
        """The request is over: remove its temp files (idempotent)."""
        self.body.close()

    # -- read by the script ----------------------------------------------------

    async def wait_body(self) -> None:
        """Until the body has arrived; raises BodyError if it cannot be had."""
        await self.body.wait()

    @property
    def body_data(self) -> bytes | None:
        return self.body.data

    @property
    def body_path(self) -> str | None:
        return self.body.path

    def discard_body(self) -> None:
        self.body.discard()

    def stream_body(self) -> str | None:
        """ngx.req.socket(): the body is read as it streams in; None, or why
        not (OpenResty's words)."""
        body = self.body
        if body.expected == 0:
            return "no body"
        if body.discarded:
            return "request body discarded"
        body.stream()
        return None

    async def read_body(self) -> bytes:
        """The whole body as bytes once it has arrived (read from its temp file
        if spooled); raises BodyError if it was invalid."""
        await self.body.wait()
        return self.body.read_all()

    async def multipart(self, max_parts: int = 100) -> Multipart:
        """The body parsed as multipart/form-data, once per request.

        Raises BodyError (no body to parse), MultipartError (malformed) or
        OSError (an upload could not be written).
        """
        cached = self._multipart
        if isinstance(cached, Multipart):
            return cached
        if cached is not None:
            raise cached
        await self.body.wait()
        try:
            result = await parse_multipart(self.body, self.param(b"CONTENT_TYPE") or b"", max_parts)
        except MultipartError as exc:
            self._multipart = exc
            raise
        self._multipart = result
        return result
