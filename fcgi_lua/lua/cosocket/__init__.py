"""Cosockets: the TCP and UDP sockets behind ``ngx.socket.*``, on the worker's loop.

This package owns every connection a script opens, the worker's keepalive
pools and every socket timeout.  ``socket.lua`` holds the Lua side (the
socket objects, argument checks, OpenResty's return conventions); it calls
the synchronous methods of ``Cosockets`` directly (one crossing each) and
only yields to the driver when an operation must wait: it yields the
connection, ``perform`` awaits it, and the coroutine is resumed with the
result.  So a pooled connect, a send that fits the transport's buffer and a
receive whose bytes already arrived never yield at all.

What it must never do: block the loop (names resolve through the loop's
``getaddrinfo``), poll (waiting operations are completed from
``data_received``), or buffer without bound (reading pauses past a
high-water mark unless a script's own read asked for more).

One concern a module:

- ``handles``: the handle registry Lua indexes, the request's ``Owner``,
  ``PENDING``, timeouts and error text;
- ``resolver``: names to addresses, with nginx's resolver errors;
- ``reading``: the read modes, the receiveuntil matcher, the pending read,
  ``ngx.req.socket()``'s body reader;
- ``tcp``, ``udp``, ``tls``, ``pool``: each kind of socket, the handshake,
  the keepalive pools;
- ``dispatch``: ``Cosockets`` (what socket.lua calls), ``perform`` (the
  driver's "cosocket" command) and ``install``.

Semantics and error strings follow lua-nginx-module 0.10.23
(``ngx_http_lua_socket_tcp.c``, ``ngx_http_lua_socket_udp.c``).
"""

from fcgi_lua.lua.cosocket.dispatch import Cosockets, install, perform
from fcgi_lua.lua.cosocket.handles import PENDING
from fcgi_lua.lua.cosocket.reading import UNTIL, UntilState, open_body_reader, take

__all__ = [
    "PENDING",
    "UNTIL",
    "Cosockets",
    "UntilState",
    "install",
    "open_body_reader",
    "perform",
    "take",
]
