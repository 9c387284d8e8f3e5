"""What each node of a run sees and returns: fan-in order, votes, quorum gaps, hostile replies and
inputs, typed replies."""

from __future__ import annotations

import moa
from moa import build
from moa._run.reducers import normalise
from moa.testing import FunctionModel


async def test_a_majority_tie_goes_to_input_order_not_completion_order() -> None:
    """A 1-1 vote goes to the first declared worker even when it answers last."""
    models = {
        "fake/a": FunctionModel(lambda r: "Paris", delay_s=0.2),
        "fake/b": FunctionModel(lambda r: "Lyon"),
    }
    t = build.parallel(["fake/a", "fake/b"], reduce="majority")
    r = await t.run("q", runner=moa.Runner(models=models))
    assert r.output == "Paris"


def test_last_number_votes_read_numbers_as_the_evaluator_does() -> None:
    """A range's hyphen is no minus sign, a Unicode minus is one, and `1,2,3` is not 123."""

    def key(text: str) -> str:
        return normalise(text, "last_number")

    assert key("pages 12-15") == key("15")
    assert key("it is −7") == key("-7") != key("7")
    assert key("1,2,3") == key("3")
    assert key("$1,000.00") == key("1000")
    assert key("x " + "9" * 5000) == ""  # more digits than are read: no vote
