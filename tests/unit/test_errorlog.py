"""The error log's bounds: lines cut at log_max_line bytes (tracebacks
included), repeated WARNINGs of one kind counted instead of written."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import pytest

from fcgi_lua.errorlog import (
    MAX_KINDS,
    BoundedFormatter,
    RepeatLimit,
    clip,
    clip_bytes,
    open_error_log,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("fcgi_lua.test_errorlog")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger
    logger.handlers.clear()


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_clip_cuts_at_the_byte_limit_and_says_so() -> None:
    assert clip("short", 4096) == "short"
    cut = clip("x" * 10_000_000, 4096)
    assert len(cut.encode()) <= 4096
    assert cut.endswith(" [truncated: 10000000 bytes]")
    # never half a UTF-8 character
    cut = clip("é" * 5000, 4096)
    assert len(cut.encode()) <= 4096
    cut.encode("utf-8", "strict")
    data = clip_bytes(b"[error] " + b"y" * 100_000 + b"\n", 4096)
    assert len(data) <= 4096 and data.endswith(b"bytes]\n")


def test_a_huge_message_and_its_traceback_make_one_bounded_line(
    logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(BoundedFormatter("%(levelname)s %(message)s", 4096))
    logger.addHandler(handler)
    logger.error("%s", "x" * 10 * 1024 * 1024)
    try:
        raise RuntimeError("y" * 100_000)
    except RuntimeError:
        logger.exception("internal error")
    written = stream.getvalue().encode()
    assert len(written) <= 2 * (4096 + 1)
    assert written.count(b"[truncated: ") == 2


def test_repeats_beyond_the_limit_are_counted_then_reported(logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    clock = Clock()
    handler.addFilter(RepeatLimit(handler, limit=10, window=10.0, clock=clock))
    logger.addHandler(handler)
    for n in range(1000):  # a fuzzer: one warning per malformed connection
        logger.warning("FastCGI protocol error from %s: %s; closing connection", "peer", n)
        logger.error("%s", "/srv/www/x.lua:3: attempt to index a nil value")
        logger.error("%s", f"/srv/www/y.lua:{n}: other")  # each one different
        logger.info("front server closed the connection during %s", n)  # not limited
    got = lines(stream)
    assert sum("FastCGI protocol error" in line for line in got) == 10
    assert sum("x.lua:3" in line for line in got) == 10
    assert sum("y.lua" in line for line in got) == 1000
    assert sum(line.startswith("INFO") for line in got) == 1000
    assert not any("suppressed" in line for line in got)
    clock.now += 10.0
    logger.info("next line")  # the window is over: the counts come first
    summaries = [line for line in lines(stream) if "suppressed" in line]
    assert sorted(summaries) == [
        "ERROR ... 990 similar messages suppressed in the last 10 s (log_repeat_limit), "
        "the last: /srv/www/x.lua:3: attempt to index a nil value",
        "WARNING ... 990 similar messages suppressed in the last 10 s (log_repeat_limit), "
        "the last: FastCGI protocol error from peer: 999; closing connection",
    ]
    # a new window: ten more pass
    for n in range(20):
        logger.warning("FastCGI protocol error from %s: %s; closing connection", "peer", n)
    assert sum(line.startswith("WARNING FastCGI") for line in lines(stream)) == 20


def test_closing_the_log_writes_the_pending_counts(tmp_path: pytest.TempPathFactory) -> None:
    path = f"{tmp_path}/error.log"
    handler = open_error_log(path, "%(levelname)s %(message)s", 4096, 3)
    logger = logging.getLogger("fcgi_lua.test_errorlog.close")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for n in range(50):
            logger.warning("unknown FastCGI record type %d from %s", n, "peer")
    finally:
        logger.removeHandler(handler)
        handler.close()  # what logging.shutdown() does at exit
    with open(path) as log_file:
        got = log_file.read().splitlines()
    assert len(got) == 4
    assert "... 47 similar messages suppressed" in got[3]


def test_zero_is_no_limit(logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RepeatLimit(handler, limit=0))
    logger.addHandler(handler)
    for _ in range(100):
        logger.warning("over max_reqs=%d requests in flight; 503", 5)
    assert len(lines(stream)) == 100


def test_messages_that_all_differ_do_not_grow_the_table(logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    repeats = RepeatLimit(handler, limit=10)
    handler.addFilter(repeats)
    logger.addHandler(handler)
    for n in range(3000):
        logger.error("%s", f"/srv/www/y.lua:{n}: other")
    assert len(lines(stream)) == 3000
    assert len(repeats._kinds) <= MAX_KINDS


def test_a_forked_child_does_not_report_the_parents_counts(logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    repeats = RepeatLimit(handler, limit=1)
    handler.addFilter(repeats)
    logger.addHandler(handler)
    for n in range(5):
        logger.error("worker %d killed by SIGSEGV; replacing it", n)
    assert repeats._kinds
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0 if not repeats._kinds else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert repeats._kinds  # the parent still has them to report
