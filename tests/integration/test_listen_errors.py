"""A listen address that cannot be bound: the error names it and says why."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fcgi_lua.listeners import ListenError, _unix_bind_error, bind_tcp, bind_unix


def serve(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "fcgi_lua", "serve", *args],
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_socket_in_a_missing_directory_names_path_and_directory(
    tmp_path: Path, workers: str
) -> None:
    path = tmp_path / "missing" / "dir" / "fcgi.sock"
    result = serve("--root", str(tmp_path), "--workers", workers, "--listen", f"unix:{path}")
    assert result.returncode == 1
    expected = (
        f"cannot listen on unix:{path}: No such file or directory "
        f"(the directory {path.parent} does not exist)"
    )
    assert expected.encode() in result.stderr, result.stderr
    assert b"[Errno" not in result.stderr


def test_unix_bind_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ListenError) as raised:
        bind_unix(str(tmp_path / "no" / "s.sock"), 0o600)
    assert raised.value.errno == errno.ENOENT
    assert str(raised.value).startswith(f"cannot listen on unix:{tmp_path}/no/s.sock: ")
    with pytest.raises(ListenError, match=r"a directory is there"):
        bind_unix(str(tmp_path), 0o600)
    with pytest.raises(ListenError, match=r"unix:.*unknown user or group"):
        bind_unix(str(tmp_path / "u.sock"), 0o600, owner="no-such-user-fcgi-lua")


def test_permission_errors_say_who_may_not_write_where(tmp_path: Path) -> None:
    # root may write anywhere: the hint is checked on the error as bind() gives it
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    path = str(locked / "s.sock")
    exc = OSError(errno.EACCES, os.strerror(errno.EACCES))
    text = _unix_bind_error(path, "bind", exc, "", "")
    assert text.startswith(f"cannot listen on unix:{path}: Permission denied (")
    if os.geteuid() != 0:
        assert f"may not create files in {locked})" in text
        with pytest.raises(ListenError, match=r"Permission denied \(user .* may not create"):
            bind_unix(path, 0o600)
    exc = OSError(errno.EPERM, os.strerror(errno.EPERM))
    text = _unix_bind_error(path, "chown", exc, "www-data", "")
    assert text.startswith(f"cannot listen on unix:{path}: Operation not permitted (")
    assert "socket_owner 'www-data'" in text


def test_tcp_address_in_use_names_the_address() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ListenError) as raised:
            bind_tcp("127.0.0.1", port)
        assert str(raised.value) == f"cannot listen on 127.0.0.1:{port}: Address already in use"
    finally:
        taken.close()
