"""Evaluation: what an evaluator is (``Score``, ``Evaluator``, ``PairwiseEvaluator``), datasets, the
reference, execution and judge evaluators, the execution sandbox, and paired statistics.

Nothing here imports ``moa.experiment``: the experiment consumes evaluators, never the reverse.
Names are imported on first use, as in ``moa`` itself: reading a dataset or computing a statistic
does not load the judge's topology machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moa._lazy import lazy_exports

if TYPE_CHECKING:
    from moa.eval.bradley_terry import Outcome, RatingCI, bootstrap_ratings, fit_bradley_terry
    from moa.eval.code import extract_code
    from moa.eval.datasets import BadRow, Dataset, Item, load_dataset
    from moa.eval.execution import ExecutionEvaluator, score_execution, score_execution_async
    from moa.eval.judge import (
        JUDGE_PROMPT,
        Verdict,
        combine_swapped,
        format_conversation_prompt,
        format_judge_prompt,
        parse_verdict,
    )
    from moa.eval.registry import known_evaluators, make_evaluator
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
    from moa.eval.types import (
        NO_TARGET,
        ConversationEvaluator,
        Evaluator,
        Judgment,
        PairScore,
        PairwiseEvaluator,
        Score,
    )

_EXPORTS = {
    "CI": "moa.eval.stats",
    "JUDGE_PROMPT": "moa.eval.judge",
    "NO_TARGET": "moa.eval.types",
    "BadRow": "moa.eval.datasets",
    "ConversationEvaluator": "moa.eval.types",
    "Dataset": "moa.eval.datasets",
    "Evaluator": "moa.eval.types",
    "ExecutionEvaluator": "moa.eval.execution",
    "Item": "moa.eval.datasets",
    "Judgment": "moa.eval.types",
    "McNemarResult": "moa.eval.stats",
    "Outcome": "moa.eval.bradley_terry",
    "PairScore": "moa.eval.types",
    "PairwiseEvaluator": "moa.eval.types",
    "RatingCI": "moa.eval.bradley_terry",
    "SandboxResult": "moa.eval.sandbox",
    "Score": "moa.eval.types",
    "SignTestResult": "moa.eval.stats",
    "Verdict": "moa.eval.judge",
    "bootstrap_ci": "moa.eval.stats",
    "bootstrap_ratings": "moa.eval.bradley_terry",
    "combine_swapped": "moa.eval.judge",
    "extract_code": "moa.eval.code",
    "fit_bradley_terry": "moa.eval.bradley_terry",
    "format_conversation_prompt": "moa.eval.judge",
    "format_judge_prompt": "moa.eval.judge",
    "holm": "moa.eval.stats",
    "known_evaluators": "moa.eval.registry",
    "load_dataset": "moa.eval.datasets",
    "make_evaluator": "moa.eval.registry",
    "mcnemar": "moa.eval.stats",
    "p50": "moa.eval.stats",
    "p95": "moa.eval.stats",
    "paired_bootstrap_ci": "moa.eval.stats",
    "pareto_front": "moa.eval.stats",
    "parse_verdict": "moa.eval.judge",
    "pass_at_k": "moa.eval.stats",
    "percentile": "moa.eval.stats",
    "power_n": "moa.eval.stats",
    "run_python": "moa.eval.sandbox",
    "run_python_async": "moa.eval.sandbox",
    "score_execution": "moa.eval.execution",
    "score_execution_async": "moa.eval.execution",
    "sign_test": "moa.eval.stats",
}

__all__ = [
    "CI",
    "JUDGE_PROMPT",
    "NO_TARGET",
    "BadRow",
    "ConversationEvaluator",
    "Dataset",
    "Evaluator",
    "ExecutionEvaluator",
    "Item",
    "Judgment",
    "McNemarResult",
    "Outcome",
    "PairScore",
    "PairwiseEvaluator",
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
    "format_conversation_prompt",
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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
