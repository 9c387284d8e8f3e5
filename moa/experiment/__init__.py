"""Cost/quality experiments: setups compared with a single-model baseline over a dataset.

``Experiment.from_file("exp.yaml", out="runs/x").run()`` runs (or resumes) every (setup, item) pair,
stores each in ``<out>/experiment.sqlite``, scores the answers, and writes ``summary.json``,
``results.jsonl``, ``report.md``, ``report.html`` and ``pareto.png``.

The package reads in the order of the phases: ``spec`` (the experiment file), ``experiment`` (the
phases in order), ``run_pairs`` (answer), ``score_answers`` (score), ``analysis/`` (the summary),
``report/`` (tables, text, plots, the folder's files), with ``store/`` (SQLite) under them all.

Names are imported on first use, so ``moa.experiment.cli`` (argparse only) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moa._lazy import lazy_exports

if TYPE_CHECKING:
    from moa.eval.types import Judgment as JudgmentRow
    from moa.eval.types import PairScore, PairwiseEvaluator
    from moa.experiment.analysis.summarize import summary_from_store
    from moa.experiment.analysis.summary import CategorySummary, SetupSummary, Summary
    from moa.experiment.config import ExperimentSpec, Setup, SetupEntry, load_spec
    from moa.experiment.experiment import Experiment, rebuild_report
    from moa.experiment.plan import Plan, SetupPlan
    from moa.experiment.store.cache import StoreCache
    from moa.experiment.store.database import RunRow, Store

#: name -> "module" (the same name there) or "module:name"
_EXPORTS = {
    "CategorySummary": "moa.experiment.analysis.summary",
    "Experiment": "moa.experiment.experiment",
    "ExperimentSpec": "moa.experiment.config",
    # the judge's verdict record, now ``moa.eval.Judgment``: the old name keeps working
    "JudgmentRow": "moa.eval.types:Judgment",
    "PairScore": "moa.eval.types",
    "PairwiseEvaluator": "moa.eval.types",
    "Plan": "moa.experiment.plan",
    "RunRow": "moa.experiment.store.database",
    "Setup": "moa.experiment.config",
    "SetupEntry": "moa.experiment.config",
    "SetupPlan": "moa.experiment.plan",
    "SetupSummary": "moa.experiment.analysis.summary",
    "Store": "moa.experiment.store.database",
    "StoreCache": "moa.experiment.store.cache",
    "Summary": "moa.experiment.analysis.summary",
    "load_spec": "moa.experiment.config",
    "rebuild_report": "moa.experiment.experiment",
    "summary_from_store": "moa.experiment.analysis.summarize",
}

__all__ = [
    "CategorySummary",
    "Experiment",
    "ExperimentSpec",
    "JudgmentRow",
    "PairScore",
    "PairwiseEvaluator",
    "Plan",
    "RunRow",
    "Setup",
    "SetupEntry",
    "SetupPlan",
    "SetupSummary",
    "Store",
    "StoreCache",
    "Summary",
    "load_spec",
    "rebuild_report",
    "summary_from_store",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
