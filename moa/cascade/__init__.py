"""Cascades: a cheap stage first, the mixture only where its answer is not good enough (RouteLLM,
FrugalGPT). ``kind: cascade`` files load with ``moa.load`` into a ``Cascade``, which runs wherever a
``Topology`` does.

Names are imported on first use, like ``moa.topology``'s."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moa._lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
