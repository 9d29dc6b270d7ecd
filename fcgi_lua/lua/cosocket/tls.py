"""TLS on a stream cosocket: ``tcpsock:sslhandshake``.

This module owns the client contexts (verifying or not) and ``Handshake``,
the pending upgrade of a connection, with OpenResty's error strings.

What it must never do: leave a connection whose handshake failed open
(it is shut down) or build a context per handshake (``Cosockets`` keeps
one of each kind).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any

from fcgi_lua.lua.cosocket.handles import register

if TYPE_CHECKING:
    from fcgi_lua.lua.cosocket.tcp import TcpConnection


def client_context(verify: bool) -> ssl.SSLContext:
    if verify:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Handshake:
    """A pending sslhandshake on a connection (awaited by ``perform``)."""

    __slots__ = ("conn", "failure", "handle", "server_name", "timeout", "verify")

    def __init__(self, conn: TcpConnection, server_name: str | None, verify: bool, timeout: float):
        self.handle = register(self)
        self.conn = conn
        self.server_name = server_name
        self.verify = verify
        self.timeout = timeout
        self.failure: tuple[str, bytes | None] = ("handshake failed", None)

    async def wait(self) -> Any:
        conn = self.conn
        transport = conn.transport
        if transport is None or not conn.usable():
            self.failure = ("closed", None)
            return None
        loop = self.conn.manager.loop()
        context = self.conn.manager.tls_context(self.verify)
        try:
            new = await asyncio.wait_for(
                loop.start_tls(transport, conn, context, server_hostname=self.server_name or None),
                self.timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            # OpenResty: "<X509 verify code>: <message>", and its own
            # wording for a name mismatch
            if exc.verify_code == 62:
                self.failure = ("certificate host mismatch", None)
            else:
                self.failure = (f"{exc.verify_code}: {exc.verify_message}", None)
        except TimeoutError:
            self.failure = ("timeout", None)
        except (ssl.SSLError, OSError, ConnectionError):
            self.failure = ("handshake failed", None)
        else:
            if new is None:
                self.failure = ("handshake failed", None)
            else:
                conn.transport = new
                return True
        conn.shutdown()
        return None
