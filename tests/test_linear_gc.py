"""The collector is tuned only by the long-running entry points, and put back when they return."""

from __future__ import annotations

import argparse
import gc
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moa._run import Runner
from moa.experiment import Experiment
from moa.gc_tuning import LONG_RUN_THRESHOLD, tune_gc_for_long_runs
from moa.models.base import ModelRequest
from moa.testing import FunctionModel

ROOT = Path(__file__).resolve().parent.parent


def gc_state() -> tuple[tuple[int, int, int], int]:
    return gc.get_threshold(), gc.get_freeze_count()


@pytest.fixture(autouse=True)
def untuned() -> Iterator[None]:
    """Each test starts and ends with the collector as the interpreter set it."""
    before = gc_state()
    assert before[1] == 0, "some earlier code left objects frozen"
    yield
    assert gc_state() == before


def test_importing_moa_leaves_the_collector_alone() -> None:
    """Importing moa and its entry-point modules changes no threshold and freezes nothing."""
    probe = (
        "import gc, json\n"
        "before = [gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()]\n"
        "import moa, moa.cli, moa.gc_tuning, moa.serve.cli, moa.experiment.cli\n"
        "from moa.experiment import Experiment\n"
        "after = [gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()]\n"
        "print(json.dumps([before, after]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    before, after = json.loads(out.stdout.splitlines()[-1])
    assert before == after


def test_tuning_applies_inside_and_restores_after() -> None:
    """Inside the block: raised threshold and a frozen heap; after it: both as they were."""
    before = gc_state()
    with tune_gc_for_long_runs() as saved:
        assert saved is not None and saved.threshold == before[0] and saved.froze
        assert gc.get_threshold() == LONG_RUN_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc_state() == before


def test_nested_blocks_restore_once_at_the_outermost() -> None:
    """An inner block changes nothing and restores nothing; the outer one restores all."""
    before = gc_state()
    with tune_gc_for_long_runs():
        with tune_gc_for_long_runs() as inner:
            assert inner is None
        assert gc.get_threshold() == LONG_RUN_THRESHOLD
    assert gc_state() == before


def test_restored_even_when_the_body_raises() -> None:
    """An error in the body still puts the settings back."""
    before = gc_state()
    with pytest.raises(RuntimeError), tune_gc_for_long_runs():
        raise RuntimeError("boom")
    assert gc_state() == before


def test_a_callers_own_freeze_is_kept() -> None:
    """When something else froze objects first, the tuning neither freezes nor unfreezes."""
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with tune_gc_for_long_runs() as saved:
            assert saved is not None and not saved.froze
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_environment_variable_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """``MOA_GC_TUNING=off`` leaves the collector alone."""
    monkeypatch.setenv("MOA_GC_TUNING", "off")
    before = gc_state()
    with tune_gc_for_long_runs() as saved:
        assert saved is None and gc_state() == before


def _experiment(tmp: Path) -> Path:
    topo = "name: {0}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{0}, max_tokens: 5}}\n"
    (tmp / "base.yaml").write_text(topo.format("base"))
    (tmp / "other.yaml").write_text(topo.format("other"))
    rows = [{"id": f"i{k}", "input": f"question {k}", "target": str(k)} for k in range(5)]
    (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "exp.yaml").write_text(
        "name: gc-test\ndataset: data.jsonl\nevaluator: exact\nbaseline: base.yaml\nsetups: [other.yaml]\n"
        "bootstrap_rounds: 100\n"
    )
    return tmp / "exp.yaml"


def test_experiment_run_tunes_during_and_restores_after(tmp_path: Path) -> None:
    """``Experiment.run`` used as a library: tuned while its calls run, untouched once it returns."""
    before = gc_state()
    seen: list[tuple[tuple[int, int, int], int]] = []

    def answer(req: ModelRequest) -> str:
        seen.append(gc_state())
        return req.messages[-1]["content"].split()[-1]

    runner = Runner(models={"sim/*": FunctionModel(answer)})
    exp = Experiment.from_file(_experiment(tmp_path), out=tmp_path / "out", runner=runner, progress=False)
    summary = exp.run()
    assert summary.complete
    assert seen and all(t == LONG_RUN_THRESHOLD and frozen > 0 for t, frozen in seen)
    assert gc_state() == before


def test_moa_compare_runs_tuned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``moa compare`` runs the experiment with the collector tuned and restores it on return."""
    from moa.cli import main

    seen: list[tuple[tuple[int, int, int], int]] = []

    def fake_run(self: Experiment) -> Any:
        seen.append(gc_state())
        return argparse.Namespace(complete=True)

    monkeypatch.setattr(Experiment, "run", fake_run)
    before = gc_state()
    assert main(["compare", str(_experiment(tmp_path)), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert seen == [(LONG_RUN_THRESHOLD, seen[0][1])] and seen[0][1] > 0
    assert gc_state() == before


def test_moa_serve_runs_tuned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``moa serve`` runs its server with the collector tuned and restores it on return."""
    import moa.serve
    from moa.serve.cli import run

    seen: list[tuple[tuple[int, int, int], int]] = []
    real_require = moa.serve.require

    class FakeUvicorn:
        """uvicorn's Config and Server, as ``moa.serve.cli.serve`` uses them, without serving."""

        class Config:
            def __init__(self, app: Any, **kwargs: Any) -> None:
                self.app = app

        class Server:
            def __init__(self, config: Any) -> None:
                self.config = config

            def run(self, sockets: list[socket.socket]) -> None:
                seen.append(gc_state())
                for sock in sockets:
                    sock.close()

    def require(module: str) -> Any:
        return FakeUvicorn if module == "uvicorn" else real_require(module)

    monkeypatch.setattr(moa.serve, "require", require)
    topology = tmp_path / "t.yaml"
    topology.write_text(
        "name: t\nkind: single\nagent: a\nagents:\n  a: {model: openai/m, api_base: 'http://127.0.0.1:9/v1'}\n"
    )
    before = gc_state()
    args = argparse.Namespace(
        topologies=[str(topology)],
        host="127.0.0.1",
        port=0,
        api_key_env=None,
        max_body_bytes=1000,
        no_trace=False,
    )
    assert run(args) == 0
    assert len(seen) == 1 and seen[0][0] == LONG_RUN_THRESHOLD and seen[0][1] > 0
    assert gc_state() == before
