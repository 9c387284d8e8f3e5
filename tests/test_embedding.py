"""moa embedded in an application: the Python API's arguments, its sync helper, its builders and
custom backends, each mistake refused in one line naming the culprit."""

from __future__ import annotations

from pathlib import Path
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


def _problems(make: Any) -> list[str]:
    with pytest.raises(moa.TopologyError) as info:
        make()
    return info.value.problems


@pytest.mark.parametrize(
    ("built", "written"),
    [
        (
            lambda: build.parallel(["openai/a"], reduce="avg"),
            {"kind": "parallel", "workers": ["a"], "reduce": "avg"},
        ),
        (lambda: build.self_moa("openai/a", 0), {"kind": "self_moa", "agent": "a", "samples": 0}),
        (
            lambda: build.layered(0, "openai/a", proposers=["openai/a"]),
            {"kind": "layered", "layers": 0, "proposers": ["a"], "aggregator": "a"},
        ),
        (
            lambda: build.dag({"a": build.agent("openai/a")}, [{"id": "n", "agent": "a", "inptus": []}]),
            {"nodes": [{"id": "n", "agent": "a", "inptus": []}]},
        ),
    ],
)
def test_a_builder_refuses_what_the_same_file_is_refused_for(built: Any, written: dict[str, Any]) -> None:
    """A builder's bad field was pydantic's ValidationError (several lines, no moa.MoAError) where the
    same shorthand in a file is a TopologyError: now both give the same one-line problems."""
    from moa.topology.loader import load_data

    data = {"name": "t", **written, "agents": {"a": {"model": "openai/a"}}}
    assert _problems(built) == _problems(lambda: load_data(data))


def test_build_agent_names_a_misspelt_field_as_a_file_would() -> None:
    """`build.agent(model, temprature=...)` was a pydantic ValidationError."""
    assert _problems(lambda: build.agent("openai/a", temprature=0.5)) == [
        "temprature: unknown field; did you mean `temperature`?"
    ]
    with pytest.raises(moa.TopologyError, match=r"^agent `openai/a`: temperature: "):
        build.agent("openai/a", temperature="hot")


def test_a_builder_given_something_that_is_no_agent_says_so() -> None:
    """`build.single(None)` raised an AttributeError about `.model`."""
    with pytest.raises(
        moa.TopologyError, match=r"an agent is a model string or build\.agent\(\.\.\.\), not None"
    ):
        build.single(None)  # type: ignore[arg-type]


class _Bare:
    """A backend with the one method the README names: `async complete(request, on_token=None)`."""

    async def complete(self, request: moa.ModelRequest, on_token: Any = None) -> moa.ModelReply:
        return moa.ModelReply(text="bare answer", usage=moa.Usage(2, 2))


async def test_a_backend_with_only_complete_answers() -> None:
    """A backend without a `local` attribute failed every call with an AttributeError, reported as
    the nodes' failure (`QuorumNotReached ... 'MyModel' object has no attribute 'local'`)."""
    t = build.parallel(["my/a", "my/b"], "my/c")
    result = await t.run("q", runner=moa.Runner(models={"my/*": _Bare()}))  # type: ignore[dict-item]
    assert result.output == "bare answer"
    assert [c.local for c in result.calls] == [False] * 3


def test_a_backend_whose_local_is_no_bool_is_refused() -> None:
    """`local = "yes"` would price its calls as local compute: refused when the runner is made."""
    bare = _Bare()
    bare.local = "yes"  # type: ignore[attr-defined]
    with pytest.raises(
        moa.UserError, match=r"^models\['my/\*'\]: _Bare\.local must be True or False, got 'yes'$"
    ):
        moa.Runner(models={"my/*": bare})  # type: ignore[dict-item]


async def test_a_topology_copied_with_an_update_runs_what_it_says() -> None:
    """pydantic's `model_copy(update=...)` does not validate: the copy kept the old graph, so it ran
    every worker's answer into the aggregator while its dump (an experiment's key) said `quorum: 1`."""
    t = build.parallel(["fake/a", "fake/b", "fake/c"], "fake/agg")
    copy = t.model_copy(update={"quorum": 1})
    assert copy.quorum == 1
    assert copy.graph.nodes["aggregate"].needed == 1
    assert t.graph.nodes["aggregate"].needed == 3
    assert copy.model_dump() == {**t.model_dump(), "quorum": 1}
    assert t.model_copy().graph is t.graph  # a plain copy keeps it: nothing changed
    with pytest.raises(moa.TopologyError, match=r"^parallel: quorum 9 is larger than the 3 workers$"):
        t.model_copy(update={"quorum": 9})


