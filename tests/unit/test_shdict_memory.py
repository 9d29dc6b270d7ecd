"""Shared dict memory as nginx accounts it (fcgi_lua/slab.py, the slab pool
model behind fcgi_lua/shdict.py): the cases of lua-nginx-module's
t/126-shdict-frag.t, t/043-shdict.t TEST 21, t/144-shdict-incr-init.t TEST
5 and t/145-shdict-list.t TEST 22, with OpenResty's answers, and the pool
shared by several processes."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fcgi_lua.shdict import OP_SAFE_STORE, SharedDicts, prepare
from fcgi_lua.slab import SlabPool

ROOT = Path(__file__).resolve().parents[2]
DOGS = 1

Opener = Callable[[int], SharedDicts]
NO_MEMORY = (False, b"no memory", False)


@pytest.fixture
def zone(tmp_path: Path) -> Iterator[Opener]:
    opened: list[SharedDicts] = []

    def open_zone(size: int) -> SharedDicts:
        path = str(tmp_path / f"shdict{len(opened)}")
        prepare(path, {"dogs": size})
        store = SharedDicts(path, {"dogs": size})
        opened.append(store)
        return store

    yield open_zone
    for store in opened:
        store.close()


def test_zone_pages_and_free_space(zone: Opener) -> None:
    # t/126's stap output: "total pages: 4" for 20k, 5 for 25k, of which the
    # zone's init takes 2 (its shctx and its log context string)
    assert zone(20 << 10).free_space(DOGS) == 2 * 4096
    assert zone(25 << 10).free_space(DOGS) == 3 * 4096
    assert zone(30 << 10).free_space(DOGS) == 4 * 4096  # "total pages: 6"
    assert zone(20 << 10).capacity(DOGS) == 20 << 10


def test_merge_single_pages_forcibly_evicted(zone: Opener) -> None:
    # t/126 TEST 1: two one-page entries are evicted so that their pages
    # merge into the two a 8102-byte value needs
    dogs = zone(20 << 10)
    results = []
    for _ in range(2):
        results.append(dogs.store(DOGS, 0, b"foo", b"a" * 4000, 0, 0))
        results.append(dogs.store(DOGS, 0, b"bar", b"b" * 4001, 0, 0))
        results.append(dogs.store(DOGS, 0, b"baz", b"c" * 8102, 0, 0))
        found = (dogs.get(DOGS, b"foo"), dogs.get(DOGS, b"bar"), len(dogs.get(DOGS, b"baz")))
        results.append(found)
    ok, forced = (True, None, False), (True, None, True)
    assert results == [ok, ok, forced, (None, None, 8102), forced, ok, forced, (None, None, 8102)]


def test_merge_pages_freed_by_delete(zone: Opener) -> None:
    # t/126 TEST 3: pages merge backward and forward as entries are deleted
    dogs = zone(25 << 10)
    for key, size in ((b"foo", 4000), (b"bar", 4001), (b"baz", 4002)):
        assert dogs.store(DOGS, 0, key, b"a" * size, 0, 0) == (True, None, False)
    dogs.store(DOGS, 0, b"foo", None, 0, 0)
    assert dogs.store(DOGS, OP_SAFE_STORE, b"blah", b"a" * 8100, 0, 0) == NO_MEMORY
    dogs.store(DOGS, 0, b"baz", None, 0, 0)
    assert dogs.store(DOGS, OP_SAFE_STORE, b"blah", b"a" * 8100, 0, 0) == NO_MEMORY
    dogs.store(DOGS, 0, b"bar", None, 0, 0)
    assert dogs.store(DOGS, OP_SAFE_STORE, b"blah", b"a" * 12010, 0, 0) == (True, None, False)


@pytest.mark.parametrize(
    ("small_first", "count", "delete_small", "after_delete"),
    [
        (True, 50, True, (True, None, False)),  # TEST 7: the small chunks' page is freed
        (True, 63, False, NO_MEMORY),  # TEST 8: in use, before
        (False, 50, False, NO_MEMORY),  # TEST 9: in use, after
    ],
)
def test_pages_of_small_chunks(
    zone: Opener, small_first: bool, count: int, delete_small: bool, after_delete: object
) -> None:
    # t/126 TEST 7-9: a page of small chunks blocks the merge until it is
    # entirely free
    dogs = zone(20 << 10)

    def small() -> None:
        for j in range(1, count + 1):
            dogs.store(DOGS, 0, b"foo%d" % j, b"a" * 5, 0, 0)

    if small_first:
        small()
    assert dogs.store(DOGS, 0, b"bar", b"a" * 4000, 0, 0) == (True, None, False)
    if not small_first:
        small()
    if delete_small:
        for j in range(1, count + 1):
            dogs.store(DOGS, 0, b"foo%d" % j, None, 0, 0)
    assert dogs.store(DOGS, OP_SAFE_STORE, b"baz", b"b" * 8100, 0, 0) == NO_MEMORY
    assert dogs.get(DOGS, b"bar") == b"a" * 4000
    dogs.store(DOGS, 0, b"bar", None, 0, 0)
    assert dogs.store(DOGS, OP_SAFE_STORE, b"baz", b"b" * 8100, 0, 0) == after_delete


def test_first_forcible_store(zone: Opener) -> None:
    # t/043-shdict.t TEST 21: OpenResty's first eviction comes at 140 or 141
    dogs = zone(100 << 10)
    for i in range(1, 1001):
        ok, err, forcible = dogs.store(DOGS, 0, b"key_%d" % i, b"hello" * i, 0, 0)
        if not ok or forcible:
            break
    assert (ok, err, forcible, i) == (True, None, True, 140)


def test_incr_init_evicts(zone: Opener) -> None:
    # t/144-shdict-incr-init.t TEST 5 (keys of 1000+ bytes)
    dogs = zone(1 << 20)
    prefix = b"1234567890" * 100
    for i in range(1, 1001):
        if dogs.store(DOGS, 0, prefix + b"%d" % i, i, 0, 0)[2]:
            dogs.store(DOGS, 0, prefix + b"%d" % i, None, 0, 0)
            break
    assert dogs.incr(DOGS, prefix + b"bar", 10502, 0, 0) == (10502, None, False)
    assert dogs.incr(DOGS, prefix + b"foo", 10502, 0, 0) == (10502, None, True)
    assert dogs.get(DOGS, prefix + b"foo") == 10502


def test_list_item_without_memory(zone: Opener) -> None:
    # t/145-shdict-list.t TEST 22: no room for an item is nil, "no memory"
    # (a new list whose node fits but whose first item does not is removed)
    dogs = zone(100 << 10)
    for _ in range(2920):
        dogs.push(DOGS, b"foo", b"bar", True)
    assert dogs.llen(DOGS, b"foo") == 2920
    assert dogs.push(DOGS, b"foo", b"bar", True) == (None, b"no memory")
    assert dogs.push(DOGS, b"other", b"bar", True) == (None, b"no memory")
    assert dogs.get_keys(DOGS, 0) == [b"foo"]
    assert dogs.pop(DOGS, b"foo", True) == b"bar"
    assert dogs.push(DOGS, b"foo", b"bar", True) == 2920


_OTHER_WORKER = """
import sys
from fcgi_lua.shdict import SharedDicts
store = SharedDicts(sys.argv[1], {"dogs": 20 << 10})
value = None if sys.argv[3] == "-" else sys.argv[3].encode() * 4001
print(store.store(1, 0, sys.argv[2].encode(), value, 0, 0))
store.close()
"""


def test_the_pool_is_shared_by_workers(tmp_path: Path) -> None:
    # another process's allocations and frees are seen by this one's copy of
    # the pool at its next write
    path = str(tmp_path / "shdict")
    zones = {"dogs": 20 << 10}
    prepare(path, zones)
    dogs = SharedDicts(path, zones)
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def other(key: str, value: str, forcible: bool = False) -> None:
        done = subprocess.run(
            [sys.executable, "-c", _OTHER_WORKER, path, key, value],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert done.stdout.strip() == f"(True, None, {forcible})"

    try:
        assert dogs.store(DOGS, 0, b"foo", b"a" * 4000, 0, 0) == (True, None, False)
        other("bar", "b")  # the last free page
        assert dogs.free_space(DOGS) == 0
        assert dogs.store(DOGS, OP_SAFE_STORE, b"x", b"x" * 4000, 0, 0) == NO_MEMORY
        other("bar", "-")  # deleted there: its page is free again here
        assert dogs.free_space(DOGS) == 4096
        assert dogs.store(DOGS, OP_SAFE_STORE, b"x", b"x" * 4000, 0, 0) == (True, None, False)
        other("baz", "c", forcible=True)  # no room: evicts foo, the least recently used
        assert dogs.get(DOGS, b"foo") is None
        assert dogs.get(DOGS, b"x") == b"x" * 4000
    finally:
        dogs.close()


def test_slab_pool_fuzz_gives_every_page_back() -> None:
    # every size class (8 ... 2048 in-page, then whole pages) allocated and
    # freed at random: no chunk given twice, and once everything is freed
    # the pages merge back into one free run (t/126 TEST 10's fuzz, on the
    # model alone)
    rng = random.Random(7)
    pool = SlabPool(200 << 10)
    pages = pool.pfree
    live: dict[int, int] = {}
    for _ in range(20000):
        if live and rng.random() < 0.45:
            address = rng.choice(list(live))
            del live[address]
            pool.free(address)
            continue
        size = rng.choice((1, 8, 9, 16, 17, 33, 64, 65, 128, 200, 1000, 2048, 2049, 9000))
        address = pool.alloc(size)
        if address < 0:
            continue
        assert address not in live
        live[address] = size
    spans = sorted((a, a + max(s, 8)) for a, s in live.items())
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))
    for address in live:
        pool.free(address)
    assert pool.pfree == pages
    first = pool.nxt[pool.free_head] - 1
    assert (first, pool.slab[first]) == (0, pages)


def test_a_reload_keeps_the_zone_and_its_size(tmp_path: Path) -> None:
    # workers started by a reload open the store with the new config: the
    # zone keeps its entries and the pool it was created with
    path = str(tmp_path / "shdict")
    prepare(path, {"dogs": 20 << 10})
    first = SharedDicts(path, {"dogs": 20 << 10})
    assert first.store(DOGS, 0, b"foo", b"a" * 4000, 0, 0) == (True, None, False)
    first.close()
    second = SharedDicts(path, {"dogs": 1 << 20})
    try:
        assert second.capacity(DOGS) == 20 << 10
        assert second.free_space(DOGS) == 4096
        assert second.store(DOGS, 0, b"bar", b"b" * 4000, 0, 0) == (True, None, False)
        assert second.store(DOGS, OP_SAFE_STORE, b"baz", b"c" * 4000, 0, 0) == NO_MEMORY
        assert second.get(DOGS, b"foo") == b"a" * 4000
    finally:
        second.close()


def test_slab_pool_survives_dump_and_load() -> None:
    # what another worker loads from the store is the same pool: both give
    # the same addresses from then on (the in-page bitmaps of small chunks
    # included)
    rng = random.Random(11)
    pool = SlabPool(100 << 10)
    live: list[int] = []
    for _ in range(3000):
        if live and rng.random() < 0.4:
            pool.free(live.pop(rng.randrange(len(live))))
        else:
            address = pool.alloc(rng.choice((8, 16, 30, 64, 100, 700, 3000, 5000)))
            if address >= 0:
                live.append(address)
    copy = SlabPool(100 << 10)
    for chunk in range(pool.chunks()):
        copy.load_chunk(chunk, pool.dump_chunk(chunk))
    copy.load_heads(pool.dump_heads())
    assert copy.pfree == pool.pfree
    for _ in range(2000):
        if live and rng.random() < 0.4:
            address = live.pop(rng.randrange(len(live)))
            pool.free(address)
            copy.free(address)
        else:
            size = rng.choice((8, 16, 30, 64, 100, 700, 3000, 5000))
            address = pool.alloc(size)
            assert copy.alloc(size) == address
            if address >= 0:
                live.append(address)
    assert copy.pfree == pool.pfree
