"""The access log (``access_log``): one line per request, nginx-like.

    127.0.0.1 - - [27/Nov/2026:09:00:00 +0100] "GET /x.lua?a=1 HTTP/1.1" 200 154 0.004 "/srv/x.lua"

remote address, time, request line, status, bytes sent to the front server
(CGI header block and body), seconds from dispatch to the last byte, and
the script ("-" when none ran).  Client-supplied bytes are escaped the way
nginx escapes them (``"``, ``\\``, control and non-ASCII bytes as ``\\xHH``),
so a request cannot forge a line.

Lines are buffered and written when the buffer fills or at the next flush
(once a second, and when the worker stops), like nginx's ``access_log ...
buffer= flush=``: one write per request would cost more than the request.
The file is held by a ``logging.FileHandler`` on the ``fcgi_lua.access``
logger, so SIGUSR1 (``workers.reopen_log_files``) reopens it with the rest.
"""

from __future__ import annotations

import logging
import re
import time

LOGGER_NAME = "fcgi_lua.access"

_UNSAFE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')


def _escape_byte(match: re.Match[bytes]) -> bytes:
    return b"\\x%02X" % match.group()[0]


def escape(value: bytes) -> str:
    if _UNSAFE.search(value) is not None:
        value = _UNSAFE.sub(_escape_byte, value)
    return value.decode("ascii")


class AccessLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self.handler = logging.FileHandler(path, encoding="ascii")
        logger = logging.getLogger(LOGGER_NAME)
        logger.propagate = False
        logger.handlers[:] = [self.handler]
        self._second = -1
        self._stamp = ""

    def write(
        self,
        params: dict[bytes, bytes],
        status: int,
        sent: int,
        seconds: float,
        script: str,
    ) -> None:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
        get = params.get
        line = '%s - - [%s] "%s %s %s" %d %d %.3f "%s"\n' % (  # noqa: UP031 - the fastest here
            escape(get(b"REMOTE_ADDR", b"-")),
            self._stamp,
            escape(get(b"REQUEST_METHOD", b"-")),
            escape(get(b"REQUEST_URI") or get(b"SCRIPT_NAME", b"-")),
            escape(get(b"SERVER_PROTOCOL", b"-")),
            status,
            sent,
            seconds,
            escape(script.encode("utf-8", "surrogateescape")) if script else "-",
        )
        stream = self.handler.stream
        if stream is not None:
            stream.write(line)

    def flush(self) -> None:
        self.handler.flush()

    def close(self) -> None:
        self.handler.close()
        logger = logging.getLogger(LOGGER_NAME)
        if self.handler in logger.handlers:
            logger.removeHandler(self.handler)
