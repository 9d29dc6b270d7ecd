"""Timers and parked threads of one worker: the Python side of ``thread.lua``.

This module owns the worker's ``ngx.timer`` schedule (pending timers as
loop timer handles, the running count, the limits, the premature run at
shutdown) and the futures that threads waiting on an ``ngx.semaphore``
park on.  ``thread.lua`` holds the Lua side: the callbacks and their
arguments, the semaphores' counts and queues, the light threads.

What it must never do: hold a Lua object for Lua (timers and parked
threads are known here by integer ids; the callbacks stay in Lua's
tables), or let a timer's failure escape into the loop (a timer's error
is logged, the worker carries on).

Semantics follow lua-nginx-module 0.10.23 (``ngx_http_lua_timer.c``):
``lua_max_pending_timers`` / ``lua_max_running_timers`` are the config
keys ``max_pending_timers`` / ``max_running_timers``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("fcgi_lua.lua")

# lua-nginx-module's defaults (lua_max_pending_timers, lua_max_running_timers).
DEFAULT_MAX_PENDING_TIMERS = 1024
DEFAULT_MAX_RUNNING_TIMERS = 256

# -- parked threads (ngx.semaphore waits) ----------------------------------------


class Parking:
    """The futures that an engine's threads waiting on an ngx.semaphore
    park on, by id; a future's result is True when a post() handed its
    thread a resource."""

    def __init__(self) -> None:
        self._parked: dict[int, tuple[asyncio.Future[bool], float]] = {}
        self._ids = itertools.count(1)

    def park(self, timeout: float) -> int:
        """A thread is about to wait (at most ``timeout`` s): its park id."""
        handle = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._parked[handle] = (future, float(timeout))
        return handle

    def unpark(self, handle: int) -> bool:
        """Wake a parked thread; False when it is gone (timed out, or its
        thread died), and then the resource goes to the next waiter."""
        entry = self._parked.get(handle)
        if entry is None or entry[0].done():
            return False
        entry[0].set_result(True)
        return True

    async def perform(self, request: Any, sink: Any, handle: Any) -> Any:
        """The driver's "park" command: True when woken, nil on timeout."""
        entry = self._parked.get(handle)
        if entry is None:
            return None
        future, timeout = entry
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self._parked.pop(handle, None)


# -- timers ------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    handle: asyncio.TimerHandle
    delay: float
    every: bool


RunTimer = Callable[[int, bool, bool], Coroutine[Any, Any, None]]


class Timers:
    """The worker's ngx.timer schedule: what is pending, what runs."""

    def __init__(
        self,
        run: RunTimer,
        drop: Callable[[int, bool], str],
        max_pending: int = DEFAULT_MAX_PENDING_TIMERS,
        max_running: int = DEFAULT_MAX_RUNNING_TIMERS,
    ) -> None:
        self._run = run  # runs timer id's callback: (id, premature, keep)
        self._drop = drop  # forgets timer id's callback -> "source:line"
        self.max_pending = max_pending
        self.max_running = max_running
        self.pending: dict[int, _Pending] = {}
        self.running = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.exiting = False
        self._ids = itertools.count(1)
        self.parking = Parking()  # ngx.semaphore waits

    def add(self, delay: float, every: bool) -> tuple[int | None, bytes | None]:
        """ngx.timer.at / every: (id, nil), or (nil, error) like OpenResty."""
        if self.exiting and delay > 0:
            return None, b"process exiting"
        if len(self.pending) >= self.max_pending:
            return None, b"too many pending timers"
        timer_id = next(self._ids)
        self._schedule(timer_id, float(delay), bool(every))
        return timer_id, None

    def _schedule(self, timer_id: int, delay: float, every: bool) -> None:
        handle = asyncio.get_running_loop().call_later(delay, self._fire, timer_id, False)
        self.pending[timer_id] = _Pending(handle, delay, every)

    def _fire(self, timer_id: int, premature: bool) -> None:
        entry = self.pending.pop(timer_id, None)
        if entry is None:
            return
        # an ngx.timer.every timer is scheduled again before it runs
        keep = entry.every and not self.exiting
        if keep:
            self._schedule(timer_id, entry.delay, True)
        task = asyncio.get_running_loop().create_task(self._run_one(timer_id, premature, keep))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_one(self, timer_id: int, premature: bool, keep: bool) -> None:
        # The running limit is checked here, when the timer starts, not when
        # it expires: tasks start one after the other and each runs until
        # its callback first waits, so ``running`` counts the timers that
        # wait, as lua-nginx-module's timer handler does (it checks
        # running_timers on entry and runs the callback up to its first
        # yield).  Counting at expiry dropped all but 256 of 300 timers that
        # expired in one loop tick although none of them ever waited.
        if self.running >= self.max_running:
            where = self._drop(timer_id, keep)
            log.critical(
                "lua failed to run timer with function defined at %s: "
                "%d lua_max_running_timers are not enough",
                where,
                self.max_running,
            )
            return
        self.running += 1
        try:
            await self._run(timer_id, premature, keep)
        except asyncio.CancelledError:
            raise
        except Exception:  # never into the loop: the worker carries on
            log.exception("internal error running a timer")
        finally:
            self.running -= 1

    async def shutdown(self, timeout: float) -> None:
        """The worker is stopping: every pending timer runs now with
        ``premature`` true; running ones get ``timeout`` s, then are cancelled."""
        self.exiting = True
        for timer_id, entry in list(self.pending.items()):
            entry.handle.cancel()
            self._fire(timer_id, True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self.tasks or self.pending) and loop.time() < deadline:
            for timer_id, entry in list(self.pending.items()):  # added meanwhile
                entry.handle.cancel()
                self._fire(timer_id, True)
            if self.tasks:
                await asyncio.wait(set(self.tasks), timeout=max(0.0, deadline - loop.time()))
        if self.tasks:
            log.warning("cancelled %d timer(s) still running at shutdown", len(self.tasks))
            for task in list(self.tasks):
                task.cancel()
            await asyncio.wait(set(self.tasks), timeout=1.0)

    def functions(self) -> dict[bytes, Any]:
        """What thread.lua gets to call."""
        return {
            b"timer_add": self.add,
            b"running_count": lambda: self.running,
            b"pending_count": lambda: len(self.pending),
            b"exiting": lambda: self.exiting,
            b"park": self.parking.park,
            b"unpark": self.parking.unpark,
        }
