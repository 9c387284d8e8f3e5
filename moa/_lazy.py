"""Names a package exports but imports on first use, so ``import moa`` does not load litellm,
pydantic models or the evaluators until they are asked for. One implementation for every
package's module ``__getattr__``/``__dir__``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``(__getattr__, __dir__)``. ``exports`` maps a public name to ``"module"`` (that
    module's attribute of the same name), ``"module:attr"`` (another attribute) or ``"module:"`` (the
    module itself). A name once imported is kept in ``namespace``, so later lookups skip this."""

    def get(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, sep, attr = target.partition(":")
        value: Any = importlib.import_module(module)
        if not sep or attr:
            value = getattr(value, attr or name)
        namespace[name] = value
        return value

    def listing() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ()), *exports})

    return get, listing
