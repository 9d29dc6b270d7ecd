"""The store behind ``ngx.shared.DICT``: zones shared by every worker of a host.

One LMDB environment (py-lmdb: memory-mapped, safe across processes, one
writer at a time) holds every zone.  Per zone it has three named databases:

- ``v:NAME``: key -> record (type, user flags, expiry, LRU tick, payload);
- ``u:NAME``: the LRU index, tick + key -> b"" (the oldest entry first);
- ``l:NAME``: list items, len(key) + key + position -> item.

and ``meta`` holds each zone's used bytes.  Each operation is one short
transaction: reads take a read transaction (no lock), writes the single
write lock; none of them yields to the event loop.  The semantics (return
values, error strings, when entries are evicted) follow lua-nginx-module
0.10.23's ngx_http_lua_shdict.c step by step; docs/lua-api.md lists where
they differ.

A zone's byte budget is enforced here, not by LMDB: every entry costs what
nginx's slab allocator would give it (header + key + value, rounded up), and
a store that does not fit evicts least recently used entries (``forcible``).

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

# Value types, as lua-nginx-module numbers them (LUA_T* + its list type).
TNIL, TBOOLEAN, TNUMBER, TSTRING, TLIST = 0, 1, 3, 4, 5

# Store operations (lua-resty-core's op argument).
OP_ADD = 0x0001
OP_REPLACE = 0x0002
OP_SAFE_STORE = 0x0004

# type, user flags, expires (ms since the epoch, 0: never), LRU tick
_RECORD = struct.Struct("<BIqQ")
_HEAD = _RECORD.size
# a list's payload: first position, end position, bytes its items cost
_LIST = struct.Struct("<qqQ")
_DOUBLE = struct.Struct("<d")
_TICK = struct.Struct(">Q")
_POSITION = struct.Struct(">Q")
_USED = struct.Struct("<Q")
# list positions start mid-range so lpush can go below and rpush above
_MIDDLE = 1 << 62

# What nginx's slab allocator spends on an entry: the rbtree node up to its
# color field (32 bytes on 64-bit) + ngx_http_lua_shdict_node_t up to its
# data (36) + key + value, rounded up to a power of two (whole pages past
# half a page).  A list item: ngx_http_lua_shdict_list_node_t (24) + value.
_NODE_OVERHEAD = 68
_LIST_HEAD = 16
_ITEM_OVERHEAD = 24
_PAGE = 4096

# nginx refuses smaller zones ("invalid lua shared dict size").
MIN_ZONE_SIZE = 8192
# Keys longer than this are refused, as nginx's u_short key_len forces.
MAX_KEY_LEN = 65535
# A worker writes the recency of its reads at its next write, or after this
# many seconds, or once this many keys wait (see the module docstring).
TOUCH_FLUSH_DELAY = 1.0
TOUCH_FLUSH_COUNT = 4096


class SharedDictError(Exception):
    """The store cannot be created or opened (a path problem, LMDB)."""


def _slab(size: int) -> int:
    if size > _PAGE // 2:
        return -(-size // _PAGE) * _PAGE
    rounded = 8
    while rounded < size:
        rounded <<= 1
    return rounded


def entry_cost(key_len: int, value_len: int) -> int:
    return _slab(_NODE_OVERHEAD + key_len + value_len)


def _list_cost(key_len: int) -> int:
    return _slab(-(-(_NODE_OVERHEAD + key_len + _LIST_HEAD) // 8) * 8)


def _item_cost(value_len: int) -> int:
    return _slab(_ITEM_OVERHEAD + value_len)


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
        max_dbs=3 * len(zones) + 2,
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
                for prefix in (b"v:", b"u:", b"l:"):
                    env.open_db(prefix + name.encode(), txn=txn)
    finally:
        env.close()


class _Zone:
    __slots__ = ("capacity", "items", "lru", "name", "used_key", "values")

    def __init__(self, env: Any, name: str, capacity: int, txn: Any) -> None:
        raw = name.encode()
        self.name = name
        self.capacity = capacity
        self.values = env.open_db(b"v:" + raw, txn=txn)
        self.lru = env.open_db(b"u:" + raw, txn=txn)
        self.items = env.open_db(b"l:" + raw, txn=txn)
        self.used_key = raw


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
        # LMDB keys are at most max_key_size() bytes (511 as built), not
        # nginx's 65535: longer keys get nginx's "key too long" instead of an
        # MDB_BAD_VALSIZE.  A list item's key adds 10 bytes (_item_key), an
        # LRU entry's 8.
        self.max_key_len = min(MAX_KEY_LEN, self._env.max_key_size() - 10)
        self._touched: dict[tuple[int, bytes], int] = {}
        self._touch_deadline = 0.0

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

    # -- reads (a read transaction, no lock) ---------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _read(self, zid: int, key: bytes) -> bytes | None:
        zone = self._zones[zid - 1]
        txn = self._env.begin(db=zone.values)
        try:
            raw: bytes | None = txn.get(key)
        finally:
            txn.abort()
        return raw

    def _touch(self, zid: int, key: bytes) -> None:
        touched = self._touched
        if not touched:
            self._touch_deadline = time.monotonic() + TOUCH_FLUSH_DELAY
        touched[(zid, key)] = self._ticks()
        if len(touched) >= TOUCH_FLUSH_COUNT or time.monotonic() >= self._touch_deadline:
            with self._write():
                pass

    def get(self, zid: int, key: bytes) -> Any:
        raw = self._read(zid, key)
        if raw is None:
            return None
        typ, flags, expires, _ = _RECORD.unpack_from(raw)
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
        typ, flags, expires, _ = _RECORD.unpack_from(raw)
        self._touch(zid, key)
        if typ == TLIST:
            return None, b"value is a list"
        stale = bool(expires) and expires < self._now_ms()
        return _decode(typ, raw), flags or None, stale

    def llen(self, zid: int, key: bytes) -> Any:
        raw = self._read(zid, key)
        if raw is None:
            return 0
        typ, _, expires, _ = _RECORD.unpack_from(raw)
        if expires and expires < self._now_ms():
            return 0
        if typ != TLIST:
            return None, b"value not a list"
        self._touch(zid, key)
        first, end, _ = _LIST.unpack_from(raw, _HEAD)
        return end - first

    def ttl(self, zid: int, key: bytes) -> Any:
        raw = self._read(zid, key)
        if raw is None:
            return None, b"not found"
        expires = _RECORD.unpack_from(raw)[2]
        if not expires:
            return 0
        return (expires - self._now_ms()) / 1000

    def capacity(self, zid: int) -> int:
        return self._zones[zid - 1].capacity

    def free_space(self, zid: int) -> int:
        zone = self._zones[zid - 1]
        with self._env.begin(db=self._meta) as txn:
            used = self._used(txn, zone)
        return max(0, zone.capacity - used)

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
                key = bytes(index_key[8:])
                raw = values.get(key)
                if raw is None:
                    continue
                expires = _RECORD.unpack_from(raw)[2]
                if expires == 0 or expires > now:
                    keys.append(key)
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
        except BaseException:
            txn.abort()
            raise
        txn.commit()

    def _apply_touches(self, txn: Any) -> None:
        touched, self._touched = self._touched, {}
        for (zid, key), tick in touched.items():
            zone = self._zones[zid - 1]
            raw = txn.get(key, db=zone.values)
            if raw is None:
                continue
            old = _RECORD.unpack_from(raw)
            if old[3] >= tick:
                continue  # written since the read: that was later
            txn.delete(_TICK.pack(old[3]) + key, db=zone.lru)
            txn.put(_TICK.pack(tick) + key, b"", db=zone.lru)
            txn.put(key, _RECORD.pack(old[0], old[1], old[2], tick) + raw[_HEAD:], db=zone.values)

    def _used(self, txn: Any, zone: _Zone) -> int:
        raw = txn.get(zone.used_key, db=self._meta)
        return 0 if raw is None else int(_USED.unpack(raw)[0])

    def _add_used(self, txn: Any, zone: _Zone, delta: int) -> None:
        used = self._used(txn, zone) + delta
        txn.put(zone.used_key, _USED.pack(max(0, used)), db=self._meta)

    def _fits(self, txn: Any, zone: _Zone, cost: int) -> bool:
        return self._used(txn, zone) + cost <= zone.capacity

    def _put(
        self, txn: Any, zone: _Zone, key: bytes, typ: int, flags: int, expires: int, payload: bytes,
        old_tick: int | None,
    ) -> None:  # fmt: skip
        """Write a record as the most recently used entry."""
        tick = self._ticks()
        if old_tick is not None:
            txn.delete(_TICK.pack(old_tick) + key, db=zone.lru)
        txn.put(_TICK.pack(tick) + key, b"", db=zone.lru)
        txn.put(key, _RECORD.pack(typ, flags, expires, tick) + payload, db=zone.values)

    def _cost(self, key: bytes, raw: bytes) -> int:
        if raw[0] == TLIST:
            return _list_cost(len(key)) + int(_LIST.unpack_from(raw, _HEAD)[2])
        return entry_cost(len(key), len(raw) - _HEAD)

    def _remove(self, txn: Any, zone: _Zone, key: bytes, raw: bytes) -> None:
        """Delete an entry (and a list's items) and give its bytes back."""
        typ, _, _, tick = _RECORD.unpack_from(raw)
        if typ == TLIST:
            first, end, _ = _LIST.unpack_from(raw, _HEAD)
            for position in range(first, end):
                txn.delete(_item_key(key, position), db=zone.items)
        txn.delete(_TICK.pack(tick) + key, db=zone.lru)
        txn.delete(key, db=zone.values)
        self._add_used(txn, zone, -self._cost(key, raw))

    def _expire(self, txn: Any, zone: _Zone, n: int, now: int) -> int:
        """nginx's ngx_http_lua_shdict_expire: n == 1 removes up to two
        expired entries from the LRU end; n == 0 removes the least recently
        used entry whatever its expiry, then up to two expired ones."""
        freed = 0
        cursor = txn.cursor(db=zone.lru)
        while n < 3:
            if not cursor.first():
                return freed
            key = bytes(cursor.key()[8:])
            raw = txn.get(key, db=zone.values)
            if raw is None:  # cannot happen: the index follows the records
                cursor.delete()
                continue
            if n != 0:
                expires = _RECORD.unpack_from(raw)[2]
                if expires == 0 or expires - now > 0:
                    return freed
            n += 1
            self._remove(txn, zone, key, raw)
            freed += 1
        return freed

    def _allocate(self, txn: Any, zone: _Zone, cost: int, now: int) -> tuple[bool, bool]:
        """(fits, forcible): evict least recently used entries, as nginx
        does when its slab allocation fails, up to 30 rounds."""
        if self._fits(txn, zone, cost):
            return True, False
        forcible = False
        for _ in range(30):
            if self._expire(txn, zone, 0, now) == 0:
                break
            forcible = True
            if self._fits(txn, zone, cost):
                return True, True
        return False, forcible

    def _lookup(self, txn: Any, zone: _Zone, key: bytes, now: int) -> tuple[bytes | None, bool]:
        """(record or None, expired)"""
        raw: bytes | None = txn.get(key, db=zone.values)
        if raw is None:
            return None, False
        expires = _RECORD.unpack_from(raw)[2]
        return raw, bool(expires) and expires - now < 0

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
        raw, expired = self._lookup(txn, zone, key, now)
        if op & OP_REPLACE and (raw is None or expired):
            return False, b"not found", False
        if op & OP_ADD and raw is not None and not expired:
            return False, b"exists", False
        typ, payload = (TNIL, b"") if value is None else _encode(value)
        expires = now + ms if ms > 0 else 0
        if raw is not None:
            if value is not None and len(payload) == len(raw) - _HEAD and raw[0] != TLIST:
                # same size: nginx rewrites the node in place
                self._put(txn, zone, key, typ, flags, expires, payload, _RECORD.unpack_from(raw)[3])
                return True, None, False
            self._remove(txn, zone, key, raw)
        if value is None:
            return True, None, False
        cost = entry_cost(len(key), len(payload))
        if op & OP_SAFE_STORE:
            if not self._fits(txn, zone, cost):
                return False, b"no memory", False
            forcible = False
        else:
            fits, forcible = self._allocate(txn, zone, cost, now)
            if not fits:
                return False, b"no memory", forcible
        self._put(txn, zone, key, typ, flags, expires, payload, None)
        self._add_used(txn, zone, cost)
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
        raw, expired = self._lookup(txn, zone, key, now)
        if raw is not None and not expired:
            typ, flags, expires, tick = _RECORD.unpack_from(raw)
            if typ != TNUMBER:
                return 0.0, b"not a number", False
            number = _DOUBLE.unpack_from(raw, _HEAD)[0] + value
            self._put(txn, zone, key, typ, flags, expires, _DOUBLE.pack(number), tick)
            return number, None, False
        if not has_init:
            return 0.0, b"not found", False
        number = value + init
        ms = int(float(init_ttl or 0) * 1000)
        expires = now + ms if ms > 0 else 0
        payload = _DOUBLE.pack(number)
        if raw is not None:  # expired
            if len(raw) - _HEAD == _DOUBLE.size and raw[0] != TLIST:
                tick = _RECORD.unpack_from(raw)[3]
                self._put(txn, zone, key, TNUMBER, 0, expires, payload, tick)
                return number, None, False
            self._remove(txn, zone, key, raw)
        cost = entry_cost(len(key), _DOUBLE.size)
        fits, forcible = self._allocate(txn, zone, cost, now)
        if not fits:
            return 0.0, b"no memory", forcible
        self._put(txn, zone, key, TNUMBER, 0, expires, payload, None)
        self._add_used(txn, zone, cost)
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
        raw, expired = self._lookup(txn, zone, key, now)
        tick = None
        if raw is not None and not expired and raw[0] != TLIST:
            return None, b"value not a list"
        if raw is not None and expired:
            # nginx frees the old entry's items but keeps a list's node
            self._remove(txn, zone, key, raw)
            if raw[0] == TLIST:
                self._add_used(txn, zone, _list_cost(len(key)))
                self._put(txn, zone, key, TLIST, 0, 0, _LIST.pack(_MIDDLE, _MIDDLE, 0), None)
                raw = txn.get(key, db=zone.values)
            else:
                raw = None
        if raw is None:
            cost = _list_cost(len(key))
            if not self._fits(txn, zone, cost):
                return False, b"no memory"
            self._add_used(txn, zone, cost)
            first = end = _MIDDLE
            items_cost = 0
            flags = expires = 0
        else:
            _, flags, expires, tick = _RECORD.unpack_from(raw)
            first, end, items_cost = _LIST.unpack_from(raw, _HEAD)
        typ, payload = _encode(value)
        cost = _item_cost(len(payload))
        if not self._fits(txn, zone, cost):
            if first == end:  # an empty list is not kept
                self._add_used(txn, zone, -_list_cost(len(key)))
                if tick is not None:
                    txn.delete(_TICK.pack(tick) + key, db=zone.lru)
                    txn.delete(key, db=zone.values)
            return False, b"no memory"
        if left:
            first -= 1
            position = first
        else:
            position = end
            end += 1
        txn.put(_item_key(key, position), bytes([typ]) + payload, db=zone.items)
        self._add_used(txn, zone, cost)
        self._put(
            txn, zone, key, TLIST, flags, expires, _LIST.pack(first, end, items_cost + cost), tick
        )
        return end - first

    def pop(self, zid: int, key: bytes, left: bool) -> Any:
        """lpop/rpop -> value | nil | (nil, "value not a list")"""
        zone = self._zones[zid - 1]
        with self._write() as txn:
            now = self._now_ms()
            self._expire(txn, zone, 1, now)
            raw, expired = self._lookup(txn, zone, key, now)
            if raw is None or expired:
                return None
            typ, flags, expires, tick = _RECORD.unpack_from(raw)
            if typ != TLIST:
                return None, b"value not a list"
            first, end, items_cost = _LIST.unpack_from(raw, _HEAD)
            position = first if left else end - 1
            item_key = _item_key(key, position)
            item = txn.get(item_key, db=zone.items)
            txn.delete(item_key, db=zone.items)
            cost = _item_cost(len(item) - 1)
            self._add_used(txn, zone, -cost)
            if end - first == 1:
                txn.delete(_TICK.pack(tick) + key, db=zone.lru)
                txn.delete(key, db=zone.values)
                self._add_used(txn, zone, -_list_cost(len(key)))
            else:
                first, end = (first + 1, end) if left else (first, end - 1)
                payload = _LIST.pack(first, end, items_cost - cost)
                self._put(txn, zone, key, TLIST, flags, expires, payload, tick)
        if item[0] == TSTRING:
            return item[1:]
        return _number(_DOUBLE.unpack_from(item, 1)[0])

    def expire(self, zid: int, key: bytes, exptime: Any) -> Any:
        """-> true | (nil, "not found"); an expired entry comes back to life,
        as in nginx (it looks the key up without checking expiry)."""
        zone = self._zones[zid - 1]
        ms = int(exptime * 1000)
        with self._write() as txn:
            raw = txn.get(key, db=zone.values)
            if raw is None:
                return None, b"not found"
            typ, flags, _, tick = _RECORD.unpack_from(raw)
            expires = self._now_ms() + ms if ms > 0 else 0
            txn.put(key, _RECORD.pack(typ, flags, expires, tick) + raw[_HEAD:], db=zone.values)
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
            for key, (typ, flags, _, tick), payload in updates:
                txn.put(key, _RECORD.pack(typ, flags, 1, tick) + payload, db=zone.values)
            self._expire(txn, zone, 0, self._now_ms())

    def flush_expired(self, zid: int, max_count: int) -> int:
        zone = self._zones[zid - 1]
        freed = 0
        with self._write() as txn:
            now = self._now_ms()
            expired = []
            for index_key in txn.cursor(db=zone.lru).iternext(values=False):
                key = bytes(index_key[8:])
                raw = txn.get(key, db=zone.values)
                if raw is None:
                    continue
                expires = _RECORD.unpack_from(raw)[2]
                if expires != 0 and expires <= now:
                    expired.append((key, raw))
                    if max_count and len(expired) == max_count:
                        break
            for key, raw in expired:
                self._remove(txn, zone, key, raw)
                freed += 1
        return freed


def store_path(configured: str, listen: list[str]) -> str:
    """``shared_dict_path``, or the default directory for these addresses."""
    return configured or default_path(listen)


def remove(path: str) -> None:
    """The master, at exit: the zones die with the server, as nginx's do."""
    shutil.rmtree(path, ignore_errors=True)
