"""What each node of a run sees and returns: fan-in order, votes, quorum gaps, hostile replies and
inputs, typed replies."""

from __future__ import annotations

import moa
from moa import build
from moa._run.reducers import normalise
from moa.models.base import ModelRequest
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


async def test_an_aggregator_under_quorum_is_told_who_did_not_answer() -> None:
    """A quorum fan-in's prompt says how many answered and names the missing worker; a full one adds nothing."""
    seen: list[str] = []

    def agg(r: ModelRequest) -> str:
        seen.append(r.messages[-1]["content"])
        return "final"

    models = {
        "fake/b": FunctionModel(lambda r: moa.RequestRejected("bad request", status_code=400)),
        "fake/agg": FunctionModel(agg),
        "fake/*": FunctionModel(lambda r: f"from {r.model}"),
    }
    t = build.parallel(["fake/a", "fake/b", "fake/c"], aggregator="fake/agg", quorum=2)
    await t.run("q", runner=moa.Runner(models=models))
    assert (
        "1. [a]\nfrom fake/a\n\n2. [c]\nfrom fake/c\n\n(2 of the 3 responses asked for are above; none from: b.)"
        in seen[0]
    )
    full = build.parallel(["fake/a", "fake/c"], aggregator="fake/agg", quorum=1, on_quorum="wait")
    await full.run("q", runner=moa.Runner(models=models))
    assert "responses asked for" not in seen[1]
