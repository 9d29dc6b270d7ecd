"""The ngx.shared.DICT store (fcgi_lua/shdict.py) on a fake clock, and its
Lua methods (shdict.lua) through the engine: every method and return value,
ttl and expiry, LRU eviction within the byte budget, lists, flags,
capacity/free_space, and the config keys."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fcgi_lua import shdict
from fcgi_lua.config import ConfigError, load
from fcgi_lua.lua import LuaEngine
from fcgi_lua.shdict import OP_ADD, OP_REPLACE, OP_SAFE_STORE, SharedDicts, prepare
from tests.helpers.lua import run_script

# "small" is 4 slab pages, 2 of them free after the zone's init (nginx's
# "total pages: 4" for 20k in t/126-shdict-frag.t)
ZONES = {"cache": 1 << 20, "small": 20 << 10}
# a fresh 1m zone: 254 pages, 2 taken by the zone's init
CACHE_FREE = 252 * 4096


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[SharedDicts]:
    path = str(tmp_path / "shdict")
    prepare(path, ZONES)
    ticks = itertools.count(1)
    opened = SharedDicts(path, ZONES, clock=clock, ticks=lambda: next(ticks))
    yield opened
    opened.close()


CACHE, SMALL = 1, 2


def test_set_get_every_type_and_flags(store: SharedDicts) -> None:
    assert store.store(CACHE, 0, b"s", b"hello", 0, 0) == (True, None, False)
    assert store.get(CACHE, b"s") == b"hello"
    store.store(CACHE, 0, b"n", 3.5, 0, 0)
    assert store.get(CACHE, b"n") == 3.5
    store.store(CACHE, 0, b"i", 42, 0, 0)
    assert store.get(CACHE, b"i") == 42 and isinstance(store.get(CACHE, b"i"), int)
    store.store(CACHE, 0, b"t", True, 0, 0)
    store.store(CACHE, 0, b"f", False, 0, 0)
    assert store.get(CACHE, b"t") is True and store.get(CACHE, b"f") is False
    store.store(CACHE, 0, b"fl", b"v", 0, 7)
    assert store.get(CACHE, b"fl") == (b"v", 7)
    assert store.get_stale(CACHE, b"fl") == (b"v", 7, False)
    assert store.get_stale(CACHE, b"s") == (b"hello", None, False)
    assert store.get(CACHE, b"missing") is None
    assert store.get_stale(CACHE, b"missing") is None


def test_add_replace_delete(store: SharedDicts) -> None:
    assert store.store(CACHE, OP_ADD, b"a", 1, 0, 0) == (True, None, False)
    assert store.store(CACHE, OP_ADD, b"a", 2, 0, 0) == (False, b"exists", False)
    assert store.store(CACHE, OP_ADD | OP_SAFE_STORE, b"a", 2, 0, 0) == (False, b"exists", False)
    assert store.store(CACHE, OP_REPLACE, b"a", b"one", 0, 0) == (True, None, False)
    assert store.get(CACHE, b"a") == b"one"
    assert store.store(CACHE, OP_REPLACE, b"zz", 1, 0, 0) == (False, b"not found", False)
    nil_error = (False, b"attempt to add or replace nil values", False)
    assert store.store(CACHE, OP_ADD, b"c", None, 0, 0) == nil_error
    assert store.store(CACHE, 0, b"a", None, 0, 0) == (True, None, False)
    assert store.get(CACHE, b"a") is None
    assert store.store(CACHE, 0, b"a", None, 0, 0) == (True, None, False)


def test_ttl_expire_and_stale(store: SharedDicts, clock: Clock) -> None:
    store.store(CACHE, 0, b"x", b"v", 10, 3)
    assert store.ttl(CACHE, b"x") == 10
    clock.now += 4
    assert store.ttl(CACHE, b"x") == 6
    clock.now += 6.001
    assert store.get(CACHE, b"x") is None
    assert store.get_stale(CACHE, b"x") == (b"v", 3, True)
    assert store.ttl(CACHE, b"x") == pytest.approx(-0.001)
    assert store.store(CACHE, OP_REPLACE, b"x", b"w", 0, 0) == (False, b"not found", False)
    assert store.store(CACHE, OP_ADD, b"x", b"w", 0, 0) == (True, None, False)
    assert store.ttl(CACHE, b"x") == 0
    assert store.ttl(CACHE, b"nope") == (None, b"not found")
    assert store.expire(CACHE, b"x", 5) is True
    assert store.ttl(CACHE, b"x") == 5
    assert store.expire(CACHE, b"x", 0) is True
    assert store.ttl(CACHE, b"x") == 0
    assert store.expire(CACHE, b"nope", 1) == (None, b"not found")
    # below a millisecond is no expiry, as lua-resty-core passes whole ms
    store.store(CACHE, 0, b"tiny", 1, 0.0001, 0)
    assert store.ttl(CACHE, b"tiny") == 0


def test_incr(store: SharedDicts, clock: Clock) -> None:
    assert store.incr(CACHE, b"c", 1, None, 0) == (None, b"not found")
    assert store.incr(CACHE, b"c", 1, 10, 0) == (11, None, False)
    assert store.incr(CACHE, b"c", 2.5, None, 0) == 13.5
    store.store(CACHE, 0, b"s", b"text", 0, 0)
    assert store.incr(CACHE, b"s", 1, None, 0) == (None, b"not a number")
    assert store.incr(CACHE, b"t", 1, 0, 5) == (1, None, False)
    assert store.ttl(CACHE, b"t") == 5
    assert store.incr(CACHE, b"t", 1, None, 0) == 2
    assert store.ttl(CACHE, b"t") == 5  # an incr keeps the expiry
    clock.now += 6
    assert store.incr(CACHE, b"t", 1, None, 0) == (None, b"not found")
    assert store.incr(CACHE, b"t", 1, 100, 0) == (101, None, False)
    assert store.ttl(CACHE, b"t") == 0


def test_lists(store: SharedDicts) -> None:
    assert store.push(CACHE, b"l", b"a", True) == 1
    assert store.push(CACHE, b"l", 2, False) == 2
    assert store.push(CACHE, b"l", b"z", True) == 3
    assert store.llen(CACHE, b"l") == 3
    assert store.get(CACHE, b"l") == (None, b"value is a list")
    assert store.incr(CACHE, b"l", 1, None, 0) == (None, b"not a number")
    assert store.pop(CACHE, b"l", True) == b"z"
    assert store.pop(CACHE, b"l", False) == 2
    assert store.pop(CACHE, b"l", False) == b"a"
    assert store.pop(CACHE, b"l", False) is None
    assert store.llen(CACHE, b"l") == 0
    store.store(CACHE, 0, b"s", b"x", 0, 0)
    assert store.push(CACHE, b"s", b"x", True) == (None, b"value not a list")
    assert store.pop(CACHE, b"s", True) == (None, b"value not a list")
    assert store.llen(CACHE, b"s") == (None, b"value not a list")
    # a set over a list frees its items
    free = store.free_space(CACHE)
    store.push(CACHE, b"l2", b"x" * 3000, False)  # a page each
    store.push(CACHE, b"l2", b"y" * 3000, False)
    assert store.free_space(CACHE) == free - 2 * 4096
    store.store(CACHE, 0, b"l2", None, 0, 0)
    assert store.free_space(CACHE) == free


def test_capacity_and_free_space(store: SharedDicts) -> None:
    assert store.capacity(CACHE) == 1 << 20
    # nginx's free_space: whole free pages of the zone's slab pool
    assert store.free_space(CACHE) == CACHE_FREE
    # 68 + 3 + 100 = 171 bytes: a new page of 256-byte chunks (the zone's
    # init took a page of 128s and one of 32s)
    store.store(CACHE, 0, b"key", b"v" * 100, 0, 0)
    assert store.free_space(CACHE) == CACHE_FREE - 4096
    store.store(CACHE, 0, b"key2", b"v" * 100, 0, 0)  # the same page
    assert store.free_space(CACHE) == CACHE_FREE - 4096
    store.store(CACHE, 0, b"big", b"v" * 5000, 0, 0)  # two whole pages
    assert store.free_space(CACHE) == CACHE_FREE - 3 * 4096
    for key in (b"key", b"key2", b"big"):
        store.store(CACHE, 0, key, None, 0, 0)
    assert store.free_space(CACHE) == CACHE_FREE


def test_lru_eviction_when_full(store: SharedDicts) -> None:
    value = b"x" * 100  # 68 + 3 + 100 -> 256 bytes each: 32 fit in 2 pages
    for i in range(32):
        assert store.store(SMALL, 0, b"k%02d" % i, value, 0, 0) == (True, None, False)
    assert store.free_space(SMALL) == 0
    assert store.get(SMALL, b"k00") == value  # k00 is now recently used
    assert store.store(SMALL, OP_SAFE_STORE, b"new", value, 0, 0) == (False, b"no memory", False)
    assert store.store(SMALL, 0, b"new", value, 0, 0) == (True, None, True)
    assert store.get(SMALL, b"k01") is None  # the least recently used went
    assert store.get(SMALL, b"k00") == value
    assert store.get(SMALL, b"new") == value
    # a value larger than the zone never fits, after evicting what it can
    ok, err, forcible = store.store(SMALL, 0, b"huge", b"x" * 9000, 0, 0)
    assert (ok, err, forcible) == (False, b"no memory", True)


def test_expired_entries_go_first(store: SharedDicts, clock: Clock) -> None:
    value = b"x" * 100
    for i in range(32):
        store.store(SMALL, 0, b"k%02d" % i, value, 1 if i == 5 else 0, 0)
    clock.now += 2
    # the next write removes expired entries at the LRU end only; k05 is
    # not there, so the store must evict k00 (the oldest) to fit
    assert store.store(SMALL, 0, b"new", value, 0, 0) == (True, None, True)
    assert store.get(SMALL, b"k00") is None
    assert store.flush_expired(SMALL, 0) == 1


def test_get_keys_flush_all_flush_expired(store: SharedDicts, clock: Clock) -> None:
    for i in range(5):
        store.store(CACHE, 0, b"k%d" % i, i, 0, 0)
    store.store(CACHE, 0, b"e", 1, 1, 0)
    assert store.get_keys(CACHE, 0) == [b"k0", b"k1", b"k2", b"k3", b"k4", b"e"]
    store.get(CACHE, b"k0")  # moves to the most recently used end
    assert store.get_keys(CACHE, 0)[-1] == b"k0"
    assert store.get_keys(CACHE, 2) == [b"k1", b"k2"]
    clock.now += 2
    assert b"e" not in store.get_keys(CACHE, 0)
    assert store.flush_expired(CACHE, 0) == 1
    assert store.flush_expired(CACHE, 0) == 0
    store.flush_all(CACHE)
    assert store.get_keys(CACHE, 0) == []
    assert store.get(CACHE, b"k4") is None
    assert store.get_stale(CACHE, b"k4") == (4, None, True)
    assert store.flush_expired(CACHE, 2) == 2


def test_reads_from_another_process_count_at_its_next_write(tmp_path: Path) -> None:
    path = str(tmp_path / "shdict")
    prepare(path, ZONES)
    value = b"x" * 100
    first = SharedDicts(path, ZONES)
    for i in range(32):
        first.store(SMALL, 0, b"k%02d" % i, value, 0, 0)
    first.close()  # an environment never crosses a fork
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the other worker
        code = 1
        try:
            second = SharedDicts(path, ZONES)
            if second.get(SMALL, b"k00") == value:  # remembered by this process
                second.store(CACHE, 0, b"other", 1, 0, 0)  # its next write records it
                code = 0
            second.close()
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    first = SharedDicts(path, ZONES)
    assert first.store(SMALL, 0, b"new", value, 0, 0) == (True, None, True)
    assert first.get(SMALL, b"k00") == value
    assert first.get(SMALL, b"k01") is None
    first.close()


def test_prepare_empties_an_old_store(tmp_path: Path) -> None:
    path = str(tmp_path / "shdict")
    prepare(path, ZONES)
    opened = SharedDicts(path, ZONES)
    opened.store(CACHE, 0, b"k", b"v", 0, 0)
    opened.close()
    prepare(path, ZONES)
    reopened = SharedDicts(path, ZONES)
    assert reopened.get(CACHE, b"k") is None
    assert reopened.free_space(CACHE) == CACHE_FREE
    reopened.close()
    shdict.remove(path)
    assert not Path(path).exists()


def test_default_path_is_per_user_and_addresses() -> None:
    a = shdict.default_path(["127.0.0.1:9000"])
    assert a == shdict.default_path(["127.0.0.1:9000"])
    assert a != shdict.default_path(["127.0.0.1:9001"])
    assert shdict.store_path("/srv/x", ["127.0.0.1:9000"]) == "/srv/x"


# -- through Lua -----------------------------------------------------------------


@pytest.fixture
def engine(store: SharedDicts) -> LuaEngine:
    return LuaEngine(shared_dicts=store)


def test_lua_methods(tmp_path: Path, engine: LuaEngine) -> None:
    resp = run_script(
        tmp_path,
        """
        local d = ngx.shared.cache
        ngx.say(type(ngx.shared.small), " ", tostring(ngx.shared.nope))
        ngx.say(d:set("a", "x", 0, 5))
        ngx.say(d:get("a"))
        ngx.say(d:get(nil))
        ngx.say(d:set("", 1))
        ngx.say(d:set("t", {}))
        ngx.say(d:incr("n", 1, 0, 10))
        ngx.say(d:ttl("n"))
        ngx.say(pcall(d.incr, d, "n", 1, nil, 10))
        ngx.say(d:lpush("l", "v"), d:llen("l"), d:rpop("l"))
        ngx.say(#d:get_keys(), " ", d:capacity())
        ngx.say(pcall(d.set, d, "a", 1, -1))
        ngx.say(pcall(d.get, {}, "a"))
        ngx.say(pcall(d.lpush, d, "l"))
        d:flush_all()
        ngx.say(d:get("a"), " ", d:flush_expired())
        """,
        engine=engine,
    )
    assert resp.status == 200, resp.body
    lines = resp.body.decode().splitlines()
    # the caller's line, as with lua-resty-core's levels
    assert lines.pop(11).endswith('t.lua:14: bad "exptime" argument')
    assert lines == [
        "table nil",
        "truenilfalse",
        "x5",
        "nilnil key",
        "nilempty key",
        "nilbad value type",
        "1nilfalse",
        "10",
        'falsemust provide "init" when providing "init_ttl"',
        "11v",
        "2 1048576",
        'falsebad "zone" argument',
        "falseexpecting 3 arguments, but only seen 2",
        "nil 0",
    ]


def test_no_zones_gives_an_empty_ngx_shared(tmp_path: Path) -> None:
    resp = run_script(tmp_path, "ngx.say(type(ngx.shared), next(ngx.shared))")
    assert resp.body == b"tablenil\n"


# -- config ------------------------------------------------------------------------


def test_config_shared_dicts(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text(f'root = "{tmp_path}"\n[shared_dicts]\ncache = "10m"\nx = 8192\n')
    config = load(str(config_file))
    assert config.shared_dicts == {"cache": 10 << 20, "x": 8192}
    assert load(None, {"root": str(tmp_path)}).shared_dicts == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"cache": "1k"}, "shared_dicts: cache: size must be at least 8k"),
        ({"1x": "1m"}, "shared_dicts: 1x: a zone name is"),
        ({"c": "lots"}, "shared_dicts: c: 'lots' is not a size"),
        ({"c": True}, "shared_dicts: c: expected a size"),
        ("10m", "shared_dicts: expected a table of name = size"),
    ],
)
def test_config_shared_dicts_errors(tmp_path: Path, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(None, {"root": str(tmp_path), "shared_dicts": value})


def test_config_shared_dict_path_parent_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"shared_dict_path: .* is not a directory"):
        load(None, {"root": str(tmp_path), "shared_dict_path": str(tmp_path / "a" / "b")})


OPS = ("set", "add", "safe_set", "replace", "get", "get_stale", "incr", "lpush", "rpush")
OPS += ("lpop", "llen", "ttl", "expire", "delete")


def test_keys_up_to_nginx_limit_work(tmp_path: Path, engine: LuaEngine, store: SharedDicts) -> None:
    # nginx's zones take keys of up to 65535 bytes (t/043-shdict.t TEST 15,
    # t/144-shdict-incr-init.t TEST 5); LMDB's keys are at most 511 bytes,
    # so longer keys were refused with "key too long" (and before that an
    # uncaught MDB_BAD_VALSIZE).  Past 65535 it is "key too long", as in
    # lua-resty-core.
    assert store.max_key_len == 65535
    script = """
    local dogs = ngx.shared.cache
    for _, n in ipairs({400, 401, 511, 1000, 65535}) do
        local a = string.rep("a", n - 1) .. "1"
        local b = string.rep("a", n - 1) .. "2"  -- same first bytes
        dogs:set(a, "A" .. n)
        dogs:set(b, "B" .. n)
        local num = string.rep("a", n - 1) .. "3"
        local list = string.rep("a", n - 1) .. "4"
        ngx.say(n, " ", dogs:get(a), " ", dogs:get(b), " ", dogs:incr(num, 2, 40),
                " ", dogs:lpush(list, "x"), " ", dogs:rpop(list),
                " ", tostring(dogs:expire(a, 10)), " ", dogs:ttl(a))
        dogs:delete(b)
        ngx.say(tostring(dogs:get(b)), " ", #dogs:get_keys(0))
        local found = false
        for _, key in ipairs(dogs:get_keys(0)) do
            if key == a then found = true end
        end
        ngx.say(tostring(found))
        dogs:flush_all()
        dogs:flush_expired()
    end
    local too_long = string.rep("k", 65536)
    local one = {get = true, get_stale = true, lpop = true, llen = true, ttl = true,
                 delete = true}
    for _, op in ipairs({"set", "add", "safe_set", "replace", "get", "get_stale",
                         "incr", "lpush", "rpush", "lpop", "llen", "ttl", "expire",
                         "delete"}) do
        local ok, err
        if one[op] then
            ok, err = dogs[op](dogs, too_long)
        else
            ok, err = dogs[op](dogs, too_long, 1)
        end
        ngx.say(op, " ", tostring(ok), " ", err)
    end
    """
    lines = run_script(tmp_path, script, engine=engine).body.decode().splitlines()
    for i, n in enumerate((400, 401, 511, 1000, 65535)):
        assert lines[3 * i : 3 * i + 3] == [f"{n} A{n} B{n} 42 1 x true 10", "nil 2", "true"]
    assert lines[15:] == [f"{op} nil key too long" for op in OPS]


def test_long_keys_with_the_same_hash_are_told_apart(
    store: SharedDicts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a long key is stored under a hash; the full key is compared on every
    # lookup.  Force every long key onto one LMDB key to see that.
    monkeypatch.setattr(shdict, "db_key", lambda key: key if len(key) <= 400 else b"h" * 401)
    a, b = b"a" * 500, b"b" * 500
    free = store.free_space(CACHE)
    assert store.store(CACHE, 0, a, b"x" * 5000, 0, 0) == (True, None, False)
    assert store.get(CACHE, b) is None
    assert store.ttl(CACHE, b) == (None, b"not found")
    assert store.store(CACHE, 0, b, b"y", 0, 0) == (True, None, False)  # replaces a
    assert store.get(CACHE, a) is None
    assert store.get(CACHE, b) == b"y"
    assert store.get_keys(CACHE, 0) == [b]
    store.store(CACHE, 0, b, None, 0, 0)
    assert store.free_space(CACHE) == free  # a's two pages came back too


def test_a_table_that_is_not_a_zone_is_refused(tmp_path: Path, engine: LuaEngine) -> None:
    # t/043-shdict.t TEST 87-89: dogs.set({1}, ...) raises, as in nginx
    script = """
    local dogs = ngx.shared.cache
    local args = {set = {"foo", 1}, get = {"foo"}, incr = {"foo", 32}, lpush = {"foo", 1},
                  get_keys = {}}
    for _, op in ipairs({"set", "get", "incr", "lpush", "get_keys"}) do
        local ok, err = pcall(dogs[op], {1}, unpack(args[op]))
        ngx.say(op, " ", tostring(ok), " ", err)
    end
    """
    lines = run_script(tmp_path, script, engine=engine).body.decode().splitlines()
    assert lines == [
        'set false bad "zone" argument',
        'get false bad "zone" argument',
        'incr false bad "zone" argument',
        'lpush false bad "zone" argument',
        'get_keys false bad "zone" argument',
    ]


C_API = """
local ffi = require "ffi"
ffi.cdef[[
typedef struct { size_t len; char *data; } ngx_str_t;
typedef struct {
    uint8_t type;
    union { int b; double n; ngx_str_t s; } value;
} ngx_http_lua_value_t;
void *ngx_http_lua_find_zone(char *data, size_t len);
intptr_t ngx_http_lua_shared_dict_get(void *zone, char *kdata, size_t klen,
                                      ngx_http_lua_value_t *val);
]]
local C = ffi.C
local function zone(name)
    return C.ngx_http_lua_find_zone(ffi.cast("char *", name), #name)
end
local function get(z, key, val)
    return tonumber(C.ngx_http_lua_shared_dict_get(z, ffi.cast("char *", key), #key, val))
end
local dogs = ngx.shared.cache
dogs:set("n", 3.5)
dogs:set("s", "hello world")
dogs:set("t", true)
dogs:set("f", false)
dogs:lpush("l", 1)
local cache, small = zone("cache"), zone("small")
ngx.say(cache ~= nil, " ", small ~= nil, " ", cache ~= small, " ", zone("nope") == nil)
local val = ffi.new("ngx_http_lua_value_t[1]")
ngx.say(get(cache, "n", val), " ", val[0].type, " ", val[0].value.n)
ngx.say(get(cache, "t", val), " ", val[0].type, " ", val[0].value.b)
ngx.say(get(cache, "f", val), " ", val[0].type, " ", val[0].value.b)
local buf = ffi.new("char[5]")
val[0].value.s.len = 5
val[0].value.s.data = buf
ngx.say(get(cache, "s", val), " ", val[0].type, " ",
        ffi.string(val[0].value.s.data, val[0].value.s.len))
val[0].value.s.len = 0
ngx.say(get(cache, "s", val))  -- no buffer: NGX_ERROR
ngx.say(get(cache, "missing", val), " ", get(small, "n", val))
ngx.say(get(cache, "old", val), " ", get(cache, "l", val), " ", get(nil, "n", val))
"""


def test_c_api_find_zone_and_get(tmp_path: Path, store: SharedDicts, clock: Clock) -> None:
    # lua-nginx-module's C API for shared dicts (t/099-c-api.t), which
    # FFI code calls through ffi.C: a zone pointer per zone, values copied
    # out, nginx's return codes (NGX_DECLINED -5, NGX_DONE -4 for expired,
    # NGX_ERROR -1).
    store.store(CACHE, 0, b"first", 1, 0, 0)  # the LRU end: "old" is not removed
    store.store(CACHE, 0, b"old", 1, 1, 0)
    clock.now += 2
    engine = LuaEngine(shared_dicts=store, runtime="luajit21")
    lines = run_script(tmp_path, C_API, engine=engine).body.decode().splitlines()
    assert lines == [
        "true true true true",
        "0 3 3.5",
        "0 1 1",
        "0 1 0",
        "0 4 hello",
        "-1",
        "-5 -5",
        "-4 -1 -1",
    ]
