"""Many per-request timers on one loop timer.

Every request arms a ``request_timeout`` and most scripts sleep: with
``loop.call_later`` each of those is a libuv timer handle plus a
TimerHandle (about 0.7 KB and 1.8 us to arm and cancel here), paid by
every request even though almost none fires.  ``Deadlines`` keeps them in
one heap instead and arms a single loop timer for the earliest, so a
deadline costs a heap push and a small object.

Cancelled entries stay in the heap until they would have fired, or until
they are most of it: then the heap is rebuilt, so its size stays within
twice the live deadlines however many are armed and cancelled.

Deadlines that all share one delay (``request_timeout``) need no heap at
all: they expire in the order they were armed.  ``Expiries`` keeps them in
a dict, whose insertion order is that order, so arming and cancelling one
is a dict store and a dict pop, and its loop timer fires about once per
delay however many requests come and go.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

# Rebuild the heap when cancelled entries are more than half of it, and it
# is big enough for that to matter.
COMPACT_MIN = 1024


class Deadline:
    """One armed callback; ``cancel()`` is idempotent and O(1)."""

    __slots__ = ("args", "callback", "owner", "when")

    def __init__(
        self, owner: Deadlines, when: float, callback: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        self.owner: Deadlines | None = owner
        self.when = when
        self.callback = callback
        self.args = args

    def cancel(self) -> None:
        owner = self.owner
        if owner is not None:
            self.owner = None
            self.args = ()
            self.callback = _nothing  # a bound method would keep its object alive
            owner._cancelled()

    @property
    def cancelled(self) -> bool:
        return self.owner is None


class Deadlines:
    """A heap of deadlines on one event loop, fired in time order."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self._dead = 0  # cancelled entries still in the heap

    def __len__(self) -> int:
        """Live (armed, not cancelled, not fired) deadlines."""
        return len(self._heap) - self._dead

    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Deadline:
        """Run ``callback(*args)`` in ``delay`` seconds, unless cancelled."""
        when = self.loop().time() + delay
        deadline = Deadline(self, when, callback, args)
        heapq.heappush(self._heap, (when, next(self._seq), deadline))
        if when < self._armed_at:
            self._arm(when)
        return deadline

    async def sleep(self, delay: float) -> None:
        """``asyncio.sleep(delay)`` on this heap (0 or less: one yield)."""
        if delay <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = self.loop().create_future()
        deadline = self.call_later(delay, _wake, future)
        try:
            await future
        finally:
            deadline.cancel()

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = self.loop().call_at(when, self._fire)

    def _cancelled(self) -> None:
        self._dead += 1
        heap = self._heap
        if self._dead > len(heap) // 2 and len(heap) >= COMPACT_MIN:
            self._heap = [entry for entry in heap if entry[2].owner is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = float("inf")
        heap = self._heap
        now = self.loop().time()
        while heap and heap[0][0] <= now:
            _, _, deadline = heapq.heappop(heap)
            if deadline.owner is None:
                self._dead -= 1
                continue
            deadline.owner = None
            callback, args = deadline.callback, deadline.args
            deadline.args = ()
            try:
                callback(*args)  # may arm or cancel others: the heap is consistent
            except Exception as exc:  # like a loop callback's: reported, not fatal
                self.loop().call_exception_handler(
                    {"message": f"exception in deadline callback {callback!r}", "exception": exc}
                )
            heap = self._heap  # a cancel may have compacted it
        while heap and heap[0][2].owner is None:  # skip dead tops
            heapq.heappop(heap)
            self._dead -= 1
        if heap:
            self._arm(heap[0][0])


class Expiries:
    """Deadlines of one fixed ``delay``, each under a key: ``add(key, *args)``
    calls ``callback(*args)`` ``delay`` seconds later unless ``discard(key)``
    came first.  Keys are compared by identity's hash (requests)."""

    __slots__ = ("_armed", "_callback", "_delay", "_entries", "_loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, delay: float, callback: Callable[..., Any]
    ) -> None:
        self._loop = loop
        self._delay = delay
        self._callback = callback
        # key -> (when, args), oldest first: insertion order is expiry order
        self._entries: dict[Any, tuple[float, tuple[Any, ...]]] = {}
        self._armed: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def add(self, key: Any, *args: Any) -> None:
        when = self._loop.time() + self._delay
        self._entries[key] = (when, args)
        if self._armed is None:
            self._armed = self._loop.call_at(when, self._fire)

    def discard(self, key: Any) -> None:
        # A discarded oldest entry leaves the timer armed for its time: it
        # fires then, finds nothing due and re-arms for the new oldest.
        self._entries.pop(key, None)

    def _fire(self) -> None:
        self._armed = None
        entries = self._entries
        now = self._loop.time()
        while entries:
            key = next(iter(entries))
            when, args = entries[key]
            if when > now:
                break
            del entries[key]
            try:
                self._callback(*args)
            except Exception as exc:  # like a loop callback's: reported, not fatal
                message = f"exception in expiry callback {self._callback!r}"
                self._loop.call_exception_handler({"message": message, "exception": exc})
        if entries and self._armed is None:  # (a callback may have added one)
            when, _ = entries[next(iter(entries))]
            self._armed = self._loop.call_at(when, self._fire)


def _nothing(*args: Any) -> None:
    return None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
