"""End-to-end harness: real nginx in front of real `fcgi-lua serve`.

One stack per test session, all of it under a temp dir:

- fcgi-lua listening on a Unix socket AND on a TCP loopback port,
- a second fcgi-lua with --debug (tracebacks in 500 bodies),
- nginx (with Debian's lua module loaded) with one server per route, all
  with the same document root, so the same path means the same script:

  ``unix``     the shipped nginx/fcgi-lua.conf snippet + upstream file,
               verbatim (keepalive pool, fastcgi_keep_conn, stock buffering)
  ``tcp``      the same location over the TCP listener
  ``debug``    to the --debug instance
  ``passall``  ``location /`` forwards *every* path to fcgi-lua, so the
               responder's own confinement (extension, root) is what's tested
  ``unbuffered`` like ``unix`` with ``fastcgi_request_buffering off``
  ``oracle``   the same files run by OpenResty (``content_by_lua_file``)

Fixtures: ``e2e`` (the running stack: URLs, paths, log texts) and ``logs``
(marks the logs when a test starts; after it, fails the test if an
unexpected error was logged — STYLE.md item 11).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .e2e_peers import run_redis
from .e2e_stack import HERE, NGINX, Logs, Stack, start_stack


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = str(HERE)
    # Skip only where nginx is absent on a developer's machine; CI installs
    # it, and there a missing nginx must fail, not pass silently.
    # test_e2e_monkey.py needs only Monkey (MONKEY_BIN), not nginx.
    if NGINX is None and not os.environ.get("CI"):
        skip = pytest.mark.skip(reason="nginx binary not found (apt-get install nginx)")
        for item in items:
            path = str(item.fspath)
            if path.startswith(here) and not path.endswith("test_e2e_monkey.py"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("e2e"))
    try:
        yield stack
    finally:
        problems = stack.stop()
        for sock in (
            stack.unix_socket,
            stack.debug_socket,
            stack.bodies_socket,
            stack.fcgiwrap_socket,
        ):
            if sock is not None:
                sock.unlink(missing_ok=True)
    # Graceful stop is part of the contract (SIGTERM = finish and exit 0).
    assert not problems, "; ".join(problems) + "\n" + stack.fcgi_log_text()[-4000:]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def logs(e2e: Stack, request: pytest.FixtureRequest) -> Iterator[Logs]:
    # One wedged or dead responder must fail the rest fast, not make every
    # remaining test wait for its timeouts.
    if e2e.broken:
        pytest.fail(f"the e2e stack broke earlier: {e2e.broken}", pytrace=False)
    if problem := e2e.dead_service():
        e2e.broken = problem
        pytest.fail(problem, pytrace=False)
    watch = Logs(e2e)
    yield watch
    if request.node.stash.get(CALL_FAILED, False):
        e2e.check_health()
        return  # the failure already says what went wrong
    if not watch.checked:
        watch.assert_no_errors()


@pytest.fixture(autouse=True)
def _every_test_checks_logs(logs: Logs) -> None:
    """Every e2e test asserts no unexpected error was logged (via ``logs``)."""


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real redis-server on loopback, for the module's tests."""
    yield from run_redis(tmp_path_factory)