def test_a_cascade_copied_with_an_update_keeps_its_stages() -> None:
    """The same for a cascade: validated again, from its stages as read."""
    cascade = moa.load("cascade-agree")
    copy = cascade.model_copy(update={"name": "renamed"})
    assert isinstance(copy, moa.Cascade)
    assert copy.model_dump() == {**cascade.model_dump(), "name": "renamed"}
    assert len(copy.stage_list) == len(cascade.stage_list)


async def test_a_shared_runner_does_not_keep_every_topology_it_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    """An application building a topology per request on one shared Runner kept each one's agents
    and graph for the runner's life (about 9 KB a run, without bound)."""
    import gc
    import weakref

    from moa._run import runner as runner_module

    monkeypatch.setattr(runner_module, "CACHE_MAX", 8, raising=False)
    shared = fake_runner()
    first = build.parallel(["fake/a", "fake/b"], "fake/c")
    assert (await first.run("q", runner=shared)).output == "an answer"
    gone = weakref.ref(first.agents["a"])
    del first
    for _ in range(10):
        assert (
            await build.parallel(["fake/a", "fake/b"], "fake/c").run("q", runner=shared)
        ).output == "an answer"
    gc.collect()
    assert gone() is None
    # a topology kept by the application is still run as before, from a resolved agent or anew
    kept = build.single("fake/a")
    assert [(await kept.run("q", runner=shared)).output for _ in range(20)] == ["an answer"] * 20


def test_every_name_moa_exports_is_in_the_readme() -> None:
    """Users read the README: `AgentSpec`, `NodeSpec` and `NodeResult` were exported and named nowhere."""
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert [n for n in moa.__all__ if not re.search(rf"(?<![\w.]){n}\b|moa\.{n}\b", readme)] == []


#: what an application writes, following the README: its own backend with `complete` only
USER_PROGRAM = """\
from __future__ import annotations

import asyncio

from pydantic import BaseModel

import moa
from moa import build


class Verdict(BaseModel):
    answer: str


class MyModel:  # the one method the README names
    async def complete(self, request: moa.ModelRequest, on_token: object = None) -> moa.ModelReply:
        return moa.ModelReply(text='{"answer": "blue"}', usage=moa.Usage(1, 1))


async def main() -> float:
    topology: moa.Topology = build.parallel(["my/a", build.agent("my/b", temperature=0.2)], "my/c")
    async with moa.Runner(models={"my/*": MyModel()}, budget=moa.Budget(1.0)) as runner:
        runner.preflight(topology)
        result: moa.RunResult = await topology.run("q", runner=runner, output_type=Verdict, deadline_s=5)
        total: moa.Usage = result.usage + result.usage
        shares = {node: share.cost_usd for node, share in result.by_node.items()}
        records: list[moa.CallRecord] = result.calls
        async for event in topology.stream("q", runner=runner):
            print(event)
        try:
            await topology.run("q", runner=runner, budget_usd=0.0)
        except moa.MoAError as e:
            print(e.calls, e.run_id)
        return result.cost_usd + total.total_tokens + len(shares) + len(records)


print(asyncio.run(main()))
"""


@pytest.mark.slow
def test_a_user_program_type_checks_under_mypy_strict(tmp_path: Path) -> None:
    """`py.typed` promises types a user's `mypy --strict` accepts: a backend with `complete` alone,
    which the README says is enough, was refused (`Model` also required `local` and `aclose`)."""
    import os
    import subprocess
    import sys

    (tmp_path / "app.py").write_text(USER_PROGRAM, encoding="utf-8")
    root = Path(__file__).resolve().parent.parent
    p = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), "app.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-3000:]


async def test_experiment_run_inside_a_running_loop_is_refused_in_one_line(tmp_path: Path) -> None:
    """`Experiment.run()` is the sync helper of `arun()`: inside a loop it raised asyncio's
    RuntimeError and left `arun()` never awaited, before anything was stored."""
    examples = Path(__file__).resolve().parent.parent / "examples"
    exp = moa.Experiment.from_file(examples / "compare_experiment.yaml", out=tmp_path, progress=False)
    with pytest.raises(
        moa.UserError,
        match=r"^Experiment\.run\(\) was called inside a running event loop .*`await experiment\.arun\(\)`",
    ):
        exp.run()
    assert list(tmp_path.iterdir()) == []
