"""moa embedded in an application: the Python API's arguments, its sync helper, its builders and
custom backends, each mistake refused in one line naming the culprit."""

from __future__ import annotations

from typing import Any

import pytest

import moa
from moa import build
from moa.testing import FunctionModel


def fake_runner(**kwargs: Any) -> moa.Runner:
    return moa.Runner(models={"fake/*": FunctionModel(lambda r: "an answer")}, **kwargs)


@pytest.mark.parametrize("where", ["runner", "run"])
async def test_a_budget_given_as_a_number_is_refused_in_one_line(where: str) -> None:
    """`budget=5.0` failed every node with an AttributeError, reported as their quorum's failure."""
    t = build.parallel(["fake/a", "fake/b"], "fake/c")
    with pytest.raises(
        moa.UserError,
        match=r"^budget must be a moa\.Budget, not float \(a cap in USD: moa\.Budget\(5\.0\)\)$",
    ):
        if where == "runner":
            fake_runner(budget=5.0)
        else:
            await t.run("q", runner=fake_runner(), budget=5.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("deadline", ["5", True, 0, -1.0, float("nan")])
async def test_a_deadline_that_is_no_number_of_seconds_is_refused_in_one_line(deadline: Any) -> None:
    """A string deadline raised a bare TypeError, and `True` ran with a deadline of one second."""
    t = build.single("fake/a")
    with pytest.raises(moa.UserError, match=r"^deadline_s must be a number of seconds > 0 \(got "):
        await t.run("q", runner=fake_runner(), deadline_s=deadline)


async def test_an_output_type_that_is_no_schema_is_refused_naming_the_argument() -> None:
    """`output_type=int` raised a TypeError, outside the exception tree."""
    t = build.single("fake/a")
    with pytest.raises(moa.RequestRefused) as info:
        await t.run("q", runner=fake_runner(), output_type=int)  # type: ignore[arg-type]
    assert info.value.field == "output_type"
    assert str(info.value) == (
        "output_type: must be a pydantic model class or a JSON Schema mapping, not <class 'int'>"
    )


async def test_run_sync_inside_a_running_loop_is_refused_in_one_line() -> None:
    """It raised asyncio's RuntimeError and left the run's coroutine never awaited (a warning, an
    error under `filterwarnings = error`): in Jupyter or an async handler, `await` is the way."""
    t = build.single("fake/a", name="mine")
    for kwargs in ({"runner": fake_runner()}, {}):
        with pytest.raises(
            moa.UserError, match=r"^`mine`: run_sync\(\) was called inside a running event loop"
        ):
            t.run_sync("q", **kwargs)
