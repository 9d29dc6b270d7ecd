"""Host names to addresses for cosockets, with nginx's resolver errors.

This module owns ``resolve``: an IP literal as it is, a name through the
loop's ``getaddrinfo``, one address picked at random as nginx does, and
the text of nginx's resolver errors.

What it must never do: block the loop (no ``socket.getaddrinfo``), or
cache an answer (the system resolver decides).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from typing import Any


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve_error(host: str, exc: socket.gaierror) -> str:
    # The shape of nginx's resolver errors ("%s could not be resolved
    # (%d: %s)"), with its codes: 3 Host not found, 2 Server failure.
    if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
        return f"{host} could not be resolved (3: Host not found)"
    if exc.errno == socket.EAI_AGAIN:
        return f"{host} could not be resolved (110: Operation timed out)"
    return f"{host} could not be resolved (2: Server failure)"


async def resolve(
    host: str, port: int, kind: socket.SocketKind
) -> tuple[socket.AddressFamily, Any] | str:
    """One address of ``host`` (picked at random, like nginx), or an error."""
    if _is_ip(host):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return family, (host, port)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=kind)
    except socket.gaierror as exc:
        return _resolve_error(host, exc)
    if not infos:
        return f"{host} could not be resolved (3: Host not found)"
    family, _, _, _, address = random.choice(infos)
    return family, address
