"""The listening sockets: bind them, describe them.

Owns turning ``listen`` addresses into bound, listening, non-blocking
sockets (TCP with SO_REUSEADDR; Unix with its mode and owner, replacing a
stale socket file and nothing else), and their names in logs.  A prefork
master binds once and its workers inherit the sockets.  This module must
never accept connections nor know FastCGI.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import socket
import stat
import time

from fcgi_lua.config import Config, parse_listen


class ListenError(OSError):
    """A listen address cannot be bound; the message names the address and,
    where it can, why ("the directory /run/x does not exist")."""

    def __str__(self) -> str:  # the sentence, not "[Errno 2] ..."
        return str(self.strerror)


def listen_error_text(exc: OSError) -> str:
    """The error log's line for a failure to listen."""
    return str(exc) if isinstance(exc, ListenError) else f"cannot listen: {exc}"


def bind_all(config: Config) -> list[socket.socket]:
    """Bind every ``listen`` address once (a prefork master shares them);
    ListenError names the address that failed."""
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
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ListenError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from exc
    return sock


def describe_socket(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_unix(path: str, mode: int, owner: str = "", group: str = "") -> socket.socket:
    """Bind a Unix socket, replacing a stale socket file but nothing else;
    ``owner``/``group`` (names or ids, "" to keep) are given to the file.
    Raises ListenError, naming the path and what to do about it."""
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    step = "bind"
    try:
        sock.bind(path)
        step = "chmod"
        os.chmod(path, mode)
        if owner or group:
            step = "chown"
            os.chown(path, _user_id(owner), _group_id(group))
    except KeyError as exc:
        sock.close()
        raise ListenError(
            errno.EINVAL,
            f"cannot listen on unix:{path}: unknown user or group "
            f"(socket_owner {owner!r}, socket_group {group!r})",
        ) from exc
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, _unix_bind_error(path, step, exc, owner, group)) from exc
    return sock


def _unix_bind_error(path: str, step: str, exc: OSError, owner: str, group: str) -> str:
    """Why a Unix socket could not be made, in words that name the path."""
    what = f"cannot listen on unix:{path}: {exc.strerror}"
    directory = os.path.dirname(os.path.abspath(path))
    if step == "chown":
        return (
            f"{what} (giving it socket_owner {owner!r} / socket_group {group!r} "
            "needs root, or the owner's own group)"
        )
    if step == "chmod":
        return f"{what} (setting its mode, socket_mode)"
    if exc.errno == errno.ENOENT and not os.path.isdir(directory):
        return f"{what} (the directory {directory} does not exist)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        if exc.errno == errno.EROFS:
            return f"{what} (the directory {directory} is on a read-only file system)"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"{what} ({_user_name()} may not create files in {directory})"
        return f"{what} (the file system of {directory} does not take sockets)"
    if exc.errno == errno.EADDRINUSE:
        kind = "a directory" if os.path.isdir(path) else "a file that is not a socket"
        return f"{what} ({kind} is there; fcgi-lua leaves it alone)"
    return what


def _user_name() -> str:
    try:
        return f"user {pwd.getpwuid(os.getuid()).pw_name}"
    except KeyError:
        return f"uid {os.getuid()}"


# How long a socket file that still answers may take to go stale: the
# workers of a master killed with SIGKILL notice within a heartbeat
# (workers.MasterWatch) and then close their listening sockets, so a
# supervisor that restarts fcgi-lua at once waits for them, not fails.
STALE_SOCKET_WAIT = 3.0


def remove_stale_socket(path: str, wait: float | None = None) -> None:
    """Unlink the socket file at ``path`` if nobody listens on it (left by
    a process that died without removing it, e.g. a master killed with
    SIGKILL); anything else stays.

    Whether anybody listens is asked by connecting: refused means stale.
    A socket that accepts for ``wait`` seconds is another server's:
    OSError(EADDRINUSE), never an unlink (that would steal its address
    and leave it serving nobody).  So is one that cannot be probed (no
    permission, a full backlog).  A file that is not a socket is left for
    bind() to refuse."""
    deadline = time.monotonic() + (STALE_SOCKET_WAIT if wait is None else wait)
    while True:
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                return
        except FileNotFoundError:
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        except FileNotFoundError:
            return
        except BlockingIOError as exc:  # a full backlog: somebody listens
            raise ListenError(
                errno.EADDRINUSE,
                f"cannot listen on unix:{path}: another process is listening on it",
            ) from exc
        except OSError as exc:
            raise ListenError(
                errno.EADDRINUSE,
                f"cannot listen on unix:{path}: a socket is there and cannot be probed ({exc}); "
                "is another server listening on it?",
            ) from exc
        finally:
            probe.close()
        if time.monotonic() >= deadline:
            raise ListenError(
                errno.EADDRINUSE,
                f"cannot listen on unix:{path}: another process is listening on it",
            )
        time.sleep(0.1)


def _user_id(owner: str) -> int:
    if not owner:
        return -1
    return int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid


def _group_id(group: str) -> int:
    if not group:
        return -1
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
