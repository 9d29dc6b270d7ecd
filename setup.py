"""The one C extension: nginx's ngx_hex_dump and ngx_atoi for LuaJIT's
ffi.C (fcgi_lua/_ngxsyms.c).  Optional: without a C compiler the package
still installs, and only those two symbols are missing (runtimes.py warns).
Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fcgi_lua._ngxsyms", ["fcgi_lua/_ngxsyms.c"], optional=True)])
