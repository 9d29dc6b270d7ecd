"""The VM side of fcgi_lua/shdict.py: ``ngx.shared`` loaded into Lua.

This module owns loading ``shdict.lua`` over a store's functions and zone
ids.  The store (LMDB, the zones, the semantics of every operation) is
``fcgi_lua.shdict``'s, opened by the caller in the worker.

It also points lua-nginx-module's shared dict C API (ffi.C's
ngx_http_lua_find_zone / ngx_http_lua_shared_dict_get, fcgi_lua/_ngxsyms.c)
at the store.

What it must never do: open or prepare a store, or hand Lua a Python
object other than the store's functions (zones are integer ids).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fcgi_lua.lua.loader import load_chunk

if TYPE_CHECKING:
    from fcgi_lua.shdict import SharedDicts


def install(lua: Any, store: SharedDicts | None) -> None:
    """Load shdict.lua into ``lua`` (after ngx.lua): ``ngx.shared``, empty
    when no zone is configured (as in nginx)."""
    chunk = load_chunk(lua, "shdict.lua")
    functions = store.functions(lua.table_from) if store is not None else {}
    ids = {name.encode(): zid for name, zid in store.ids.items()} if store is not None else {}
    chunk(lua.table_from(functions), lua.table_from(ids))
    if store is not None:
        _set_c_api(store)


def _set_c_api(store: SharedDicts) -> None:
    try:
        ngxsyms = importlib.import_module("fcgi_lua._ngxsyms")
    except ImportError:
        return  # not built: runtimes.py already warned that ffi.C lacks it
    ngxsyms.set_shdict(store.c_find_zone, store.c_get, len(store.ids))
