"""The VM side of fcgi_lua/shdict.py: ``ngx.shared`` loaded into Lua.

This module owns loading ``shdict.lua`` over a store's functions and zone
ids.  The store (LMDB, the zones, the semantics of every operation) is
``fcgi_lua.shdict``'s, opened by the caller in the worker.

What it must never do: open or prepare a store, or hand Lua a Python
object other than the store's functions (zones are integer ids).
"""

from __future__ import annotations

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
