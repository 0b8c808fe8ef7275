"""lazy_exports: a package's names import only their own module, on first use, and are then cached."""

from __future__ import annotations

import sys
from types import ModuleType

import pytest

from foveal.configs.lazy_exports import lazy_exports

PACKAGE = "lazy_exports_demo"
EXPORTS = {"colorsys": ("hsv_to_rgb", "rgb_to_hsv"), "quopri": ("encodestring",)}


@pytest.fixture
def package(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A throwaway package exporting names of stdlib modules that are not imported yet."""
    for module in EXPORTS:
        monkeypatch.delitem(sys.modules, module, raising=False)
    package = ModuleType(PACKAGE)
    package.__getattr__, package.__dir__, package.__all__ = lazy_exports(PACKAGE, EXPORTS)
    monkeypatch.setitem(sys.modules, PACKAGE, package)
    return package


def test_a_name_imports_only_its_module_on_first_use_and_is_cached(package: ModuleType) -> None:
    assert "colorsys" not in sys.modules
    from lazy_exports_demo import rgb_to_hsv  # type: ignore[import-not-found]

    assert rgb_to_hsv is sys.modules["colorsys"].rgb_to_hsv
    assert vars(package)["rgb_to_hsv"] is rgb_to_hsv
    assert "hsv_to_rgb" not in vars(package)
    assert "quopri" not in sys.modules


def test_an_unknown_name_raises_attribute_error_naming_the_package_and_the_name(package: ModuleType) -> None:
    with pytest.raises(AttributeError, match=r"^module 'lazy_exports_demo' has no attribute 'missing'$"):
        _ = package.missing


def test_dir_and_all_list_the_exports_without_importing_them(package: ModuleType) -> None:
    assert package.__all__ == ["encodestring", "hsv_to_rgb", "rgb_to_hsv"]
    assert set(package.__all__) <= set(dir(package))
    assert not {"colorsys", "quopri"} & sys.modules.keys()
