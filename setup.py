"""Builds the compiled modules; everything else is in pyproject.toml.

Two kinds, both optional (the package installs without a C compiler):

- ``fcgi_lua._ngxsyms`` (fcgi_lua/_ngxsyms.c): nginx's ngx_hex_dump and
  ngx_atoi for LuaJIT's ffi.C; without it only those symbols are missing
  (runtimes.py warns).
- the FastCGI codec, compiled by mypyc:

mypyc compiles the FastCGI codec from its own typed source (the modules
``fcgi_lua.compiled.COMPILED_MODULES`` lists): one implementation, run
compiled where a build succeeds and interpreted otherwise.  The build is
skipped, and the package stays pure Python, when ``FCGI_LUA_COMPILE=0``
or mypyc is missing; a failed compilation is reported and skipped too.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# the same list fcgi_lua/compiled.py uses at import (read without importing
# the package, whose dependencies need not be installed at build time)
COMPILED = [
    "fcgi_lua/fastcgi/_state.py",
    "fcgi_lua/fastcgi/_records.py",
    "fcgi_lua/fastcgi/_connection.py",
]


class OptionalBuildExt(build_ext):
    """A compiled module that fails to build leaves its source in charge."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler failure
            print(f"fcgi-lua: compiled modules skipped ({exc}); pure Python", file=sys.stderr)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"fcgi-lua: {ext.name} not compiled ({exc})", file=sys.stderr)


def compiled_modules() -> list[Any]:
    if os.environ.get("FCGI_LUA_COMPILE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("fcgi-lua: mypyc not found; pure Python", file=sys.stderr)
        return []
    return list(mypycify(COMPILED, opt_level="3", group_name="fcgi_lua.fastcgi._codec"))


NGX_SYMBOLS = Extension("fcgi_lua._ngxsyms", ["fcgi_lua/_ngxsyms.c"], optional=True)

setup(ext_modules=[NGX_SYMBOLS, *compiled_modules()], cmdclass={"build_ext": OptionalBuildExt})
