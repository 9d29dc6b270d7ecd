"""fcgi_lua.deadlines: many timers on one loop timer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcgi_lua import deadlines
from fcgi_lua.deadlines import Deadlines, Expiries
from fcgi_lua.lua.cosocket import Cosockets


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_fires_in_time_order_and_not_before() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        heap = Deadlines()
        start = loop.time()
        fired: list[tuple[str, float]] = []
        for name, delay in (("c", 0.06), ("a", 0.02), ("b", 0.04)):
            heap.call_later(delay, lambda n: fired.append((n, loop.time() - start)), name)
        assert len(heap) == 3
        await asyncio.sleep(0.1)
        assert len(heap) == 0
        return fired

    fired = run(main())
    assert [name for name, _ in fired] == ["a", "b", "c"]
    for (_name, at), due in zip(fired, (0.02, 0.04, 0.06), strict=True):
        assert at >= due - 0.002  # the loop's clock granularity


def test_cancelled_never_fires_and_cancel_is_idempotent() -> None:
    async def main() -> list[int]:
        heap = Deadlines()
        fired: list[int] = []
        first = heap.call_later(0.01, fired.append, 1)
        heap.call_later(0.02, fired.append, 2)
        first.cancel()
        first.cancel()
        assert first.cancelled
        assert len(heap) == 1
        await asyncio.sleep(0.05)
        return fired

    assert run(main()) == [2]


def test_sleep_waits_and_cleans_up_when_cancelled() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        heap = Deadlines()
        began = loop.time()
        await heap.sleep(0.03)
        assert loop.time() - began >= 0.028
        task = asyncio.ensure_future(heap.sleep(10))
        await asyncio.sleep(0)
        assert len(heap) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(heap) == 0  # the cancelled sleep's deadline went with it
        await heap.sleep(0)  # zero: one yield, no deadline

    run(main())


def test_heap_is_compacted_when_mostly_cancelled() -> None:
    async def main() -> None:
        heap = Deadlines()
        for _ in range(10 * deadlines.COMPACT_MIN):
            heap.call_later(60, print).cancel()
        assert len(heap) == 0
        assert len(heap._heap) <= deadlines.COMPACT_MIN  # not 10x the live ones

    run(main())


def test_a_failing_callback_is_reported_and_the_rest_still_fire() -> None:
    async def main() -> tuple[list[int], list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        heap = Deadlines()
        fired: list[int] = []
        heap.call_later(0.01, lambda: 1 / 0)
        heap.call_later(0.01, fired.append, 2)
        heap.call_later(0.02, fired.append, 3)
        await asyncio.sleep(0.05)
        return fired, reported

    fired, reported = run(main())
    assert fired == [2, 3]
    assert isinstance(reported[0]["exception"], ZeroDivisionError)


def test_a_callback_may_arm_and_cancel_others() -> None:
    async def main() -> list[str]:
        heap = Deadlines()
        fired: list[str] = []
        later = heap.call_later(0.03, fired.append, "cancelled")

        def first() -> None:
            fired.append("first")
            later.cancel()
            heap.call_later(0.01, fired.append, "armed by first")

        heap.call_later(0.01, first)
        await asyncio.sleep(0.06)
        return fired

    assert run(main()) == ["first", "armed by first"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=30), st.booleans()), min_size=1, max_size=40
    )
)
def test_matches_a_model(plan: list[tuple[int, bool]]) -> None:
    """Whatever is armed and cancelled: exactly the live ones fire, in
    deadline order (ties in arming order)."""

    async def main() -> list[int]:
        heap = Deadlines()
        fired: list[int] = []
        handles = [heap.call_later(ms / 1000, fired.append, i) for i, (ms, _) in enumerate(plan)]
        for handle, (_, cancel) in zip(handles, plan, strict=True):
            if cancel:
                handle.cancel()
        await asyncio.sleep(0.045)
        assert len(heap) == 0
        return fired

    expected = [
        i for i, (ms, cancel) in sorted(enumerate(plan), key=lambda e: e[1][0]) if not cancel
    ]
    assert run(main()) == expected


def test_the_workers_heap_is_one_per_running_loop() -> None:
    # Cosockets keeps the worker's heap (socket timeouts and ngx.sleep):
    # the same one on a loop, a new one on the next loop
    manager = Cosockets()

    async def main() -> Deadlines:
        assert manager.deadlines() is manager.deadlines()
        return manager.deadlines()

    assert run(main()) is not run(main())


def test_expiries_fire_after_their_delay_in_order_unless_discarded() -> None:
    async def main() -> tuple[list[tuple[str, float]], int]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        fired: list[tuple[str, float]] = []
        expiries = Expiries(loop, 0.05, lambda n: fired.append((n, loop.time() - start)))
        expiries.add("a", "a")
        await asyncio.sleep(0.01)
        expiries.add("b", "b")
        expiries.add("c", "c")
        expiries.discard("a")  # the armed one: its timer finds nothing due
        expiries.discard("c")
        expiries.discard("never added")
        await asyncio.sleep(0.02)
        expiries.add("d", "d")
        await asyncio.sleep(0.1)
        return fired, len(expiries)

    fired, left = run(main())
    assert [name for name, _ in fired] == ["b", "d"]
    assert fired[0][1] >= 0.06 - 0.002 and fired[1][1] >= 0.08 - 0.002
    assert left == 0


def test_expiries_report_a_failing_callback_and_go_on() -> None:
    async def main() -> tuple[list[int], list[str]]:
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        loop.set_exception_handler(lambda _, ctx: errors.append(ctx["message"]))
        fired: list[int] = []

        def callback(n: int) -> None:
            fired.append(n)
            if n == 1:
                raise RuntimeError("boom")

        expiries = Expiries(loop, 0.01, callback)
        for n in range(3):
            expiries.add(n, n)
        await asyncio.sleep(0.05)
        return fired, errors

    fired, errors = run(main())
    assert fired == [0, 1, 2]
    assert len(errors) == 1 and "expiry callback" in errors[0]


def test_a_cancelled_deadline_lets_go_of_its_callback() -> None:
    # Cancelled entries wait in the heap until they would have fired: a
    # bound method kept there would keep its object (a connection) alive.
    import gc
    import weakref

    class Conn:
        def timed_out(self) -> None:
            raise AssertionError("cancelled")

    async def main() -> bool:
        heap = Deadlines()
        conn = Conn()
        ref = weakref.ref(conn)
        heap.call_later(60, conn.timed_out).cancel()
        del conn
        gc.collect()
        return ref() is None

    assert run(main())
