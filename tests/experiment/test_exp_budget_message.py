"""A budget too small for one call: the experiment says the worst-case reservation is the cause and
names the least budget that lets a call through, instead of blaming a $0 baseline."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import contextlib
import re
from pathlib import Path

import pytest

from moa.errors import BudgetExceeded, UserError
from moa.experiment import Experiment
from moa.experiment.run_pairs import budget_stop
from moa.testing.sim import SimServer
from tests.experiment.exp_helpers import answers_of, questions, sim, write_experiment


def test_a_budget_below_one_calls_worst_case_names_the_least_budget(tmp_path: Path) -> None:
    rows = questions(4)
    model, _ = sim(1.0, answers_of(rows))
    with SimServer(default=model) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, rows, extra="budget_usd: 0.0000001\n")
        with pytest.raises(UserError) as info:
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert srv.stats.served == 0  # refused before sending: nothing was paid
    text = str(info.value)
    assert "budget" in text and "baseline cost $0" not in text
    m = re.search(r"a budget_usd of at least \$([0-9.]+) is needed", text)
    assert m is not None, text
    least = float(m.group(1))
    # that budget really lets one call through
    with SimServer(default=model) as srv:
        exp = write_experiment(
            tmp_path / "e2", srv.base_url, rows, extra=f"budget_usd: {least * 1.0001:.8f}\n"
        )
        # the baseline may still lack runs; what matters is that a call was made
        with contextlib.suppress(UserError):
            Experiment.from_file(exp, out=tmp_path / "out2", progress=False).run()
        assert srv.stats.served >= 1


def test_budget_stop_counts_what_was_spent() -> None:
    e = BudgetExceeded("refused", node="n", model="m", needed_usd=0.25, spent_usd=1.0)
    assert "at least $1.250000" in budget_stop(1.1, e)
