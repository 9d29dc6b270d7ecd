"""A request body as it streams in: in memory up to a threshold, then in a
temp file; when it is complete; and every temp file the request owns.

When the body ends is decided here, from what real front servers do:

- CONTENT_LENGTH missing or "0": no body, and no STDIN record may ever come
  (Monkey sends none for a bodyless request), so the body is complete at
  once;
- CONTENT_LENGTH empty (nginx, ``fastcgi_request_buffering off`` and a
  chunked client body): read to the empty STDIN record;
- CONTENT_LENGTH = N: complete after N bytes (bytes beyond are dropped), or
  at the empty STDIN record, which then makes a short body an error.

Storage follows nginx's ``client_body_buffer_size``: a body that fits stays
in memory, a larger one goes to a temp file (mode 0600) under
``client_body_temp_path`` as it arrives, so an upload nobody reads yet
costs disk, not memory.  A body over ``client_max_body_size`` is dropped the
moment it crosses the limit.  ``close()`` removes every temp file the
request owns (the spooled body and the uploads parsed from it); the server
calls it when the request ends, whichever way it ends.

This module never touches a socket.  Its file writes run in the caller's
thread (the event loop), one STDIN record (at most 64 KiB) at a time
through a 64 KiB buffer: a disk that cannot keep up slows the reading of
that connection, which is the back-pressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

# nginx's default is two memory pages (8k on x86-64, 16k on most other
# 64-bit platforms); 16k keeps typical forms in memory everywhere.
DEFAULT_BUFFER_SIZE = 16 * 1024
# nginx's default client_max_body_size.
DEFAULT_MAX_SIZE = 1024 * 1024
# Write buffer of a spooled body: one STDIN record's worth, so spooling
# costs a syscall per 64 KiB and at most 64 KiB of memory per upload.
SPOOL_BUFFER = 64 * 1024
# Chunk size for re-reading a spooled body (multipart parsing): large
# enough to be cheap per chunk, small enough to keep the worker's memory flat.
READ_CHUNK = 256 * 1024

# A body the script streams (ngx.req.socket) is held in memory only between
# its arrival and the script's read: past STREAM_HIGH_WATER unread bytes the
# front server's connection is no longer read (back-pressure), and reading
# resumes below STREAM_LOW_WATER.  Four STDIN records' worth keeps a
# loopback front server busy without letting a slow script hoard memory.
STREAM_HIGH_WATER = 256 * 1024
STREAM_LOW_WATER = 64 * 1024

SPOOL_PREFIX = "fcgi-lua-body-"
UPLOAD_PREFIX = "fcgi-lua-upload-"


class BodyError(Exception):
    """The body cannot be given to the script; ``status`` says what to answer."""

    status = 400


class BadBody(BodyError):
    """The front server sent a body that contradicts its CONTENT_LENGTH."""

    status = 400


class BodyTooLarge(BodyError):
    """The body is larger than ``client_max_body_size``."""

    status = 413


class BodyStorageError(BodyError):
    """The body could not be written to its temp file (our fault: disk, permissions)."""

    status = 500


def parse_content_length(value: bytes | None) -> tuple[int | None, BodyError | None]:
    """CONTENT_LENGTH as (expected length or None for "to the end", error)."""
    if value is None:
        return 0, None
    if not value.strip():
        return None, None
    if value.strip() == b"-1":
        # Caddy 2 sends Go's "unknown length" for a chunked request body:
        # read to the end of STDIN, as for an empty CONTENT_LENGTH.
        return None, None
    try:
        expected = int(value)
    except ValueError:
        return 0, BadBody(f"invalid CONTENT_LENGTH {value!r}")
    if expected < 0:
        return 0, BadBody(f"invalid CONTENT_LENGTH {value!r}")
    return expected, None


class Flow(Protocol):
    """The server's back-pressure on the connection a streamed body comes by."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class Body:
    """One request's body: fed by the server, read by the script."""

    __slots__ = (
        "_built",
        "_chunks",
        "_closed",
        "_done",
        "_live",
        "_owned",
        "_paused",
        "_prefix",
        "_spool",
        "buffer_size",
        "discarded",
        "error",
        "expected",
        "flow",
        "listener",
        "max_size",
        "path",
        "size",
        "streaming",
        "temp_dir",
    )

    def __init__(
        self,
        content_length: bytes | None,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        temp_dir: str | None = None,
    ) -> None:
        self.max_size = max_size
        self.buffer_size = buffer_size
        # Resolved when a file is first needed: most bodies never touch disk.
        self.temp_dir = temp_dir
        self.size = 0
        self.discarded = False
        self.path: str | None = None  # the temp file, once spooled
        self._chunks: list[bytes] = []
        self._spool: BinaryIO | None = None
        self._done: asyncio.Event | None = None
        self._owned: list[str] = []
        self._closed = False
        # the temp file of a body the script builds (ngx.req.append_body)
        self._built: str | None = None
        # streaming (ngx.req.socket): what came and was not read yet, after
        # what had been spooled before the script asked for the stream
        self.streaming = False
        self._live = bytearray()
        self._prefix: BinaryIO | None = None
        self._paused = False
        self.flow: Flow | None = None  # set by the server
        self.listener: Callable[[], None] | None = None  # the stream's reader
        self.expected, self.error = parse_content_length(content_length)
        if self.error is None and self.expected is not None and self.expected > max_size:
            self.error = BodyTooLarge(
                f"client intended to send too large body: {self.expected} bytes"
                f" (client_max_body_size {max_size})"
            )

    # -- the server's side ---------------------------------------------------

    @property
    def complete(self) -> bool:
        return self.expected is not None and self.size >= self.expected

    def feed(self, data: bytes) -> None:
        """The content of one STDIN record."""
        if self._closed or self.complete:
            return
        if self.expected is not None:
            data = data[: self.expected - self.size]
        self.size += len(data)
        if self.error is None and not self.discarded:
            if self.size > self.max_size:
                self._fail(
                    BodyTooLarge(
                        f"client sent too large body: more than {self.max_size} bytes"
                        " (client_max_body_size)"
                    )
                )
            else:
                self._store(data)
        if self.complete:
            self._finish()

    def end(self) -> None:
        """The empty STDIN record (or the connection's end)."""
        if self.expected is not None and self.size < self.expected and self.error is None:
            self._fail(BadBody(f"body ended after {self.size} of {self.expected} bytes"))
        self.expected = self.size
        self._finish()

    def close(self) -> None:
        """The request is over: drop the body and remove every temp file it owns."""
        self._closed = True
        self._chunks = []
        self._close_spool()
        self.drop_built()
        self._end_stream()
        owned, self._owned = self._owned, []
        if self.path is not None:
            owned.append(self.path)
            self.path = None
        for path in owned:
            # An upload the script moved elsewhere is no longer ours.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._wake()

    # -- the script's side ---------------------------------------------------

    @property
    def settled(self) -> bool:
        """Whether wait() returns (or raises) at once."""
        return self.complete or self.discarded or self.error is not None or self._closed

    async def wait(self) -> None:
        """Until the body is complete (or discarded); raises its BodyError."""
        while not self.settled:
            if self._done is None:
                self._done = asyncio.Event()
            self._done.clear()
            await self._done.wait()
        if self.error is not None and not self.discarded:
            raise self.error

    def discard(self) -> None:
        """The script will not read the body: stop storing it, free what was stored."""
        self.discarded = True
        self._chunks = []
        self._close_spool()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None
        self._wake()

    @property
    def data(self) -> bytes | None:
        """The body if it is held in memory (None once spooled or discarded)."""
        if self.path is not None or self.discarded or self._closed:
            return None
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""

    def chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        """The complete body in pieces of at most ``size`` bytes, from memory or file."""
        if self.path is None:
            data = self.data or b""
            for start in range(0, len(data), size):
                yield data[start : start + size]
            return
        with open(self.path, "rb") as handle:
            while piece := handle.read(size):
                yield piece

    def read_all(self) -> bytes:
        """The whole body as one string, from memory or file."""
        return b"".join(self.chunks())

    def stream(self) -> None:
        """The script reads the body as it comes (ngx.req.socket): it is no
        longer stored; what was stored already is read first."""
        self.streaming = True
        self._close_spool()
        if self.path is not None:
            try:
                self._prefix = open(self.path, "rb")  # noqa: SIM115 (kept open while read)
            except OSError as exc:
                self._fail(BodyStorageError(f"cannot read the spooled request body: {exc}"))
                return
            # The open file keeps its bytes; no name is left to clean up.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None
        for chunk in self._chunks:
            self._live += chunk
        self._chunks = []

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of a streamed body that came and were not read
        yet; b"" when none are there (yet: ``ended`` says if more will come)."""
        prefix = self._prefix
        if prefix is not None:
            try:
                data = prefix.read(size)
            except OSError as exc:
                self._fail(BodyStorageError(f"cannot read the spooled request body: {exc}"))
                return b""
            if data:
                return data
            prefix.close()
            self._prefix = None
        live = self._live
        if len(live) <= size:
            data = bytes(live)
            live.clear()
        else:
            data = bytes(live[:size])
            del live[:size]
        if self._paused and len(live) < STREAM_LOW_WATER:
            self._resume()
        return data

    @property
    def ended(self) -> bool:
        """No more bytes will come: the body is complete, or failed, or closed."""
        return self.complete or self.error is not None or self._closed

    def new_temp_file(self, prefix: str = UPLOAD_PREFIX) -> tuple[BinaryIO, str]:
        """A fresh temp file (mode 0600) removed by ``close()``; raises OSError."""
        fd, path = tempfile.mkstemp(prefix=prefix, dir=self.temp_dir or tempfile.gettempdir())
        self._owned.append(path)
        return os.fdopen(fd, "wb", buffering=SPOOL_BUFFER), path

    def forget_temp_file(self, path: str) -> None:
        """Remove one of our temp files now (a failed parse's leftovers)."""
        with contextlib.suppress(ValueError):
            self._owned.remove(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def write_built(self, data: bytes) -> str:
        """ngx.req.append_body / finish_body past the script's buffer: ``data``
        appended to the body the script builds in a temp file of its own
        (made by the first call, removed by ``drop_built`` or ``close``);
        the file's path.  No handle stays open between calls.  Raises OSError."""
        path = self._built
        if path is None:
            handle, path = self.new_temp_file(SPOOL_PREFIX)
            self._built = path
        else:
            handle = open(path, "ab")  # noqa: SIM115 (closed below)
        with handle:
            handle.write(data)
        return path

    def drop_built(self) -> None:
        """ngx.req.init_body / set_body_data: the file the script built is no
        longer the body: remove it now."""
        path, self._built = self._built, None
        if path is not None:
            self.forget_temp_file(path)

    # -- internals -------------------------------------------------------------

    def _store(self, data: bytes) -> None:
        if self.streaming:
            self._live += data
            if len(self._live) > STREAM_HIGH_WATER and not self._paused and self.flow:
                self._paused = True
                self.flow.pause()
            if self.listener is not None:
                self.listener()
            return
        spool = self._spool
        if spool is None:
            fits = self.size <= self.buffer_size and (
                self.expected is None or self.expected <= self.buffer_size
            )
            if fits:
                self._chunks.append(data)
                return
            try:
                fd, self.path = tempfile.mkstemp(
                    prefix=SPOOL_PREFIX, dir=self.temp_dir or tempfile.gettempdir()
                )
                spool = self._spool = os.fdopen(fd, "wb", buffering=SPOOL_BUFFER)
                for chunk in self._chunks:
                    spool.write(chunk)
            except OSError as exc:
                self._fail(BodyStorageError(f"cannot spool the request body: {exc}"))
                return
            self._chunks = []
        try:
            spool.write(data)
        except OSError as exc:
            self._fail(BodyStorageError(f"cannot spool the request body: {exc}"))

    def _finish(self) -> None:
        if self._spool is not None:
            try:
                self._spool.close()  # flushes: the script may open the path now
            except OSError as exc:
                self._spool = None
                self._fail(BodyStorageError(f"cannot spool the request body: {exc}"))
            self._spool = None
        self._wake()

    def _fail(self, error: BodyError) -> None:
        self.error = error
        self._chunks = []
        self._close_spool()
        self._end_stream()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None
        self._wake()

    def _close_spool(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            with contextlib.suppress(OSError):
                spool.close()

    def _end_stream(self) -> None:
        self._live = bytearray()
        prefix, self._prefix = self._prefix, None
        if prefix is not None:
            with contextlib.suppress(OSError):
                prefix.close()
        if self._paused:
            self._resume()  # what is left of STDIN is read and dropped

    def _resume(self) -> None:
        self._paused = False
        if self.flow is not None:
            self.flow.resume()

    def _wake(self) -> None:
        if self._done is not None:
            self._done.set()
        if self.listener is not None:
            self.listener()
