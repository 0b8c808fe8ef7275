"""PEP 562 lazy exports for a package `__init__`: each public name is imported on its first use.

Importing `foveal.renderers` or `foveal.verifiers` must stay cheap and never pull in transformers or
torch, yet `from foveal.renderers import Renderer` should work. So a package declares a table
module -> names, and a name is resolved by importing only its own module, then cached in the package.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """`__getattr__`, `__dir__` and `__all__` for `package`, whose names live in the modules keying `exports`.

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"pkg.module": ("Name", "other_name")})
    """
    module_of = {name: module for module, names in exports.items() for name in names}
    public = sorted(module_of)

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *public})

    return __getattr__, __dir__, public
