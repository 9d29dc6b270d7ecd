"""One request as the Lua engine sees it: params, script path, body stream.

The body arrives in STDIN records while the script may already run.  When
it ends is decided here, from what real front servers do:

- CONTENT_LENGTH missing or "0": no body, and no STDIN record may ever come
  (Monkey sends none for a bodyless request), so the body is complete at
  once;
- CONTENT_LENGTH empty (nginx, ``fastcgi_request_buffering off`` and a
  chunked client body): read to the empty STDIN record;
- CONTENT_LENGTH = N: complete after N bytes or at the empty STDIN record.

This module does no I/O itself; the server feeds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


class BodyTooLarge(Exception):
    """The body is larger than ``client_max_body_size``."""


class Request:
    __slots__ = (
        "_body_chunks",
        "_body_done",
        "_body_size",
        "_expected",
        "body_error",
        "max_body_size",
        "params",
        "script_path",
    )

    def __init__(
        self,
        params: Sequence[tuple[bytes, bytes]],
        script_path: str = "",
        max_body_size: int = 1024 * 1024,
    ) -> None:
        self.params = params
        self.script_path = script_path
        self.max_body_size = max_body_size
        self.body_error: Exception | None = None
        self._body_chunks: list[bytes] = []
        self._body_size = 0
        self._body_done: asyncio.Event | None = None
        length = None
        for name, value in params:
            if name == b"CONTENT_LENGTH":
                length = value
                break
        # None: read to the end of STDIN; 0: no body at all.
        self._expected: int | None
        if length is None:
            self._expected = 0
        elif not length.strip():
            self._expected = None
        else:
            try:
                self._expected = int(length)
            except ValueError:
                self._expected = None
                self.body_error = ValueError(f"invalid CONTENT_LENGTH {length!r}")
            else:
                if self._expected < 0:
                    self.body_error = ValueError(f"invalid CONTENT_LENGTH {length!r}")
                elif self._expected > max_body_size:
                    self.body_error = BodyTooLarge(
                        f"CONTENT_LENGTH {self._expected} exceeds {max_body_size}"
                    )

    @property
    def body_complete(self) -> bool:
        return self._expected == 0 or (
            self._expected is not None and self._body_size >= self._expected
        )

    def feed_body(self, data: bytes) -> None:
        """Called by the server for each STDIN record's content."""
        if self.body_complete and self._expected is not None:
            return
        self._body_size += len(data)
        if self._body_size > self.max_body_size:
            if self.body_error is None:
                self.body_error = BodyTooLarge(f"request body exceeds {self.max_body_size} bytes")
            self._body_chunks.clear()
        elif self.body_error is None:
            self._body_chunks.append(data)
        if self.body_complete:
            self._set_done()

    def end_body(self) -> None:
        """Called by the server at the empty STDIN record (or connection end)."""
        short = self._expected is not None and self._body_size < self._expected
        if short and self.body_error is None:
            self.body_error = ValueError(
                f"body ended after {self._body_size} of {self._expected} bytes"
            )
        self._expected = self._body_size
        self._set_done()

    def _set_done(self) -> None:
        if self._body_done is not None:
            self._body_done.set()

    async def read_body(self) -> bytes:
        """The whole body, once it has arrived; raises if it was invalid."""
        if not self.body_complete:
            if self._body_done is None:
                self._body_done = asyncio.Event()
            await self._body_done.wait()
        if self.body_error is not None:
            raise self.body_error
        return b"".join(self._body_chunks)
