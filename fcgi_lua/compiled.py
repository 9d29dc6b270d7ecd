"""Which of fcgi-lua's modules run compiled, and the switch back to source.

The hot modules (the FastCGI codec) are compiled with mypyc at ``pip
install`` from their own, unchanged source (setup.py); the source stays
the one implementation.  A compiled module shadows its ``.py`` on import,
so this module loads the ``.py`` instead when

- ``FCGI_LUA_PURE_PYTHON=1`` is set (CI runs the suite both ways), or
- the compiled file is older than its source (an edited module after an
  editable install: running stale code would be worse than running slow).

It must be called by a package before the package imports the modules.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path

# Modules setup.py compiles, in import order (a module before those that
# import it): each is loaded from source here before the next one imports it.
COMPILED_MODULES = (
    "fcgi_lua.fastcgi._state",
    "fcgi_lua.fastcgi._records",
    "fcgi_lua.fastcgi._connection",
)

PURE_PYTHON_ENV = "FCGI_LUA_PURE_PYTHON"


def pure_python_wanted() -> bool:
    return os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0")


def compiled_file(source: Path) -> Path | None:
    """The extension module beside ``source`` (x.cpython-311-...so), if any."""
    for candidate in source.parent.glob(source.stem + ".*.so"):
        return candidate
    return None


def load_sources(package: str, directory: str, names: Iterable[str] = COMPILED_MODULES) -> None:
    """Import ``package``'s compiled modules from source where wanted.

    All or none: mypyc builds the modules as one group whose members call
    each other natively, so one stale member sends the whole group back to
    source."""
    mine = [name for name in names if name.rpartition(".")[0] == package]
    sources = [Path(directory) / f"{name.rpartition('.')[2]}.py" for name in mine]
    compiled = [compiled_file(source) for source in sources]
    if not any(compiled):
        return  # nothing shadows the sources: the usual import finds them
    stale = any(
        so is None or so.stat().st_mtime < source.stat().st_mtime
        for so, source in zip(compiled, sources, strict=True)
    )
    if not (stale or pure_python_wanted()):
        return
    for name, source in zip(mine, sources, strict=True):
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, source)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise


def is_compiled(module_name: str) -> bool:
    """Whether ``module_name`` (imported) runs compiled."""
    module = sys.modules[module_name]
    return str(getattr(module, "__file__", "")).endswith(".so")
