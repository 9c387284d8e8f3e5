"""The example scripts and files run and validate as shipped."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moa.eval import load_dataset
from moa.experiment.config import load_spec
from moa.topology.loader import load

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


EXPERIMENTS = sorted(p.name for p in EXAMPLES.glob("*.yaml") if "dataset:" in p.read_text(encoding="utf-8"))


def test_the_example_experiments_are_all_found() -> None:
    """The glob below finds every shipped experiment file (one it missed would go unchecked)."""
    assert len(EXPERIMENTS) >= 10 and "compare_experiment.yaml" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_example_experiment_files_validate(name: str) -> None:
    """Each example experiment file, its dataset and its topologies load without error."""
    spec = load_spec(EXAMPLES / name)
    data = load_dataset(EXAMPLES / spec.dataset)
    assert data.items and not data.bad_rows


@pytest.mark.skipif(not HAS_LLAMA, reason="the `local` extra (llama-cpp-python) is not installed")
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_example_experiment_passes_its_dry_run(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`moa compare examples/<file> --dry-run` passes every check a run makes (presets, evaluator,
    judge topology, the embedded model), so the command the file's comment shows can start."""
    from moa.cli import main

    # the hosted example's key is checked present; a dry run sends nothing with it
    monkeypatch.setenv("OPENAI_API_KEY", os.environ.get("OPENAI_API_KEY") or "sk-not-a-real-key")

    assert main(["compare", str(EXAMPLES / name), "--dry-run"]) == 0, capsys.readouterr().err
    assert "dry run: every check passed" in capsys.readouterr().out


def test_example_topologies_validate() -> None:
    """Topology files under examples/ validate."""
    for f in (EXAMPLES / "topologies").glob("*.yaml"):
        assert load(f).graph.output


def test_run_experiment_example(tmp_path: Path) -> None:
    """examples/run_experiment.py runs against its simulated models and prints the comparison."""
    p = _run(str(EXAMPLES / "run_experiment.py"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "majority-of-3 vs single: +" in p.stdout and "cost × single" in p.stdout
    assert (tmp_path / "moa-results" / "majority-vote" / "summary.json").is_file()
    # the table the README quotes as this script's output: the same figures, latency (load-bound) aside
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = readme[readme.index("`python examples/run_experiment.py`\n(a majority") :]
    shown = shown[shown.index("```\n") + 4 : shown.index("\n```", shown.index("```\n") + 4)]

    def rows(text: str) -> dict[str, list[str]]:
        cells = [[c.strip() for c in line.split("|")] for line in text.splitlines() if "|" in line]
        return {r[0]: r[1:3] + r[4:] for r in cells if r[0].startswith(("single", "majority"))}

    printed, quoted = rows(p.stdout), rows(shown)
    assert printed["single *"] == quoted["single *"]
    majority = next(k for k in printed if k.startswith("majority"))
    assert printed[majority][0] == quoted["majority-of-3 *"][0] == "3.00×"
    # a three-way split goes to the first answer to arrive, so the vote's quality may move a little
    assert abs(float(printed[majority][-2]) - float(quoted["majority-of-3 *"][-2])) <= 0.03


def test_run_experiment_example_runs_again(tmp_path: Path) -> None:
    """A second `python examples/run_experiment.py` writes beside the first and prints its table: it
    ended in a traceback (`setup `single` changed since its runs were stored`), the simulator's new
    port making the stored setups' api_base differ."""
    first = _run(str(EXAMPLES / "run_experiment.py"), cwd=tmp_path)
    again = _run(str(EXAMPLES / "run_experiment.py"), cwd=tmp_path)
    assert first.returncode == 0 and again.returncode == 0, again.stderr
    assert "majority-of-3 vs single: +" in again.stdout
    assert again.stdout.strip().endswith("reports in moa-results/majority-vote-2/")
    assert (tmp_path / "moa-results" / "majority-vote" / "summary.json").is_file()  # kept as it was


@pytest.mark.local_model
@pytest.mark.skipif(not HAS_LLAMA, reason="the `local` extra (llama-cpp-python) is not installed")
def test_local_quiz_example(tmp_path: Path) -> None:
    """examples/local_quiz.py asks the real embedded model and prints a totals line per setup."""
    p = _run(str(EXAMPLES / "local_quiz.py"), "1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "total local-single" in p.stdout and "total local-self-moa" in p.stdout


def test_free_baseline_reports_token_ratio_instead_of_cost(tmp_path: Path) -> None:
    """With a $0 baseline (local or unpriced models) the notes give tokens × single instead of a cost ratio."""
    import moa
    from moa.experiment.report import print_notes
    from moa.testing import FunctionModel

    fake = moa.Runner(models={"local/*": FunctionModel(lambda r: "twelve is 12")})
    exp = moa.Experiment.from_file(
        EXAMPLES / "compare_experiment.yaml", out=tmp_path, runner=fake, progress=False
    )
    notes = print_notes(exp.run())
    assert any(
        n.startswith("cost × single is undefined: the baseline cost $0")
        and "tokens × single: local-self-moa" in n
        for n in notes
    )


def test_summary_json_reads_back(tmp_path: Path) -> None:
    """Summary.from_dict reads summary.json back into the summary the experiment returned."""
    import json

    import moa
    from moa.experiment.analysis import Summary
    from moa.testing import FunctionModel

    fake = moa.Runner(models={"local/*": FunctionModel(lambda r: "12")})
    summary = moa.Experiment.from_file(
        EXAMPLES / "compare_experiment.yaml", out=tmp_path, runner=fake, progress=False
    ).run()
    again = Summary.from_dict(json.loads((tmp_path / "summary.json").read_text()))
    assert again.to_dict() == json.loads(json.dumps(summary.to_dict()))
