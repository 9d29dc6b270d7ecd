"""What front servers do differently from nginx, and what fcgi-lua does about it.

Owns every deviation from the FastCGI that nginx speaks which fcgi-lua
works around (docs/monkey.md): recognising Monkey; completing Monkey 1.6's
params to what nginx sends; dropping our Content-Length where Monkey
chunks; the last bytes and the FIN leaving together; answering the request
whose params Monkey mis-encoded.  Each workaround says which server needs
it.  This module must never hold state nor do I/O of its own (send_with_fin
uses the caller's socket once), and must cost an nginx request no more
than the one ``from_monkey`` test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping, Sequence, Set

from fcgi_lua.fastcgi import RemoteProtocolError
from fcgi_lua.http import error_response

# Monkey's FastCGI plugin names it in SERVER_SOFTWARE: "Monkey/1.6.9", or
# "Monkey" alone with HideVersion on.
MONKEY_SOFTWARE = b"Monkey"


def from_monkey(params: Mapping[bytes, bytes]) -> bool:
    """Whether the front server is Monkey (its quirks: docs/monkey.md)."""
    return params.get(b"SERVER_SOFTWARE", b"").startswith(MONKEY_SOFTWARE)


def monkey_params(params: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Monkey 1.6's params completed to what nginx's fcgi_lua_params sends.

    Monkey sends REQUEST_URI without the query string (nginx's
    ``$request_uri`` has it), no QUERY_STRING at all when it is empty (CGI
    requires it, even empty: RFC 3875 section 4.1.7), and no DOCUMENT_URI:
    it never splits a PATH_INFO off, so SCRIPT_NAME is the whole decoded
    path, which is what ``$document_uri`` (``ngx.var.uri``) holds.
    """
    out = list(params)
    given = {name for name, _ in out}
    query = b""
    for name, value in out:
        if name == b"QUERY_STRING":
            query = value
            break
    if b"QUERY_STRING" not in given:
        out.append((b"QUERY_STRING", b""))
    if query:
        for i, (name, value) in enumerate(out):
            if name == b"REQUEST_URI" and b"?" not in value:
                out[i] = (name, value + b"?" + query)
    if b"DOCUMENT_URI" not in given:
        for name, value in out:
            if name == b"SCRIPT_NAME":
                out.append((b"DOCUMENT_URI", value))
                break
    return out


def without_content_length(response: bytes) -> bytes:
    """``response`` (header block first) with its Content-Length lines removed.

    For Monkey 1.6 (docs/monkey.md): it sends every FastCGI response to an
    HTTP/1.1 client with ``Transfer-Encoding: chunked`` and copies our
    header lines verbatim, so a Content-Length of ours would make a message
    with both framings, which RFC 9112 (section 6.1) forbids.
    """
    end = response.find(b"\r\n\r\n")
    if end < 0 or b"content-length:" not in response[:end].lower():
        return response
    lines = [
        line
        for line in response[:end].split(b"\r\n")
        if not line.lower().startswith(b"content-length:")
    ]
    if not lines:
        return response[end + 2 :]
    return b"\r\n".join(lines) + response[end:]


def protocol_error_answer(
    exc: RemoteProtocolError, active: Set[int], dispatched: Set[int]
) -> tuple[int, bytes] | None:
    """The request to tell about a protocol error, and its CGI response;
    None when no request can be told (the connection just closes).

    ``active``: the requests the codec knows; ``dispatched``: those whose
    params ended.  Garbage in the params of the one request not yet
    running (Monkey 1.6 miscounts any 127-byte param: docs/monkey.md): a
    400 beats leaving its client waiting ~25 s.  Without a Content-Length:
    which front server this is may not be known yet, and Monkey chunks.
    """
    request_id, http_status = exc.request_id, exc.http_status
    if not (http_status and request_id is not None and request_id in active):
        waiting = active - dispatched
        if len(waiting) != 1:
            return None
        request_id, http_status = min(waiting), 400
    return request_id, without_content_length(error_response(http_status))


def send_with_fin(transport: asyncio.WriteTransport, data: bytes, family: int = 0) -> bool:
    """Send ``data`` and our FIN together, if the socket takes it all now.

    uvloop's write_eof() only queues the shutdown for the loop's next I/O
    pass.  Monkey 1.6 ends the HTTP request when it reads our EOF, not at
    END_REQUEST: a keep-alive client that sends its next request in that gap
    has its connection closed by Monkey without an answer (docs/monkey.md).
    So the last bytes and the FIN leave back to back, corked on TCP so they
    travel in one segment.  False (nothing sent) when that cannot be done
    here: the caller falls back to write() + write_eof().  ``family``: the
    socket's address family if the caller knows it (its listener's).
    """
    if transport.get_write_buffer_size():
        return False  # earlier bytes still queued: they must go first
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    family = family or sock.family
    try:
        # Family, type and protocol given: socket() would otherwise ask the
        # kernel for the last two (two getsockopt per connection).
        raw = socket.socket(family, socket.SOCK_STREAM, 0, sock.fileno())
    except OSError:
        return False
    try:
        tcp = family != socket.AF_UNIX
        try:
            if tcp:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            sent = raw.send(data) if data else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            return False  # nothing sent: the transport meets the error itself
        if sent < len(data):
            if tcp:
                with contextlib.suppress(OSError):
                    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            if not sent:
                return False
            transport.write(data[sent:])
            transport.write_eof()
            return True
        with contextlib.suppress(OSError):  # the peer is gone: nothing to finish
            raw.shutdown(socket.SHUT_WR)  # also pushes the corked bytes out
        return True
    finally:
        raw.detach()
