"""Cost/quality experiments: setups compared with a single-model baseline over a dataset.

``Experiment.from_file("exp.yaml", out="runs/x").run()`` runs (or resumes) every (setup, item) pair,
stores each in ``<out>/experiment.sqlite``, scores the answers, and writes ``summary.json``,
``results.jsonl``, ``report.md``, ``report.html`` and ``pareto.png``.
"""

from __future__ import annotations

from moa.experiment.runner import Experiment, rebuild_report, summary_from_store
from moa.experiment.scoring import PairScore, PairwiseEvaluator
from moa.experiment.spec import ExperimentSpec, Setup, SetupEntry, load_spec
from moa.experiment.store import JudgmentRow, RunRow, Store, StoreCache
from moa.experiment.summary import CategorySummary, SetupSummary, Summary

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
