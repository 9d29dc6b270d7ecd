"""What the body tests share: POSTs through nginx (whole or streamed),
multipart bodies built by hand, temp-file and worker-memory probes."""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from .e2e_clients import Response
from .e2e_stack import Stack

BOUNDARY = "----e2eBoundaryZx81"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
FORM = "application/x-www-form-urlencoded"
MB = 1024 * 1024


def post(
    base: str,
    path: str,
    body: bytes | Iterable[bytes],
    ctype: str = FORM,
    *,
    length: int | None = None,
    chunked: bool = False,
    timeout: float = 60.0,
) -> Response:
    """POST ``body`` (bytes, or pieces with ``length`` or ``chunked``)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        conn.putheader("Content-Type", ctype)
        if isinstance(body, bytes):
            length = len(body)
            body = [body]
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        else:
            conn.putheader("Content-Length", str(length))
        conn.endheaders()
        for piece in body:
            if chunked:
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                conn.send(piece)
        if chunked:
            conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], data)
    finally:
        conn.close()


def part_head(name: str, filename: str | None = None, ctype: str | None = None) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"'
    if filename is not None:
        head += f'; filename="{filename}"'
    head += "\r\n"
    if ctype is not None:
        head += f"Content-Type: {ctype}\r\n"
    return (head + "\r\n").encode()


def field(name: str, value: str) -> bytes:
    return part_head(name) + value.encode() + b"\r\n"


def file_part(name: str, filename: str, data: bytes, ctype: str) -> bytes:
    return part_head(name, filename, ctype) + data + b"\r\n"


END = f"--{BOUNDARY}--\r\n".encode()


def temp_files(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def wait_empty(path: Path, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := temp_files(path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


def serving_pid(e2e: Stack, name: str) -> int:
    pid = e2e.service(name).proc.pid
    # With a prefork master, the worker (its only child) is what serves.
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if len(kids) == 1 else pid
