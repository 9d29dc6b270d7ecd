"""HTTP facts shared by the server and the Lua engine: reason phrases,
default error pages and the CGI header block.

This module owns the *shape* of a CGI response (RFC 3875 section 6); it
never does I/O.  ``Status:`` always comes first in the header block, since
Monkey only honours it there.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

SERVER_TOKEN = b"fcgi-lua"

# nginx knows a few codes Python's HTTPStatus does not; keep the reason
# phrases OpenResty emits so responses compare equal through nginx.
_EXTRA_REASONS = {
    444: "No Response",
    494: "Request Header Too Large",
    495: "SSL Certificate Error",
    496: "SSL Certificate Required",
    497: "HTTP Request Sent to HTTPS Port",
    499: "Client Closed Request",
}


def reason_phrase(status: int) -> str:
    """The reason phrase for ``status``, or "Unknown" for codes nobody named."""
    if status in _EXTRA_REASONS:
        return _EXTRA_REASONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def error_page(status: int) -> bytes:
    """The default HTML body for an error status, shaped like nginx's own."""
    title = f"{status} {reason_phrase(status)}".encode("ascii")
    return (
        b"<html>\r\n<head><title>" + title + b"</title></head>\r\n"
        b"<body>\r\n<center><h1>" + title + b"</h1></center>\r\n"
        b"<hr><center>" + SERVER_TOKEN + b"</center>\r\n</body>\r\n</html>\r\n"
    )


def header_block(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A CGI header block: ``Status:`` first, the headers, a blank line."""
    parts = [b"Status: %d %s\r\n" % (status, reason_phrase(status).encode("ascii"))]
    parts.extend(name + b": " + value + b"\r\n" for name, value in headers)
    parts.append(b"\r\n")
    return b"".join(parts)


def error_response(status: int, *, head: bool = False, body: bytes | None = None) -> bytes:
    """A whole CGI response for an error: header block and default page."""
    if body is None:
        body = error_page(status)
    block = header_block(
        status,
        [(b"Content-Type", b"text/html"), (b"Content-Length", str(len(body)).encode())],
    )
    return block if head else block + body
