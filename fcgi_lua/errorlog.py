"""What the error log may hold: lines of bounded size, repeats counted.

This module owns the two bounds on fcgi-lua's error log: each line is cut
at ``log_max_line`` bytes (message, traceback and prefix together, as
nginx cuts its error log lines), and a kind of WARNING (or worse) written
more than ``log_repeat_limit`` times in ``LOG_REPEAT_WINDOW`` seconds is
suppressed, then counted in one line (``... N similar messages
suppressed``).  ``cli.setup_logging`` installs both on the error log's
handler.

What it must never do: drop a message without counting it, or hold back a
count for longer than the next line written once the window is over.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

# OpenResty's error log lines stop at 4096 bytes: it patches nginx's
# NGX_MAX_ERROR_STR (2048 in a release build of stock nginx, 4096 with
# --with-debug: src/core/ngx_log.h) up to 4096 ("larger_max_error_str",
# OpenResty 1.4.3.9 changelog).  Measured on Debian's nginx 1.22 with
# libnginx-mod-http-lua: error(string.rep("x", 10 MB)) logs one 2048-byte
# line.  4 kB keeps a Lua traceback of a dozen frames whole.
DEFAULT_LOG_MAX_LINE = 4096
# Below this a line could not even hold its prefix and the marker.
MIN_LOG_MAX_LINE = 256
# A fuzzer wrote 23,000 WARNING lines, one per malformed connection.  Ten
# lines of one kind per ten seconds still show an operator every new
# problem and its rate, and bound a flood to one line a second.
DEFAULT_LOG_REPEAT_LIMIT = 10
LOG_REPEAT_WINDOW = 10.0
# A template shorter than this once its %-fields are gone says nothing by
# itself ("%s", "%s: %s; %d"): such messages are told apart by their text.
_MIN_TEMPLATE_TEXT = 8
# Kinds tracked at once: messages that all differ (a Lua error naming a
# different line each time) must not grow the table without bound; past
# it a new kind is written, not tracked.
MAX_KINDS = 1024
# What of the message text tells two kinds apart (a Lua error: script,
# line and the start of the message).
_KIND_TEXT = 160

TRUNCATED = " [truncated: %d bytes]"


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, saying so."""
    if len(text) * 4 <= limit:  # the common case: not even worth encoding
        return text
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    marker = TRUNCATED % len(data)
    kept = data[: max(0, limit - len(marker))]
    return kept.decode("utf-8", "ignore") + marker


def clip_bytes(data: bytes, limit: int) -> bytes:
    """As ``clip`` for bytes (the FCGI_STDERR copy of a log line)."""
    if len(data) <= limit:
        return data
    ending = b"\n" if data.endswith(b"\n") else b""
    marker = (TRUNCATED % len(data)).encode() + ending
    return data[: max(0, limit - len(marker))] + marker


class BoundedFormatter(logging.Formatter):
    """A Formatter whose lines (traceback included) end at ``max_line`` bytes."""

    def __init__(self, fmt: str, max_line: int = DEFAULT_LOG_MAX_LINE) -> None:
        super().__init__(fmt)
        self.max_line = max_line

    def format(self, record: logging.LogRecord) -> str:
        return clip(super().format(record), self.max_line)


@dataclass(slots=True)
class _Kind:
    started: float
    written: int = 0
    suppressed: int = 0
    level: int = logging.WARNING
    name: str = ""
    sample: str = ""


class RepeatLimit(logging.Filter):
    """Passes at most ``limit`` records of one kind per ``window`` seconds
    (WARNING and worse; 0 is no limit); then counts, and writes the count
    through ``handler`` once the window is over.

    A kind is the logger, the level and the message's template, or the
    start of its text when the template is too bare to tell ("%s")."""

    def __init__(
        self,
        handler: logging.Handler,
        limit: int = DEFAULT_LOG_REPEAT_LIMIT,
        window: float = LOG_REPEAT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.handler = handler
        self.limit = limit
        self.window = window
        self._clock = clock
        self._kinds: dict[tuple[str, int, str], _Kind] = {}
        self._next_sweep = 0.0
        _LIMITS.add(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "fcgi_lua_summary", False):
            return True
        now = self._clock()
        if self._kinds and now >= self._next_sweep:
            self._sweep(now)
        if not self.limit or record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, self._kind_text(record))
        kind = self._kinds.get(key)
        if kind is None:
            if len(self._kinds) >= MAX_KINDS:
                return True
            if not self._kinds:  # the first window open: sweep when it ends
                self._next_sweep = now + self.window
            kind = self._kinds[key] = _Kind(now, level=record.levelno, name=record.name)
        if kind.written < self.limit:
            kind.written += 1
            return True
        kind.suppressed += 1
        kind.sample = record.getMessage()[:_KIND_TEXT]
        return False

    @staticmethod
    def _kind_text(record: logging.LogRecord) -> str:
        template = record.msg if isinstance(record.msg, str) else str(record.msg)
        if record.args and len(template.replace("%s", "").replace("%d", "")) >= _MIN_TEMPLATE_TEXT:
            return template
        return record.getMessage()[:_KIND_TEXT]

    def _sweep(self, now: float) -> None:
        """Close the windows that are over, writing what they suppressed."""
        upcoming = now + self.window
        for key, kind in list(self._kinds.items()):
            if now - kind.started < self.window:
                upcoming = min(upcoming, kind.started + self.window)
                continue
            del self._kinds[key]
            if kind.suppressed:
                self._summary(kind, now)
        self._next_sweep = upcoming

    def flush(self) -> None:
        """Write every count now (the process stops)."""
        now = self._clock()
        for kind in self._kinds.values():
            if kind.suppressed:
                self._summary(kind, now)
        self._kinds.clear()

    def _summary(self, kind: _Kind, now: float) -> None:
        record = logging.LogRecord(
            kind.name,
            kind.level,
            __file__,
            0,
            "... %d similar messages suppressed in the last %.0f s (log_repeat_limit), "
            "the last: %s",
            (kind.suppressed, now - kind.started, kind.sample),
            None,
        )
        record.fcgi_lua_summary = True
        self.handler.handle(record)


# A forked worker starts with its own counts: what the master suppressed
# is the master's to report, not every worker's again.
_LIMITS: weakref.WeakSet[RepeatLimit] = weakref.WeakSet()


def _forget_in_child() -> None:
    for limit in list(_LIMITS):
        limit._kinds.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class _CountingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    repeats: RepeatLimit | None = None

    def close(self) -> None:
        if self.repeats is not None:  # logging.shutdown(): the counts first
            self.repeats.flush()
        super().close()


class _CountingFileHandler(logging.FileHandler):
    repeats: RepeatLimit | None = None

    def close(self) -> None:
        if self.repeats is not None:
            self.repeats.flush()
        super().close()


def open_error_log(
    error_log: str,
    fmt: str,
    max_line: int = DEFAULT_LOG_MAX_LINE,
    repeat_limit: int = DEFAULT_LOG_REPEAT_LIMIT,
) -> logging.Handler:
    """The error log's handler ("stderr" or a file path) with both bounds;
    closing it (logging.shutdown at exit) writes the pending counts."""
    handler: _CountingStreamHandler | _CountingFileHandler
    if error_log == "stderr":
        handler = _CountingStreamHandler(sys.stderr)
    else:
        handler = _CountingFileHandler(error_log)
    handler.setFormatter(BoundedFormatter(fmt, max_line))
    handler.repeats = RepeatLimit(handler, repeat_limit)
    handler.addFilter(handler.repeats)
    return handler
