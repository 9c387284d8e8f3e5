"""Cascades: a cheap stage first, the mixture only where its answer is not good enough (RouteLLM,
FrugalGPT). ``kind: cascade`` files load with ``moa.load`` into a ``Cascade``, which runs wherever a
``Topology`` does.

Names are imported on first use, like ``moa.topology``'s."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moa.cascade.context import CascadeContext as CascadeContext
    from moa.cascade.context import item_scope as item_scope
    from moa.cascade.definition import Cascade as Cascade
    from moa.cascade.spec import AcceptSpec as AcceptSpec
    from moa.cascade.spec import JudgeSpec as JudgeSpec
    from moa.cascade.spec import StageSpec as StageSpec

_EXPORTS = {
    "AcceptSpec": "moa.cascade.spec",
    "Cascade": "moa.cascade.definition",
    "CascadeContext": "moa.cascade.context",
    "JudgeSpec": "moa.cascade.spec",
    "StageSpec": "moa.cascade.spec",
    "item_scope": "moa.cascade.context",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'moa.cascade' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
