"""Clients the end-to-end tests talk through: plain HTTP to nginx, raw
sockets where timing or malformed requests matter, and a minimal FastCGI
client that reaches fcgi-lua without nginx in between.

The standard library and the tests' own FastCGI encoder
(tests/helpers/fastcgi.py, written independently of fcgi_lua.fastcgi), on
purpose: the e2e suite must not depend on the code it tests (our own
FastCGI codec) nor on new packages.
"""

from __future__ import annotations

import http.client
import socket
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.helpers.fastcgi import pairs, record, stream


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)  # names lower-cased
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[-1] if values else None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http_request(
    base: str,
    path: str,
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> Response:
    """One request on a fresh connection; ``path`` is sent exactly as given."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers or []:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], data)
    finally:
        conn.close()


def raw_http(base: str, request: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server sent until it closed."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def parse_raw_response(raw: bytes) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return Response(status, headers, body)


@dataclass(slots=True)
class Arrival:
    """When each piece of a streamed response reached the client."""

    started: float
    chunks: list[tuple[float, bytes]] = field(default_factory=list)

    def first_time(self, marker: bytes) -> float:
        """Seconds from the request until ``marker`` had been received."""
        seen = b""
        for when, data in self.chunks:
            seen += data
            if marker in seen:
                return when - self.started
        raise AssertionError(f"{marker!r} never arrived; got {seen!r}")

    @property
    def end(self) -> float:
        return (self.chunks[-1][0] if self.chunks else self.started) - self.started

    @property
    def data(self) -> bytes:
        return b"".join(data for _, data in self.chunks)


def timed_get(base: str, path: str, *, timeout: float = 10.0) -> Arrival:
    """GET with ``Connection: close`` recording the arrival time of each read."""
    url = urlsplit(base)
    request = (f"GET {path} HTTP/1.1\r\nHost: {url.hostname}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        arrival = Arrival(time.monotonic())
        sock.sendall(request)
        while True:
            data = sock.recv(65536)
            if not data:
                break
            arrival.chunks.append((time.monotonic(), data))
    return arrival


# -- FastCGI, straight to the responder ------------------------------------

FCGI_BEGIN_REQUEST = 1
FCGI_END_REQUEST = 3
FCGI_PARAMS = 4
FCGI_STDIN = 5
FCGI_STDOUT = 6
FCGI_STDERR = 7
FCGI_RESPONDER = 1


def encode_params(params: dict[str, str | bytes]) -> bytes:
    return pairs(
        (name.encode("latin-1"), value if isinstance(value, bytes) else value.encode("utf-8"))
        for name, value in params.items()
    )


@dataclass(frozen=True, slots=True)
class FastCGIResult:
    response: Response
    stderr: bytes
    app_status: int


def fastcgi_request(
    address: str | tuple[str, int],
    params: dict[str, str | bytes],
    stdin: bytes = b"",
    *,
    timeout: float = 10.0,
) -> FastCGIResult:
    """One FCGI_RESPONDER request on its own connection (no FCGI_KEEP_CONN)."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    with sock:
        sock.connect(address)
        request_id = 1
        sock.sendall(
            record(FCGI_BEGIN_REQUEST, request_id, struct.pack(">HB5x", FCGI_RESPONDER, 0))
            + stream(FCGI_PARAMS, request_id, encode_params(params), aligned=True)
            + stream(FCGI_STDIN, request_id, stdin, aligned=True)
        )
        buffer = b""
        stdout, stderr = [], []
        while True:
            while len(buffer) >= 8:
                _, rtype, _, length, padding = struct.unpack(">BBHHBx", buffer[:8])
                if len(buffer) < 8 + length + padding:
                    break
                content = buffer[8 : 8 + length]
                buffer = buffer[8 + length + padding :]
                if rtype == FCGI_STDOUT:
                    stdout.append(content)
                elif rtype == FCGI_STDERR:
                    stderr.append(content)
                elif rtype == FCGI_END_REQUEST:
                    app_status = struct.unpack(">I", content[:4])[0]
                    return FastCGIResult(_parse_cgi(b"".join(stdout)), b"".join(stderr), app_status)
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(
                    f"connection closed before FCGI_END_REQUEST; stdout so far: "
                    f"{b''.join(stdout)!r}"
                )
            buffer += data


def _parse_cgi(output: bytes) -> Response:
    """A CGI response (RFC 3875 section 6): header lines, blank line, body."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if found:
            break
    else:
        raise AssertionError(f"no CGI header block in {output[:200]!r}")
    status = 200
    headers = []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "status":
            status = int(value.split()[0])
        else:
            headers.append((name, value))
    return Response(status, headers, body)
