"""multipart/form-data bodies for the tests, built by hand (not by the
parser under test)."""

from __future__ import annotations

BOUNDARY = b"----fcgiluaBoundary7MA4YWxk"
CTYPE = b"multipart/form-data; boundary=" + BOUNDARY


def part(
    name: bytes, value: bytes, filename: bytes | None = None, ctype: bytes | None = None
) -> bytes:
    disposition = b'Content-Disposition: form-data; name="' + name + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    head = disposition + b"\r\n"
    if ctype is not None:
        head += b"Content-Type: " + ctype + b"\r\n"
    return b"--" + BOUNDARY + b"\r\n" + head + b"\r\n" + value + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"
