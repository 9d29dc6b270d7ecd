"""Config: defaults, TOML, CLI overrides, and errors that name file and key."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from fcgi_lua.config import (
    OPTIONS,
    Config,
    ConfigError,
    coerce,
    default_workers,
    load,
    parse_listen,
    parse_size,
)
from fcgi_lua.lua import DEFAULT_RUNTIME


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "fcgi-lua.toml"
    path.write_text(text)
    return str(path)


def test_defaults_need_only_a_root(tmp_path: Path) -> None:
    config = load(None, {"root": str(tmp_path)})
    assert config.listen == ["127.0.0.1:9000"]
    assert config.workers == default_workers()
    assert config.recompile == "mtime"
    assert config.lua_runtime  # filled with the measured default


def test_default_workers_are_the_cpus_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the affinity mask (taskset, a container's cpuset), not every CPU of the host
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_workers() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(1000)), raising=False)
    assert default_workers() == 256  # the most `workers` accepts
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS
    assert default_workers() == 64
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_workers() == 1


def test_toml_then_cli_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'root = "{tmp_path}"\nlisten = ["unix:/tmp/x.sock"]\ndebug = true\n'
        'socket_mode = "0660"\nclient_max_body_size = "8k"\n',
    )
    config = load(path, {"listen": ["127.0.0.1:9100"]})
    assert config.listen == ["127.0.0.1:9100"]
    assert config.debug is True
    assert config.socket_mode == 0o660
    assert config.client_max_body_size == 8192


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense = 1\n", "unknown key 'nonsense'"),
        ('debug = "yes"\n', "debug: expected true or false"),
        ('recompile = "sometimes"\n', "recompile: must be one of mtime, always, never"),
        ('listen = ["nowhere"]\n', "listen: 'nowhere': expected unix:/path or host:port"),
        ("workers = 0\n", "workers: must be between 1 and 256"),
        ("max_requests = -1\n", "max_requests: must be >= 0"),
        ('lua_runtime = "python"\n', "lua_runtime: must be one of"),
        ("max_reqs = 0\n", "max_reqs: must be > 0"),
        ('root = "/no/such/dir"\n', "root: is not a directory"),
        ("debug = \n", "not valid TOML"),
        # each says what it expected, in TOML's spelling, never a traceback
        ("workers = [2]\n", "workers: expected a whole number (got [2])"),
        ("[workers]\ncount = 2\n", "workers: expected a whole number (got {count = 2})"),
        ('workers = "two"\n', 'workers: expected a whole number (got "two")'),
        ("workers = 2.5\n", "workers: expected a whole number (got 2.5)"),
        ("workers = true\n", "workers: expected a whole number (got true)"),
        ('client_max_body_size = "lots"\n', "'lots' is not a size like 512, 8k or 1m"),
        ("client_max_body_size = 1.5\n", "expected a size like 512, 8k or 1m (got 1.5)"),
        ('socket_mode = "rw"\n', 'expected an octal mode like "0660" (got "rw")'),
        ("debug = 1\n", "debug: expected true or false (got 1)"),
        ("shutdown_timeout = true\n", "expected a number (got true)"),
        ("error_log = 2\n", "error_log: expected a string (got 2)"),
        ("listen = [1]\n", "listen: expected a list of strings (got [1])"),
        ("workrs = 2\n", "unknown key 'workrs'; did you mean 'workers'?"),
        ("runtime = 'lua54'\n", "unknown key 'runtime'; did you mean 'lua_runtime'?"),
    ],
)
def test_bad_file_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, {"root": str(tmp_path)} if "root" not in text else None)
    assert str(info.value).startswith(path)
    assert message in str(info.value)


def test_a_bad_value_names_where_it_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, f'root = "{tmp_path}"\nmax_reqs = 0\n')
    with pytest.raises(ConfigError) as info:
        load(path, {"workers": 2})
    assert str(info.value).startswith(f"{path}: max_reqs: must be > 0")
    with pytest.raises(ConfigError) as info:
        load(path, {"workers": 0, "max_reqs": 1})
    assert str(info.value).startswith("command line: workers: must be between")


def test_loading_checks_without_changing_what_it_checks(tmp_path: Path) -> None:
    config = load(None, {"root": str(tmp_path)})
    before = config.replace()
    config.validate()
    assert config == before


def test_missing_root_is_named() -> None:
    with pytest.raises(ConfigError, match="root: is required"):
        load(None, {})


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "absent.toml"))


def test_parse_listen() -> None:
    assert parse_listen("unix:/run/x.sock") == ("unix", "/run/x.sock")
    assert parse_listen("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("unix:", "host", "host:0", "host:70000", "host:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_parse_size() -> None:
    assert parse_size("512") == 512
    assert parse_size("8k") == 8192
    assert parse_size("1M") == 1024 * 1024
    with pytest.raises(ValueError):
        parse_size("lots")


DOCUMENTED_DEFAULT = re.compile(r"^\| `([a-z_]+)` \| ([^|]*) \|", re.M)


def test_every_option_has_a_documented_default() -> None:
    # The default column says what Config holds: written in TOML (or as a
    # size like 256m), checked value by value, so that a changed default
    # cannot leave the reference behind.
    docs = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    documented = dict(DOCUMENTED_DEFAULT.findall(docs))
    defaults = Config()
    for name in Config.__dataclass_fields__:
        assert name in documented, f"docs/configuration.md does not document {name}"
        column = documented[name]
        if name == "root":
            assert "required" in column
            continue
        if name == "workers":
            assert "CPU" in column
            continue
        token = re.match(r"`([^`]*)`", column)
        assert token, f"{name}: default column {column!r} has no `value`"
        try:
            value = tomllib.loads(f"v = {token[1]}")["v"]
        except tomllib.TOMLDecodeError:
            value = token[1]  # a bare size (256m) or name (luajit21)
        expected = getattr(defaults, name) or (
            DEFAULT_RUNTIME if name == "lua_runtime" else getattr(defaults, name)
        )
        assert coerce(OPTIONS[name], value, "docs") == expected, f"{name}: docs say {column}"
