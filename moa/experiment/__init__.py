"""Cost/quality experiments: setups compared with a single-model baseline over a dataset.

``Experiment.from_file("exp.yaml", out="runs/x").run()`` runs (or resumes) every (setup, item) pair,
stores each in ``<out>/experiment.sqlite``, scores the answers, and writes ``summary.json``,
``results.jsonl``, ``report.md``, ``report.html`` and ``pareto.png``.

Names are imported on first use, so ``moa.experiment.cli`` (argparse only) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moa.experiment.call_cache import StoreCache
    from moa.experiment.runner import Experiment, rebuild_report, summary_from_store
    from moa.experiment.scoring import PairScore, PairwiseEvaluator
    from moa.experiment.spec import ExperimentSpec, Setup, SetupEntry, load_spec
    from moa.experiment.store import JudgmentRow, RunRow, Store
    from moa.experiment.summary import CategorySummary, SetupSummary, Summary

_EXPORTS = {
    "CategorySummary": "moa.experiment.summary",
    "Experiment": "moa.experiment.runner",
    "ExperimentSpec": "moa.experiment.spec",
    "JudgmentRow": "moa.experiment.store",
    "PairScore": "moa.experiment.scoring",
    "PairwiseEvaluator": "moa.experiment.scoring",
    "RunRow": "moa.experiment.store",
    "Setup": "moa.experiment.spec",
    "SetupEntry": "moa.experiment.spec",
    "SetupSummary": "moa.experiment.summary",
    "Store": "moa.experiment.store",
    "StoreCache": "moa.experiment.call_cache",
    "Summary": "moa.experiment.summary",
    "load_spec": "moa.experiment.spec",
    "rebuild_report": "moa.experiment.runner",
    "summary_from_store": "moa.experiment.runner",
}

__all__ = [
    "CategorySummary",
    "Experiment",
    "ExperimentSpec",
    "JudgmentRow",
    "PairScore",
    "PairwiseEvaluator",
    "RunRow",
    "Setup",
    "SetupEntry",
    "SetupSummary",
    "Store",
    "StoreCache",
    "Summary",
    "load_spec",
    "rebuild_report",
    "summary_from_store",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'moa.experiment' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
