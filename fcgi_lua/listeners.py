"""The listening sockets: bind them, describe them.

Owns turning ``listen`` addresses into bound, listening, non-blocking
sockets (TCP with SO_REUSEADDR; Unix with its mode and owner, replacing a
stale socket file and nothing else), and their names in logs.  A prefork
master binds once and its workers inherit the sockets.  This module must
never accept connections nor know FastCGI.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat

from fcgi_lua.config import Config, parse_listen


def bind_all(config: Config) -> list[socket.socket]:
    """Bind every ``listen`` address once (a prefork master shares them)."""
    sockets = []
    try:
        for address in config.listen:
            kind, where = parse_listen(address)
            if kind == "unix":
                owner, group = config.socket_owner, config.socket_group
                sockets.append(bind_unix(str(where), config.socket_mode, owner, group))
            else:
                sockets.append(bind_tcp(kind, int(where)))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    for sock in sockets:
        sock.listen(config.backlog)
        sock.setblocking(False)
    return sockets


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind {host}:{port}: {exc.strerror}") from exc
    return sock


def describe_socket(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_unix(path: str, mode: int, owner: str = "", group: str = "") -> socket.socket:
    """Bind a Unix socket, replacing a stale socket file but nothing else;
    ``owner``/``group`` (names or ids, "" to keep) are given to the file."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        if owner or group:
            os.chown(path, _user_id(owner), _group_id(group))
    except (OSError, KeyError) as exc:
        sock.close()
        if isinstance(exc, KeyError):
            raise OSError(errno.EINVAL, f"cannot chown {path}: unknown user or group") from exc
        raise
    return sock


def _user_id(owner: str) -> int:
    if not owner:
        return -1
    return int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid


def _group_id(group: str) -> int:
    if not group:
        return -1
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
