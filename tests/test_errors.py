"""moa's exception tree as values that travel: every error round-trips through pickle (a Dask
worker's error comes back to the driver that way) with its message, attributes and calls."""

from __future__ import annotations

import pickle

import pytest

from moa import errors
from moa.errors import MoAError, QuorumNotReached, RequestRefused, TimedOut, TopologyError


def _every_error() -> list[MoAError]:
    plain = [
        cls("it failed")
        for name in errors.__all__
        if (cls := getattr(errors, name)) not in (QuorumNotReached, RequestRefused, TopologyError)
    ]
    return [
        *plain,
        QuorumNotReached("lost", node="agg", needed=2, answered=1, errors=[TimedOut("slow", node="w1")]),
        RequestRefused("empty", field="prompt", source="t.yaml"),
        TopologyError(["one", "two"], source="t.yaml"),
    ]


@pytest.mark.parametrize("error", _every_error(), ids=lambda e: type(e).__name__)
def test_every_error_survives_pickling(error: MoAError) -> None:
    """Unpickled, an error is the same class with the same text and attributes; those whose
    constructor takes keyword-only arguments (`QuorumNotReached`, `RequestRefused`) raised TypeError."""
    error.calls = []
    error.run_id = "r1"
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error) and back.args == error.args
    assert back.__dict__.keys() == error.__dict__.keys() and back.run_id == "r1"
    if isinstance(back, QuorumNotReached):
        assert (back.node, back.needed, back.answered, str(back.errors[0])) == (
            "agg",
            2,
            1,
            "node `w1`: slow",
        )
