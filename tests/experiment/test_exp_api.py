"""moa.experiment's public names: the documented ones, and the old names kept for existing code."""

from __future__ import annotations

import moa
import moa.eval
import moa.experiment


def test_every_name_in_all_resolves() -> None:
    """Every name in moa.experiment.__all__ imports (names load on first use)."""
    assert moa.experiment.__all__ == sorted(moa.experiment.__all__)
    for name in moa.experiment.__all__:
        assert getattr(moa.experiment, name) is not None, name


def test_documented_paths_import() -> None:
    """The README's and the examples' imports work: moa.Experiment, Experiment/ExperimentSpec, format_table."""
    from moa.experiment import Experiment, ExperimentSpec
    from moa.experiment.report import format_table

    assert moa.Experiment is Experiment
    assert ExperimentSpec.model_fields and callable(format_table)


def test_old_names_are_the_evaluation_types() -> None:
    """JudgmentRow, PairScore and PairwiseEvaluator still import from moa.experiment: moa.eval's types."""
    assert moa.experiment.JudgmentRow is moa.eval.Judgment
    assert moa.experiment.PairScore is moa.eval.PairScore
    assert moa.experiment.PairwiseEvaluator is moa.eval.PairwiseEvaluator
