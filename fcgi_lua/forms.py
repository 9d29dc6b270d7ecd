"""multipart/form-data bodies, parsed as a stream into fields and temp files.

The parser is python-multipart's ``MultipartParser`` (a state machine fed
bytes, the way our FastCGI codec is).  The body is fed to it in
``READ_CHUNK`` pieces from memory or from its spooled temp file, and the
event loop gets a turn between pieces, so a 100 MB upload never sits in
memory and never holds the worker for long.  Each file part goes straight
into its own temp file (owned by the request's ``Body``, so it is removed
when the request ends unless the script moved it).

A malformed body is the client's fault: ``MultipartError``, which the
script gets as ``nil, err``.  Whatever was already written for a body that
failed is removed at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from fcgi_lua.body import READ_CHUNK, Body

# A form field (a part without a filename) is held in memory: beyond this
# size it is refused rather than letting one field grow a worker without
# bound.  Large content belongs in a file part.
MAX_FIELD_SIZE = 1024 * 1024
# RFC 7578 4.4: a file part of unknown type is application/octet-stream.
DEFAULT_FILE_TYPE = b"application/octet-stream"


class MultipartError(Exception):
    """The body is not a well-formed multipart/form-data body."""


@dataclass(slots=True)
class UploadedFile:
    name: bytes
    filename: bytes
    content_type: bytes
    size: int
    path: str


@dataclass(slots=True)
class Multipart:
    # Field name -> its values in arrival order.
    fields: dict[bytes, list[bytes]] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)
    truncated: bool = False


def multipart_boundary(content_type: bytes) -> bytes:
    """The boundary of a multipart/form-data Content-Type; MultipartError if none."""
    ctype, options = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        shown = content_type.decode("latin-1") or "none"
        raise MultipartError(f"not a multipart/form-data body (Content-Type: {shown})")
    boundary = options.get(b"boundary")
    if not boundary:
        raise MultipartError("no boundary in the multipart/form-data Content-Type")
    return boundary


def _basename(filename: bytes) -> bytes:
    # Browsers send a bare name, old ones a full client path: keep the last
    # component, so the name can never point into a directory.
    return filename.replace(b"\\", b"/").rsplit(b"/", 1)[-1]


class _Collector:
    """python-multipart callbacks that build a ``Multipart``."""

    def __init__(self, body: Body, max_parts: int) -> None:
        self.body = body
        self.max_parts = max_parts
        self.result = Multipart()
        self.ended = False
        self.parts = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_name = b""
        self._header_value = b""
        self._kind = "skip"  # of the current part: "skip", "field" or "file"
        self._name = b""
        self._value: list[bytes] = []
        self._value_size = 0
        self._file: BinaryIO | None = None
        self._upload: UploadedFile | None = None
        self.paths: list[str] = []

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    @property
    def full(self) -> bool:
        return self.max_parts > 0 and self.parts >= self.max_parts

    def on_part_begin(self) -> None:
        self._headers = []
        self._kind = "skip"

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers.append((self._header_name.strip().lower(), self._header_value.strip()))
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        headers = dict(self._headers)
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None or name == b"":
            return  # a part without a field name has nowhere to go: skipped
        if self.full:
            self.result.truncated = True
            return
        self.parts += 1
        self._name = name
        filename = options.get(b"filename")
        if filename is None:
            self._kind = "field"
            self._value = []
            self._value_size = 0
            return
        self._kind = "file"
        self._file, path = self.body.new_temp_file()
        self.paths.append(path)
        self._upload = UploadedFile(
            name=name,
            filename=_basename(filename),
            content_type=headers.get(b"content-type") or DEFAULT_FILE_TYPE,
            size=0,
            path=path,
        )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._kind == "file":
            assert self._file is not None and self._upload is not None
            self._file.write(memoryview(data)[start:end])
            self._upload.size += end - start
        elif self._kind == "field":
            self._value_size += end - start
            if self._value_size > MAX_FIELD_SIZE:
                raise MultipartError(
                    f"form field {self._name.decode('latin-1')!r} is larger than"
                    f" {MAX_FIELD_SIZE} bytes (send large content as a file)"
                )
            self._value.append(data[start:end])

    def on_part_end(self) -> None:
        if self._kind == "file":
            assert self._file is not None and self._upload is not None
            self._file.close()
            self._file = None
            self.result.files.append(self._upload)
            self._upload = None
        elif self._kind == "field":
            self.result.fields.setdefault(self._name, []).append(b"".join(self._value))
            self._value = []
        self._kind = "skip"

    def on_end(self) -> None:
        self.ended = True

    def discard(self) -> None:
        """The parse failed: close and remove every file it created."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for path in self.paths:
            self.body.forget_temp_file(path)
        self.paths = []


async def parse_multipart(body: Body, content_type: bytes, max_parts: int = 100) -> Multipart:
    """Parse the complete ``body``; at most ``max_parts`` named parts (0: no limit).

    Raises MultipartError for a malformed body and OSError when an upload
    cannot be written.
    """
    boundary = multipart_boundary(content_type)
    collector = _Collector(body, max_parts)
    try:
        try:
            parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        except (FormParserError, ValueError) as exc:
            raise MultipartError(f"bad multipart boundary: {exc}") from exc
        for piece in body.chunks(READ_CHUNK):
            try:
                parser.write(piece)
            except FormParserError as exc:
                raise MultipartError(f"bad multipart body: {exc}") from exc
            if collector.ended:
                break
            # Let other requests run between pieces of a large body.
            await asyncio.sleep(0)
        if not collector.ended:
            raise MultipartError("truncated multipart body: no closing boundary")
    except BaseException:
        collector.discard()
        raise
    return collector.result
