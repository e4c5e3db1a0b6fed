"""Run a function right after a module is first imported (a post-import hook): how the
zero-code runner attaches a framework adapter to a script that imports the framework itself,
without importing any framework of its own."""

from __future__ import annotations

import importlib.abc
import sys
from types import ModuleType
from typing import Any, Callable


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds ``name`` with the finders after it and wraps the loader so ``then(module)`` runs
    once the module has executed."""

    def __init__(self, name: str, then: Callable[[ModuleType], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                exec_module, then = spec.loader.exec_module, self.then

                class Loader(type(spec.loader)):       # the original loader, one step longer
                    def exec_module(self, module: ModuleType) -> None:
                        exec_module(module)
                        then(module)
                spec.loader.__class__ = Loader
                return spec
            if spec is not None:
                return spec
        return None


def after_import(name: str, then: Callable[[ModuleType], None]) -> Callable[[], None]:
    """Call ``then(module)`` when module ``name`` is imported (at once when it already is);
    returns a function that removes the hook."""
    if name in sys.modules:
        then(sys.modules[name])
        return lambda: None
    hook = _AfterImport(name, then)
    sys.meta_path.insert(0, hook)
    return lambda: hook in sys.meta_path and sys.meta_path.remove(hook)
