"""The store behind ``ngx.shared.DICT``: zones shared by every worker of a host.

One LMDB environment (py-lmdb: memory-mapped, safe across processes, one
writer at a time) holds every zone.  Per zone it has four named databases:

- ``v:NAME``: key -> record (type, user flags, expiry, LRU tick, slab
  address, payload);
- ``u:NAME``: the LRU index, tick + key -> b"" (the oldest entry first);
- ``l:NAME``: list items, len(key) + key + position -> item (type, slab
  address, payload);
- ``k:NAME``: the full key of each key longer than SHORT_KEY (below);

and ``meta`` holds each zone's slab pool (fcgi_lua/slab.py).

Keys: LMDB's keys are at most 511 bytes, nginx's 65535.  A key longer than
SHORT_KEY bytes is stored under its first bytes + its SHA-256 (a key of
SHORT_KEY + 1 bytes, which no shorter key can be), and its full key in
``k:NAME``; every lookup compares that full key (another key with the same
hash counts as absent, and a store over it replaces it).  Each operation is one short
transaction: reads take a read transaction (no lock), writes the single
write lock; none of them yields to the event loop.  The semantics (return
values, error strings, when entries are evicted) follow lua-nginx-module
0.10.23's ngx_http_lua_shdict.c step by step; docs/lua-api.md lists where
they differ.

A zone's memory is accounted here, not by LMDB: each zone has a model of
the nginx slab pool that holds a lua_shared_dict (fcgi_lua/slab.py: pages,
size classes, fragmentation), and every entry (and list item) is allocated
in it with the size lua-nginx-module allocates, and freed when nginx frees
it.  A store that does not get memory evicts least recently used entries
(``forcible``) or fails with "no memory" exactly when nginx's would, and
``free_space()`` is the pool's free pages.  The pool lives in ``meta`` by
runs of pages, with a generation: a worker keeps its copy and, at each
write, reloads only the runs another worker changed.

Recency of reads is not written by the read itself (that would make every
get a write transaction): a worker remembers the keys it read, with the time,
and writes them into the LRU index with its next write, or after
TOUCH_FLUSH_DELAY.  Within one worker the order is exact; across workers a
read counts for eviction at most that late.

The environment must be opened in the process that uses it, after any fork
(``SharedDicts.open``); the master only prepares it (``prepare``), which
clears it, as nginx starts with empty zones.  Lua never holds a Python
object of this module: zones are integer ids, values plain strings/numbers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import lmdb

from fcgi_lua.slab import CHUNK_PAGES, PAGE, SlabPool, zone_pages

# Value types, as lua-nginx-module numbers them (LUA_T* + its list type).
TNIL, TBOOLEAN, TNUMBER, TSTRING, TLIST = 0, 1, 3, 4, 5

# Store operations (lua-resty-core's op argument).
OP_ADD = 0x0001
OP_REPLACE = 0x0002
OP_SAFE_STORE = 0x0004

# type, user flags, expires (ms since the epoch, 0: never), LRU tick, slab
# address of the node
_RECORD = struct.Struct("<BIqQq")
_HEAD = _RECORD.size
# a list's payload: first position, end position
_LIST = struct.Struct("<qq")
# a list item: type, slab address, then the value
_ITEM = struct.Struct("<Bq")
_GEN = struct.Struct("<Q")
# a zone's pool header: generation, zone size (then the runs' generations
# and the pool's list heads)
_POOL_HEAD = struct.Struct("<QQ")
_DOUBLE = struct.Struct("<d")
_TICK = struct.Struct(">Q")
_POSITION = struct.Struct(">Q")
_USED = struct.Struct("<Q")
# list positions start mid-range so lpush can go below and rpush above
_MIDDLE = 1 << 62

# What lua-nginx-module asks nginx's slab allocator for: an entry is the
# rbtree node up to its color field (32 bytes on 64-bit) +
# ngx_http_lua_shdict_node_t up to its data (36) + key + value; a list's
# node has an ngx_queue_t (16) for its value, rounded up to 8; a list item
# is ngx_http_lua_shdict_list_node_t up to its data (21) + value.  At zone
# init it allocates its ngx_http_lua_shdict_shctx_t (80) and the log
# context string (28 + the zone's name).
_NODE_OVERHEAD = 68
_LIST_HEAD = 16
_ITEM_OVERHEAD = 21
_SHCTX = 80
_LOG_CTX = 28
# Longer keys are stored under a hash (module docstring).
SHORT_KEY = 400

# nginx refuses smaller zones ("invalid lua shared dict size").
MIN_ZONE_SIZE = 8192
# Keys longer than this are refused ("key too long"), as lua-resty-core does
# (nginx's key_len is a u_short).
MAX_KEY_LEN = 65535
# A worker writes the recency of its reads at its next write, or after this
# many seconds, or once this many keys wait (see the module docstring).
TOUCH_FLUSH_DELAY = 1.0
TOUCH_FLUSH_COUNT = 4096


class SharedDictError(Exception):
    """The store cannot be created or opened (a path problem, LMDB)."""


def entry_size(key_len: int, value_len: int) -> int:
    """What an entry asks the slab pool for."""
    return _NODE_OVERHEAD + key_len + value_len


def _list_size(key_len: int) -> int:
    return -(-(_NODE_OVERHEAD + key_len + _LIST_HEAD) // 8) * 8


def _item_size(value_len: int) -> int:
    return _ITEM_OVERHEAD + value_len


def new_pool(name: str, size: int) -> SlabPool:
    """A zone's slab pool as nginx leaves it after the zone's init."""
    pool = SlabPool(size)
    pool.alloc(_SHCTX)
    pool.alloc(_LOG_CTX + len(name.encode()))
    return pool


def db_key(key: bytes) -> bytes:
    """The LMDB key of ``key`` (module docstring)."""
    if len(key) <= SHORT_KEY:
        return key
    return key[: SHORT_KEY + 1 - 32] + hashlib.sha256(key).digest()


def default_path(listen: list[str]) -> str:
    """Where a config without ``shared_dict_path`` keeps its zones: the
    system temp dir, keyed by user and listen addresses (two instances
    cannot listen on the same ones, so they never share a store)."""
    digest = hashlib.sha1("\n".join(sorted(listen)).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"fcgi-lua-shdict-{os.getuid()}-{digest}")


def _map_size(zones: Mapping[str, int]) -> int:
    # LMDB's file must hold the records, the LRU index, B-tree pages about
    # half full and the copies a write makes before the old pages are freed:
    # 4x the budgets plus slack.  The map is sparse: unused space costs
    # address space, not memory or disk.
    return 4 * sum(zones.values()) + (64 << 20)


def _open_env(path: str, zones: Mapping[str, int]) -> Any:
    return lmdb.open(
        path,
        map_size=_map_size(zones),
        max_dbs=4 * len(zones) + 2,
        # one reader slot per process (lupa runs in one thread): 256 workers
        # + the master + spare
        max_readers=512,
        # Durability is not wanted: zones start empty at every start.
        sync=False,
        metasync=False,
        lock=True,
        mode=0o600,
    )


def prepare(path: str, zones: Mapping[str, int]) -> None:
    """The master, at start: an empty store at ``path`` for ``zones``
    (whatever was there is removed, as nginx's zones start empty)."""
    try:
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.makedirs(path, mode=0o700)
        env = _open_env(path, zones)
    except (OSError, lmdb.Error) as exc:
        raise SharedDictError(f"cannot create the shared dict store {path}: {exc}") from exc
    try:
        with env.begin(write=True) as txn:
            for name in zones:
                for prefix in (b"v:", b"u:", b"l:", b"k:"):
                    env.open_db(prefix + name.encode(), txn=txn)
    finally:
        env.close()


class _Zone:
    __slots__ = (
        "capacity", "gen", "items", "keys", "lru", "name", "pool", "pool_key", "pool_size",
        "stamps", "values",
    )  # fmt: skip

    def __init__(self, env: Any, name: str, capacity: int, txn: Any) -> None:
        raw = name.encode()
        self.name = name
        self.capacity = capacity
        self.values = env.open_db(b"v:" + raw, txn=txn)
        self.lru = env.open_db(b"u:" + raw, txn=txn)
        self.items = env.open_db(b"l:" + raw, txn=txn)
        self.keys = env.open_db(b"k:" + raw, txn=txn)
        self.pool_key = b"S:" + raw
        # this worker's copy of the slab pool, its generation and the
        # generation of each of its runs of pages (None: reload all)
        self.pool: SlabPool | None = None
        self.pool_size = capacity
        self.gen = -1
        self.stamps = b""


def _decode(typ: int, raw: bytes) -> Any:
    if typ == TSTRING:
        return raw[_HEAD:]
    if typ == TNUMBER:
        return _number(_DOUBLE.unpack_from(raw, _HEAD)[0])
    return raw[_HEAD] != 0


def _number(value: float) -> float | int:
    # Lua 5.3+ has integers: give back 1, not 1.0, for what was set as 1
    # (LuaJIT sees a double either way).
    if value.is_integer() and -(2**53) <= value <= 2**53:
        return int(value)
    return value


def _encode(value: Any) -> tuple[int, bytes]:
    if isinstance(value, bytes):
        return TSTRING, value
    if isinstance(value, bool):
        return TBOOLEAN, b"\x01" if value else b"\x00"
    return TNUMBER, _DOUBLE.pack(float(value))


def _item_key(key: bytes, position: int) -> bytes:
    return len(key).to_bytes(2, "big") + key + _POSITION.pack(position)


class SharedDicts:
    """Every zone of the host, opened in one process (after the fork).

    Zones are numbered from 1 in the order of ``zones``; the methods take
    that id, take keys and string values as bytes, and return what the Lua
    methods return (tuples become multiple values).
    """

    def __init__(
        self,
        path: str,
        zones: Mapping[str, int],
        *,
        clock: Callable[[], float] = time.time,
        ticks: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.path = path
        self._clock = clock
        self._ticks = ticks
        try:
            if not os.path.isdir(path):
                prepare(path, zones)  # e.g. a reload that added shared dicts
            self._env = _open_env(path, zones)
            self._env.reader_check()  # slots of workers that were killed
            with self._env.begin(write=True) as txn:
                self._zones = [_Zone(self._env, n, s, txn) for n, s in zones.items()]
                self._meta = self._env.open_db(b"meta", txn=txn)
        except (OSError, lmdb.Error) as exc:
            raise SharedDictError(f"cannot open the shared dict store {path}: {exc}") from exc
        self.ids = {zone.name: i for i, zone in enumerate(self._zones, 1)}
        self.max_key_len = MAX_KEY_LEN
        self._touched: dict[tuple[int, bytes], int] = {}
        self._touch_deadline = 0.0
        # the zones whose pool the current write transaction has loaded
        self._synced: list[_Zone] = []

    def close(self) -> None:
        self._env.close()

    def functions(self, table_from: Callable[[Any], Any]) -> dict[bytes, Any]:
        """What shdict.lua calls (C.get, C.store ...)."""

        def get_keys(zid: int, max_count: int) -> Any:
            return table_from(self.get_keys(zid, max_count))

        return {
            b"get": self.get,
            b"get_stale": self.get_stale,
            b"store": self.store,
            b"incr": self.incr,
            b"push": self.push,
            b"pop": self.pop,
            b"llen": self.llen,
            b"ttl": self.ttl,
            b"expire": self.expire,
            b"flush_all": self.flush_all,
            b"flush_expired": self.flush_expired,
            b"get_keys": get_keys,
            b"capacity": self.capacity,
            b"free_space": self.free_space,
            b"max_key_len": self.max_key_len,
        }

    # -- keys -------------------------------------------------------------

    def _get_record(self, txn: Any, zone: _Zone, key: bytes) -> bytes | None:
        """The record of ``key`` (its LMDB key is ``db_key(key)``), None
        when absent or when a long key's hash is another key's."""
        dbkey = db_key(key)
        raw: bytes | None = txn.get(dbkey, db=zone.values)
        if raw is not None and dbkey is not key and txn.get(dbkey, db=zone.keys) != key:
            return None
        return raw

    def _full_key(self, txn: Any, zone: _Zone, dbkey: bytes) -> bytes:
        if len(dbkey) <= SHORT_KEY:
            return dbkey
        full: bytes | None = txn.get(dbkey, db=zone.keys)
        return dbkey if full is None else bytes(full)

    # -- reads (a read transaction, no lock) ---------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _read(self, zid: int, key: bytes) -> bytes | None:
        zone = self._zones[zid - 1]
        txn = self._env.begin(db=zone.values)
        try:
            if len(key) <= SHORT_KEY:  # the common case, without a call
                raw: bytes | None = txn.get(key)
                return raw
            return self._get_record(txn, zone, key)
        finally:
            txn.abort()

    def _touch(self, zid: int, key: bytes) -> None:
        touched = self._touched
        if not touched:
            self._touch_deadline = time.monotonic() + TOUCH_FLUSH_DELAY
        touched[(zid, key if len(key) <= SHORT_KEY else db_key(key))] = self._ticks()
        if len(touched) >= TOUCH_FLUSH_COUNT or time.monotonic() >= self._touch_deadline:
            with self._write():
                pass

    def get(self, zid: int, key: bytes) -> Any:
        raw = self._read(zid, key)
        if raw is None:
            return None
        typ, flags, expires, _, _ = _RECORD.unpack_from(raw)
        if expires and expires < self._now_ms():
            return None
        self._touch(zid, key)
        if typ == TLIST:
            return None, b"value is a list"
        value = _decode(typ, raw)
        return (value, flags) if flags else value

    def get_stale(self, zid: int, key: bytes) -> Any:
        raw = self._read(zid, key)
        if raw is None:
            return None
        typ, flags, expires, _, _ = _RECORD.unpack_from(raw)
        self._touch(zid, key)
        if typ == TLIST:
            return None, b"value is a list"
        stale = bool(expires) and expires < self._now_ms()
        return _decode(typ, raw), flags or None, stale

    def llen(self, zid: int, key: bytes) -> Any:
        raw = self._read(zid, key)
        if raw is None:
            return 0
        typ, _, expires, _, _ = _RECORD.unpack_from(raw)
        if expires and expires < self._now_ms():
            return 0
        if typ != TLIST:
            return None, b"value not a list"
        self._touch(zid, key)
        first, end = _LIST.unpack_from(raw, _HEAD)
        return end - first

    def ttl(self, zid: int, key: bytes) -> Any:
        raw = self._read(zid, key)
        if raw is None:
            return None, b"not found"
        expires = _RECORD.unpack_from(raw)[2]
        if not expires:
            return 0
        return (expires - self._now_ms()) / 1000

    def c_find_zone(self, name: bytes) -> int:
        """lua-nginx-module's C API (fcgi_lua/_ngxsyms.c): a zone's id, 0
        for none."""
        return self.ids.get(name.decode("utf-8", "surrogateescape"), 0)

    def c_get(self, zid: int, key: bytes) -> int | tuple[int, Any]:
        """ngx_http_lua_shared_dict_get (fcgi_lua/_ngxsyms.c): NGX_DECLINED
        (-5) when absent, NGX_DONE (-4) when expired, else (type, value)."""
        raw = self._read(zid, key)
        if raw is None:
            return -5
        typ, _, expires, _, _ = _RECORD.unpack_from(raw)
        if expires and expires < self._now_ms():
            return -4
        self._touch(zid, key)
        return typ, None if typ == TLIST else _decode(typ, raw)

    def capacity(self, zid: int) -> int:
        """The zone's size: the configured one, or the one the zone was
        created with when a reload changed it (the zone keeps its pool)."""
        zone = self._zones[zid - 1]
        with self._env.begin(db=self._meta) as txn:
            head = txn.get(zone.pool_key)
            return zone.capacity if head is None else int(_POOL_HEAD.unpack_from(head)[1])

    def free_space(self, zid: int) -> int:
        """nginx's: the pool's free pages (not the free room in its partly
        used pages) times the page size."""
        zone = self._zones[zid - 1]
        with self._env.begin(db=self._meta) as txn:
            head = txn.get(zone.pool_key)
            if head is None:
                return new_pool(zone.name, zone.capacity).pfree * PAGE
            # the heads (pfree first) follow the header and the stamps
            chunks = -(-zone_pages(_POOL_HEAD.unpack_from(head)[1]) // CHUNK_PAGES)
            return int(_GEN.unpack_from(head, _POOL_HEAD.size + 8 * chunks)[0]) * PAGE

    def get_keys(self, zid: int, max_count: int) -> list[bytes]:
        zone = self._zones[zid - 1]
        if self._touched:
            with self._write():
                pass  # the order below includes this worker's reads
        now = self._now_ms()
        keys = []
        with self._env.begin() as txn:
            values = txn.cursor(db=zone.values)
            for index_key in txn.cursor(db=zone.lru).iternext(values=False):
                dbkey = bytes(index_key[8:])
                raw = values.get(dbkey)
                if raw is None:
                    continue
                expires = _RECORD.unpack_from(raw)[2]
                if expires == 0 or expires > now:
                    keys.append(self._full_key(txn, zone, dbkey))
                    if max_count and len(keys) == max_count:
                        break
        return keys

    # -- writes (the write lock, one short transaction) -------------------------

    @contextmanager
    def _write(self) -> Iterator[Any]:
        txn = self._env.begin(write=True)
        try:
            if self._touched:
                self._apply_touches(txn)
            yield txn
            self._save_pools(txn)
        except BaseException:
            txn.abort()
            for zone in self._synced:
                zone.pool = None  # its copy may be ahead of the store
            self._synced = []
            raise
        txn.commit()

    def _pool(self, txn: Any, zone: _Zone) -> SlabPool:
        """The zone's slab pool, as the store has it now (reloading the runs
        of pages another worker changed)."""
        if zone in self._synced and zone.pool is not None:
            return zone.pool
        head = txn.get(zone.pool_key, db=self._meta)
        if head is None:
            # the first write since the store was prepared
            pool = zone.pool = new_pool(zone.name, zone.capacity)
            zone.pool_size = zone.capacity
            zone.gen = 0
            zone.stamps = bytes(8 * pool.chunks())
        else:
            gen, size = _POOL_HEAD.unpack_from(head)
            loaded = zone.pool
            if loaded is not None and zone.pool_size == size:
                pool = loaded
            else:
                # the size the zone was created with (a reload may have
                # configured another)
                pool = zone.pool = SlabPool(size)
                zone.pool_size = size
                zone.stamps = b""
            if gen != zone.gen or zone.stamps == b"":
                end = _POOL_HEAD.size + 8 * pool.chunks()
                stamps = bytes(head[_POOL_HEAD.size : end])
                for chunk in range(pool.chunks()):
                    at = slice(8 * chunk, 8 * chunk + 8)
                    if stamps[at] != zone.stamps[at]:
                        key = zone.pool_key + chunk.to_bytes(4, "big")
                        pool.load_chunk(chunk, txn.get(key, db=self._meta))
                pool.load_heads(bytes(head[end:]))
                zone.gen = gen
                zone.stamps = stamps
            pool.dirty.clear()
        self._synced.append(zone)
        return pool

    def _save_pools(self, txn: Any) -> None:
        for zone in self._synced:
            pool = zone.pool
            if pool is None or (not pool.dirty and zone.gen > 0):
                continue
            gen = zone.gen + 1
            stamps = bytearray(zone.stamps)
            for chunk in {i // CHUNK_PAGES for i in pool.dirty if i < pool.n}:
                key = zone.pool_key + chunk.to_bytes(4, "big")
                txn.put(key, pool.dump_chunk(chunk), db=self._meta)
                stamps[8 * chunk : 8 * chunk + 8] = _GEN.pack(gen)
            head = _POOL_HEAD.pack(gen, zone.pool_size) + stamps + pool.dump_heads()
            txn.put(zone.pool_key, head, db=self._meta)
            zone.gen = gen
            zone.stamps = bytes(stamps)
            pool.dirty.clear()
        self._synced = []

    def _apply_touches(self, txn: Any) -> None:
        touched, self._touched = self._touched, {}
        for (zid, dbkey), tick in touched.items():
            zone = self._zones[zid - 1]
            raw = txn.get(dbkey, db=zone.values)
            if raw is None:
                continue
            old = _RECORD.unpack_from(raw)
            if old[3] >= tick:
                continue  # written since the read: that was later
            txn.delete(_TICK.pack(old[3]) + dbkey, db=zone.lru)
            txn.put(_TICK.pack(tick) + dbkey, b"", db=zone.lru)
            record = _RECORD.pack(old[0], old[1], old[2], tick, old[4]) + raw[_HEAD:]
            txn.put(dbkey, record, db=zone.values)

    def _put(
        self, txn: Any, zone: _Zone, dbkey: bytes, typ: int, flags: int, expires: int,
        payload: bytes, old_tick: int | None, address: int,
    ) -> None:  # fmt: skip
        """Write a record as the most recently used entry."""
        tick = self._ticks()
        if old_tick is not None:
            txn.delete(_TICK.pack(old_tick) + dbkey, db=zone.lru)
        txn.put(_TICK.pack(tick) + dbkey, b"", db=zone.lru)
        txn.put(dbkey, _RECORD.pack(typ, flags, expires, tick, address) + payload, db=zone.values)

    def _insert(
        self, txn: Any, zone: _Zone, key: bytes, typ: int, flags: int, expires: int,
        payload: bytes, address: int,
    ) -> bytes:  # fmt: skip
        """A new entry (its node allocated at ``address``); its LMDB key."""
        dbkey = db_key(key)
        if dbkey is not key:
            txn.put(dbkey, key, db=zone.keys)
        self._put(txn, zone, dbkey, typ, flags, expires, payload, None, address)
        return dbkey

    def _remove(self, txn: Any, zone: _Zone, dbkey: bytes, raw: bytes) -> None:
        """Delete an entry (and a list's items) and free its memory, the
        items first, as nginx does."""
        typ, _, _, tick, address = _RECORD.unpack_from(raw)
        pool = self._pool(txn, zone)
        if typ == TLIST:
            first, end = _LIST.unpack_from(raw, _HEAD)
            for position in range(first, end):
                item_key = _item_key(dbkey, position)
                item = txn.get(item_key, db=zone.items)
                if item is not None:
                    pool.free(_ITEM.unpack_from(item)[1])
                txn.delete(item_key, db=zone.items)
        txn.delete(_TICK.pack(tick) + dbkey, db=zone.lru)
        txn.delete(dbkey, db=zone.values)
        if len(dbkey) > SHORT_KEY:
            txn.delete(dbkey, db=zone.keys)
        pool.free(address)

    def _expire(self, txn: Any, zone: _Zone, n: int, now: int) -> int:
        """nginx's ngx_http_lua_shdict_expire: n == 1 removes up to two
        expired entries from the LRU end; n == 0 removes the least recently
        used entry whatever its expiry, then up to two expired ones."""
        freed = 0
        cursor = txn.cursor(db=zone.lru)
        while n < 3:
            if not cursor.first():
                return freed
            dbkey = bytes(cursor.key()[8:])
            raw = txn.get(dbkey, db=zone.values)
            if raw is None:  # cannot happen: the index follows the records
                cursor.delete()
                continue
            if n != 0:
                expires = _RECORD.unpack_from(raw)[2]
                if expires == 0 or expires - now > 0:
                    return freed
            n += 1
            self._remove(txn, zone, dbkey, raw)
            freed += 1
        return freed

    def _allocate(self, txn: Any, zone: _Zone, size: int, now: int) -> tuple[int, bool]:
        """(address or -1, forcible): nginx's allocation of an entry, which
        evicts least recently used entries when the pool has no room, up to
        30 rounds."""
        pool = self._pool(txn, zone)
        address = pool.alloc(size)
        if address >= 0:
            return address, False
        forcible = False
        for _ in range(30):
            if self._expire(txn, zone, 0, now) == 0:
                break
            forcible = True
            address = pool.alloc(size)
            if address >= 0:
                return address, True
        return -1, forcible

    def _lookup(
        self, txn: Any, zone: _Zone, key: bytes, now: int
    ) -> tuple[bytes, bytes | None, bool]:
        """(LMDB key, record or None, expired); another key under the same
        hash is removed (it would be overwritten)."""
        dbkey = db_key(key)
        raw: bytes | None = txn.get(dbkey, db=zone.values)
        if raw is None:
            return dbkey, None, False
        if dbkey is not key and txn.get(dbkey, db=zone.keys) != key:
            self._remove(txn, zone, dbkey, raw)
            return dbkey, None, False
        expires = _RECORD.unpack_from(raw)[2]
        return dbkey, raw, bool(expires) and expires - now < 0

    def store(
        self, zid: int, op: int, key: bytes, value: Any, exptime: Any, flags: Any
    ) -> tuple[bool, bytes | None, bool]:
        """set/safe_set/add/safe_add/replace/delete -> ok, err, forcible"""
        zone = self._zones[zid - 1]
        if value is None and op & (OP_ADD | OP_REPLACE):
            return False, b"attempt to add or replace nil values", False
        ms = int(exptime * 1000)  # lua-resty-core passes a C long of ms
        user_flags = int(flags) & 0xFFFFFFFF
        try:
            with self._write() as txn:
                return self._store(txn, zone, op, key, value, ms, user_flags)
        except lmdb.MapFullError:
            return False, b"no memory", False

    def _store(
        self, txn: Any, zone: _Zone, op: int, key: bytes, value: Any, ms: int, flags: int
    ) -> tuple[bool, bytes | None, bool]:
        now = self._now_ms()
        self._expire(txn, zone, 1, now)
        dbkey, raw, expired = self._lookup(txn, zone, key, now)
        if op & OP_REPLACE and (raw is None or expired):
            return False, b"not found", False
        if op & OP_ADD and raw is not None and not expired:
            return False, b"exists", False
        typ, payload = (TNIL, b"") if value is None else _encode(value)
        expires = now + ms if ms > 0 else 0
        if raw is not None:
            if value is not None and len(payload) == len(raw) - _HEAD and raw[0] != TLIST:
                # same size: nginx rewrites the node in place
                _, _, _, tick, address = _RECORD.unpack_from(raw)
                self._put(txn, zone, dbkey, typ, flags, expires, payload, tick, address)
                return True, None, False
            self._remove(txn, zone, dbkey, raw)
        if value is None:
            return True, None, False
        size = entry_size(len(key), len(payload))
        if op & OP_SAFE_STORE:
            address = self._pool(txn, zone).alloc(size)
            if address < 0:
                return False, b"no memory", False
            forcible = False
        else:
            address, forcible = self._allocate(txn, zone, size, now)
            if address < 0:
                return False, b"no memory", forcible
        self._insert(txn, zone, key, typ, flags, expires, payload, address)
        return True, None, forcible

    def incr(self, zid: int, key: bytes, value: Any, init: Any, init_ttl: Any) -> Any:
        """-> new value | (nil, err); with ``init``: (value, nil, forcible)."""
        zone = self._zones[zid - 1]
        has_init = init is not None
        try:
            with self._write() as txn:
                result, err, forcible = self._incr(
                    txn, zone, key, float(value), has_init, float(init or 0), init_ttl
                )
        except lmdb.MapFullError:
            return None, b"no memory"
        if err is not None:
            return None, err
        if has_init:
            return _number(result), None, forcible
        return _number(result)

    def _incr(
        self, txn: Any, zone: _Zone, key: bytes, value: float, has_init: bool, init: float,
        init_ttl: Any,
    ) -> tuple[float, bytes | None, bool]:  # fmt: skip
        now = self._now_ms()
        self._expire(txn, zone, 1, now)
        dbkey, raw, expired = self._lookup(txn, zone, key, now)
        if raw is not None and not expired:
            typ, flags, expires, tick, address = _RECORD.unpack_from(raw)
            if typ != TNUMBER:
                return 0.0, b"not a number", False
            number = _DOUBLE.unpack_from(raw, _HEAD)[0] + value
            self._put(txn, zone, dbkey, typ, flags, expires, _DOUBLE.pack(number), tick, address)
            return number, None, False
        if not has_init:
            return 0.0, b"not found", False
        number = value + init
        ms = int(float(init_ttl or 0) * 1000)
        expires = now + ms if ms > 0 else 0
        payload = _DOUBLE.pack(number)
        if raw is not None:  # expired
            if len(raw) - _HEAD == _DOUBLE.size and raw[0] != TLIST:
                _, _, _, tick, address = _RECORD.unpack_from(raw)
                self._put(txn, zone, dbkey, TNUMBER, 0, expires, payload, tick, address)
                return number, None, False
            self._remove(txn, zone, dbkey, raw)
        address, forcible = self._allocate(txn, zone, entry_size(len(key), _DOUBLE.size), now)
        if address < 0:
            return 0.0, b"no memory", forcible
        self._insert(txn, zone, key, TNUMBER, 0, expires, payload, address)
        return number, None, forcible

    def push(self, zid: int, key: bytes, value: Any, left: bool) -> Any:
        """lpush/rpush -> new length | (nil, err) | (false, "no memory")"""
        zone = self._zones[zid - 1]
        try:
            with self._write() as txn:
                return self._push(txn, zone, key, value, left)
        except lmdb.MapFullError:
            return False, b"no memory"

    def _push(self, txn: Any, zone: _Zone, key: bytes, value: Any, left: bool) -> Any:
        now = self._now_ms()
        self._expire(txn, zone, 1, now)
        dbkey, raw, expired = self._lookup(txn, zone, key, now)
        pool = self._pool(txn, zone)
        if raw is not None and not expired and raw[0] != TLIST:
            return None, b"value not a list"
        if raw is not None and expired:
            if raw[0] == TLIST:
                # nginx frees the items, keeps the list's node (no expiry)
                _, _, _, tick, address = _RECORD.unpack_from(raw)
                first, end = _LIST.unpack_from(raw, _HEAD)
                for position in range(first, end):
                    item_key = _item_key(dbkey, position)
                    item = txn.get(item_key, db=zone.items)
                    if item is not None:
                        pool.free(_ITEM.unpack_from(item)[1])
                    txn.delete(item_key, db=zone.items)
                empty = _LIST.pack(_MIDDLE, _MIDDLE)
                self._put(txn, zone, dbkey, TLIST, 0, 0, empty, tick, address)
                raw = txn.get(dbkey, db=zone.values)
            else:
                self._remove(txn, zone, dbkey, raw)
                raw = None
        if raw is None:
            address = pool.alloc(_list_size(len(key)))
            if address < 0:
                return False, b"no memory"
            dbkey = self._insert(txn, zone, key, TLIST, 0, 0, _LIST.pack(_MIDDLE, _MIDDLE), address)
            raw = txn.get(dbkey, db=zone.values)
        _, flags, expires, tick, address = _RECORD.unpack_from(raw)
        first, end = _LIST.unpack_from(raw, _HEAD)
        typ, payload = _encode(value)
        item_address = pool.alloc(_item_size(len(payload)))
        if item_address < 0:
            if first == end:  # an empty list is not kept
                self._remove(txn, zone, dbkey, raw)
            return None, b"no memory"
        if left:
            first -= 1
            position = first
        else:
            position = end
            end += 1
        txn.put(_item_key(dbkey, position), _ITEM.pack(typ, item_address) + payload, db=zone.items)
        self._put(txn, zone, dbkey, TLIST, flags, expires, _LIST.pack(first, end), tick, address)
        return end - first

    def pop(self, zid: int, key: bytes, left: bool) -> Any:
        """lpop/rpop -> value | nil | (nil, "value not a list")"""
        zone = self._zones[zid - 1]
        with self._write() as txn:
            now = self._now_ms()
            self._expire(txn, zone, 1, now)
            dbkey, raw, expired = self._lookup(txn, zone, key, now)
            if raw is None or expired:
                return None
            typ, flags, expires, tick, address = _RECORD.unpack_from(raw)
            if typ != TLIST:
                return None, b"value not a list"
            first, end = _LIST.unpack_from(raw, _HEAD)
            position = first if left else end - 1
            item_key = _item_key(dbkey, position)
            item = bytes(txn.get(item_key, db=zone.items))
            txn.delete(item_key, db=zone.items)
            pool = self._pool(txn, zone)
            pool.free(_ITEM.unpack_from(item)[1])
            if end - first == 1:
                # the list's node goes too (its items are gone)
                self._remove(txn, zone, dbkey, _RECORD.pack(TNIL, 0, 0, tick, address))
            else:
                first, end = (first + 1, end) if left else (first, end - 1)
                payload = _LIST.pack(first, end)
                self._put(txn, zone, dbkey, TLIST, flags, expires, payload, tick, address)
        if item[0] == TSTRING:
            return item[_ITEM.size :]
        return _number(_DOUBLE.unpack_from(item, _ITEM.size)[0])

    def expire(self, zid: int, key: bytes, exptime: Any) -> Any:
        """-> true | (nil, "not found"); an expired entry comes back to life,
        as in nginx (it looks the key up without checking expiry)."""
        zone = self._zones[zid - 1]
        ms = int(exptime * 1000)
        with self._write() as txn:
            raw = self._get_record(txn, zone, key)
            if raw is None:
                return None, b"not found"
            typ, flags, _, tick, address = _RECORD.unpack_from(raw)
            expires = self._now_ms() + ms if ms > 0 else 0
            record = _RECORD.pack(typ, flags, expires, tick, address) + raw[_HEAD:]
            txn.put(db_key(key), record, db=zone.values)
        return True

    def flush_all(self, zid: int) -> None:
        """Every entry expires now (get_stale still sees them), then the
        least recently used one is removed, as nginx does."""
        zone = self._zones[zid - 1]
        with self._write() as txn:
            cursor = txn.cursor(db=zone.values)
            updates = [
                (bytes(key), _RECORD.unpack_from(raw), bytes(raw[_HEAD:]))
                for key, raw in cursor.iternext()
            ]
            for dbkey, (typ, flags, _, tick, address), payload in updates:
                record = _RECORD.pack(typ, flags, 1, tick, address) + payload
                txn.put(dbkey, record, db=zone.values)
            self._expire(txn, zone, 0, self._now_ms())

    def flush_expired(self, zid: int, max_count: int) -> int:
        zone = self._zones[zid - 1]
        freed = 0
        with self._write() as txn:
            now = self._now_ms()
            expired = []
            for index_key in txn.cursor(db=zone.lru).iternext(values=False):
                dbkey = bytes(index_key[8:])
                raw = txn.get(dbkey, db=zone.values)
                if raw is None:
                    continue
                expires = _RECORD.unpack_from(raw)[2]
                if expires != 0 and expires <= now:
                    expired.append((dbkey, raw))
                    if max_count and len(expired) == max_count:
                        break
            for dbkey, raw in expired:
                self._remove(txn, zone, dbkey, raw)
                freed += 1
        return freed


def store_path(configured: str, listen: list[str]) -> str:
    """``shared_dict_path``, or the default directory for these addresses."""
    return configured or default_path(listen)


def remove(path: str) -> None:
    """The master, at exit: the zones die with the server, as nginx's do."""
    shutil.rmtree(path, ignore_errors=True)
