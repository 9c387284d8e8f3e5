"""Evaluation: datasets, evaluators, the execution sandbox, judge parsing and statistics."""

from __future__ import annotations

from moa.eval.base import NO_TARGET, Evaluator, Score
from moa.eval.bradley_terry import Outcome, RatingCI, bootstrap_ratings, fit_bradley_terry
from moa.eval.code import extract_code
from moa.eval.datasets import BadRow, Dataset, Item, load_dataset
from moa.eval.evaluators import known_evaluators, make_evaluator
from moa.eval.execution import ExecutionEvaluator, score_execution, score_execution_async
from moa.eval.judge_parse import JUDGE_PROMPT, Verdict, combine_swapped, format_judge_prompt, parse_verdict
from moa.eval.sandbox import SandboxResult, run_python, run_python_async
from moa.eval.stats import (
    CI,
    McNemarResult,
    SignTestResult,
    bootstrap_ci,
    holm,
    mcnemar,
    p50,
    p95,
    paired_bootstrap_ci,
    pareto_front,
    pass_at_k,
    percentile,
    power_n,
    sign_test,
)

__all__ = [
    "CI",
    "JUDGE_PROMPT",
    "NO_TARGET",
    "BadRow",
    "Dataset",
    "Evaluator",
    "ExecutionEvaluator",
    "Item",
    "McNemarResult",
    "Outcome",
    "RatingCI",
    "SandboxResult",
    "Score",
    "SignTestResult",
    "Verdict",
    "bootstrap_ci",
    "bootstrap_ratings",
    "combine_swapped",
    "extract_code",
    "fit_bradley_terry",
    "format_judge_prompt",
    "holm",
    "known_evaluators",
    "load_dataset",
    "make_evaluator",
    "mcnemar",
    "p50",
    "p95",
    "paired_bootstrap_ci",
    "pareto_front",
    "parse_verdict",
    "pass_at_k",
    "percentile",
    "power_n",
    "run_python",
    "run_python_async",
    "score_execution",
    "score_execution_async",
    "sign_test",
]
