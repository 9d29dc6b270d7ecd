"""An aborted request is freed at once, not at the next full collection:
the worker's GC settings (worker.py) make full collections rare, and each
request left in a reference cycle keeps its Lua coroutine alive."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

from tests.helpers.server import request_start, settle, setup


def test_an_aborted_request_is_freed_without_the_cyclic_gc(tmp_path: Path) -> None:
    protocol, script, _ = setup(tmp_path, "ngx.sleep(10) ngx.say('never')")

    async def scenario() -> None:
        protocol.data_received(request_start(script, 0))
        await settle()
        task = protocol._requests[1].task
        assert task is not None
        ref = weakref.ref(task)
        del task
        protocol.connection_lost(None)  # nginx closed: the client went away
        await settle()
        assert ref() is None, gc.get_referrers(ref())

    gc.collect()
    gc.disable()
    try:
        asyncio.run(scenario())
    finally:
        gc.enable()
