"""Script resolution: confined to the root, allowed extensions, 404 / 403."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fcgi_lua.scripts import ScriptRejected, ScriptResolver


@pytest.fixture
def root(tmp_path: Path) -> Path:
    docroot = tmp_path / "www"
    (docroot / "sub").mkdir(parents=True)
    (docroot / "index.lua").write_text("ngx.say('hi')")
    (docroot / "sub" / "page.lua").write_text("ngx.say('sub')")
    (docroot / "notes.txt").write_text("secret")
    (tmp_path / "outside.lua").write_text("ngx.say('outside')")
    os.symlink(tmp_path / "outside.lua", docroot / "escape.lua")
    os.symlink(docroot / "notes.txt", docroot / "txt.lua")
    os.symlink(docroot / "index.lua", docroot / "alias.lua")
    (docroot / "dir.lua").mkdir()
    return docroot


def resolve(root: Path, **params: bytes) -> str:
    resolver = ScriptResolver(str(root), [".lua"])
    return resolver.resolve({k.encode(): v for k, v in params.items()})


def rejected(root: Path, **params: bytes) -> ScriptRejected:
    with pytest.raises(ScriptRejected) as info:
        resolve(root, **params)
    return info.value


def test_script_filename(root: Path) -> None:
    assert resolve(root, SCRIPT_FILENAME=f"{root}/index.lua".encode()) == f"{root}/index.lua"


def test_document_root_plus_script_name(root: Path) -> None:
    found = resolve(root, DOCUMENT_ROOT=str(root).encode(), SCRIPT_NAME=b"/sub/page.lua")
    assert found == f"{root}/sub/page.lua"


def test_symlink_inside_root_is_followed(root: Path) -> None:
    assert resolve(root, SCRIPT_FILENAME=f"{root}/alias.lua".encode()) == f"{root}/index.lua"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("{root}/missing.lua", 404),
        ("{root}/dir.lua", 404),
        ("{root}/notes.txt", 403),
        ("{root}/../outside.lua", 403),
        ("{root}/sub/../../outside.lua", 403),
        ("{root}/escape.lua", 403),
        ("{root}/txt.lua", 403),
        ("/etc/passwd", 403),
        ("/nonexistent/x.lua", 404),
    ],
)
def test_rejections(root: Path, path: str, status: int) -> None:
    error = rejected(root, SCRIPT_FILENAME=path.format(root=root).encode())
    assert error.status == status


def test_nul_byte(root: Path) -> None:
    assert rejected(root, SCRIPT_FILENAME=f"{root}/index.lua\0.lua".encode()).status == 403


def test_no_script_params(root: Path) -> None:
    assert rejected(root).status == 404


@pytest.mark.parametrize(
    "prefix",
    [
        "proxy:fcgi://localhost",  # SetHandler "proxy:unix:/sock|fcgi://localhost"
        "proxy:fcgi://127.0.0.1:9000",  # SetHandler "proxy:fcgi://127.0.0.1:9000"
        "proxy:balancer://fcgi-lua-pool",  # a mod_proxy_balancer pool
    ],
)
def test_apache_proxy_prefix_is_dropped(root: Path, prefix: str) -> None:
    # mod_proxy_fcgi's default (ProxyFCGIBackendType FPM) SCRIPT_FILENAME
    found = resolve(root, SCRIPT_FILENAME=f"{prefix}{root}/sub/page.lua".encode())
    assert found == f"{root}/sub/page.lua"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("proxy:fcgi://localhost{root}/../outside.lua", 403),
        ("proxy:fcgi://localhost{root}/escape.lua", 403),
        ("proxy:fcgi://localhost{root}/missing.lua", 404),
        ("proxy:fcgi://localhost/etc/passwd", 403),
        ("proxy:fcgi://localhost", 403),  # no path at all
        ("proxy:http://localhost{root}/index.lua", 404),  # not Apache's FastCGI prefix
    ],
)
def test_apache_proxy_prefix_stays_confined(root: Path, path: str, status: int) -> None:
    error = rejected(root, SCRIPT_FILENAME=path.format(root=root).encode())
    assert error.status == status
