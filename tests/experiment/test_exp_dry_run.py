"""`moa compare --dry-run`: every check of a run, what it would send, and no call or store."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from exp_helpers import write_experiment

from moa.errors import UserError
from moa.experiment import Experiment
from moa.testing.sim import FaultPlan, SimModel, SimRequest, SimServer

REPO = Path(__file__).resolve().parents[2]
ROWS = [
    {"problem": "1+1?", "answer": "2"},
    {"problem": "2+2?", "answer": "4"},
    {"problem": "3+3?", "answer": "6"},
]


class Counted:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, req: SimRequest) -> str:
        self.calls += 1
        return "\\boxed{2}"


def test_a_dry_run_checks_and_counts_without_a_call_or_a_folder(tmp_path: Path) -> None:
    """The layout, the evaluator it picks, the calls each setup sends (majority-3: three samples,
    a reducer that calls nothing), the first prompt; no request reaches the server, no folder."""
    counted = Counted()
    with SimServer({"single-m": SimModel(answer=counted), "maj-m": SimModel(answer=counted)}) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, ROWS, evaluator=None, extra="budget_usd: 5\n")
        lines = Experiment.from_file(exp, out=tmp_path / "out", progress=False).plan().lines()
    assert counted.calls == 0 and not (tmp_path / "out").exists()
    text = "\n".join(lines)
    assert "dataset: " in text and ": 3 items, MATH layout" in text
    assert "evaluator: exact {extract_final: true, numbers: true} (the dataset layout's own)" in text
    assert "  single (single.yaml) (baseline): 1 call per run; 3 of 3 runs to do, 3 calls" in lines
    assert "  majority-3 (majority.yaml): 3 calls per run; 3 of 3 runs to do, 9 calls" in lines
    assert "calls to send: 12, before retries" in lines
    assert "budget: $5, $0.000000 spent already, $5.000000 left" in lines
    assert lines[-2:] == ["first item `1`:", "  | 1+1?"]


def test_a_dry_run_of_a_resume_counts_only_the_runs_left(tmp_path: Path) -> None:
    """After a run of the first two items, a dry run over all three has one run per setup to do."""
    counted = Counted()
    with SimServer({"single-m": SimModel(answer=counted), "maj-m": SimModel(answer=counted)}) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, ROWS, evaluator=None)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False, limit=2).run()
        sent = counted.calls
        lines = Experiment.from_file(exp, out=tmp_path / "out", progress=False).plan().lines()
    assert counted.calls == sent == 8
    assert "  single (single.yaml) (baseline): 1 call per run; 1 of 3 runs to do, 1 call" in lines
    assert "  majority-3 (majority.yaml): 3 calls per run; 1 of 3 runs to do, 3 calls" in lines
    assert any(line.startswith("setups (1 sample per item; results resumed from ") for line in lines)


def test_a_dry_run_refuses_what_a_run_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing API key is the run's one-line error, before anything is made."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    exp = write_experiment(tmp_path / "e", "http://127.0.0.1:9", ROWS, evaluator=None)
    for name in ("single.yaml", "majority.yaml"):  # a hosted model without its api_base needs a key
        path = tmp_path / "e" / name
        path.write_text(path.read_text().replace('api_base: "http://127.0.0.1:9", ', ""))
    with pytest.raises(UserError, match=r"OPENAI_API_KEY"):
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).plan()
    assert not (tmp_path / "out").exists()


def test_a_dry_run_refuses_a_store_the_run_would_refuse(tmp_path: Path) -> None:
    """A setup edited since its runs were stored, or an item whose input changed, is the run's
    one-line refusal in a dry run too; it passed, counting every run of the setup as to do."""
    counted = Counted()
    with SimServer({"single-m": SimModel(answer=counted), "maj-m": SimModel(answer=counted)}) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, ROWS, evaluator=None)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        topo = tmp_path / "e" / "majority.yaml"
        original = topo.read_text()
        topo.write_text(original.replace("temperature: 0.7", "temperature: 0.9"))
        assert topo.read_text() != original
        refused = r"setup `majority-3` changed since its runs were stored"
        with pytest.raises(UserError, match=refused):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).plan()
        with pytest.raises(UserError, match=refused):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        topo.write_text(original)
        data = tmp_path / "e" / "data.jsonl"
        data.write_text(data.read_text().replace("2+2?", "2+3?"))
        with pytest.raises(UserError, match=r"the dataset changed: item `2`"):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).plan()
        sent = counted.calls
    assert sent == 12


def test_the_cli_prints_the_plan_and_exits_0(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path / "e", "http://127.0.0.1:9", ROWS, evaluator=None)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    p = subprocess.run(
        [sys.executable, "-m", "moa", "compare", str(exp), "--dry-run", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert "dry run: every check passed; no call sent, no store created" in p.stdout
    assert not (tmp_path / "out").exists()


def test_a_judge_counts_both_orders_of_every_judged_run(tmp_path: Path) -> None:
    """A judge of two calls per verdict, two verdicts per judged run, three runs of `majority-3`."""
    exp = write_experiment(
        tmp_path / "e",
        "http://127.0.0.1:9",
        [{"input": f"q{i}", "target": "a"} for i in range(3)],
        evaluator={"name": "judge", "topology": "judge.yaml"},
    )
    agent = 'model: openai/judge-m, api_base: "http://127.0.0.1:9"'
    (tmp_path / "e" / "judge.yaml").write_text(
        "name: judge\nkind: sequential\nagents:\n"
        f"  draft: {{{agent}}}\n  final: {{{agent}}}\nsteps: [draft, final]\n"
    )
    lines = Experiment.from_file(exp, out=tmp_path / "out", progress=False).plan().lines()
    assert "  judge: up to 12 calls (both orders of each judged answer)" in lines
    assert "calls to send: up to 24, before retries" in lines


def test_a_dry_run_counts_the_stored_answers_the_judge_has_still_to_judge(tmp_path: Path) -> None:
    """Every answer stored, the judge down last time: the next run judges the 3 setup answers in
    both orders, which the dry run counted as 0 calls (it counted only the runs to do)."""
    models = {
        "single-m": SimModel(answer="2"),
        "maj-m": SimModel(answer="2"),
        "judge-m": SimModel(answer="[[A=B]]"),
    }
    with SimServer(models, faults=FaultPlan(rate=1.0, kinds=("500",), models=["judge-m"])) as srv:
        exp = write_experiment(
            tmp_path / "e", srv.base_url, ROWS, evaluator={"name": "judge", "topology": "judge.yaml"}
        )
        (tmp_path / "e" / "judge.yaml").write_text(
            f"name: judge\nkind: single\nagent: a\nagents:\n  a: {{model: openai/judge-m, "
            f'api_base: "{srv.base_url}", retry: {{max_attempts: 1}}}}\n'
        )
        first = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert any("3 answers could not be scored" in n for n in first.notes)
        lines = Experiment.from_file(exp, out=tmp_path / "out", progress=False).plan().lines()
    assert "  judge: up to 6 calls (both orders of each judged answer)" in lines
    assert "calls to send: up to 6, before retries" in lines


def test_a_cascade_counts_every_stage_and_judge_it_may_run(tmp_path: Path) -> None:
    """A cascade's calls per run are its most, "up to": every stage and its judge. It was counted by
    its last stage alone (`majority-3`'s 3 calls), as a plain topology, without "up to"."""
    exp = write_experiment(tmp_path / "e", "http://127.0.0.1:9", ROWS, evaluator=None)
    agent = 'model: openai/cheap-m, api_base: "http://127.0.0.1:9", temperature: 0.7'
    (tmp_path / "e" / "cascade.yaml").write_text(
        f"name: cascade\nkind: cascade\nagents:\n  mini: {{{agent}}}\nstages:\n"
        "  - {agent: mini, samples: 2, accept: {judge: {agent: mini, threshold: 0.8}}}\n"
        "  - {topology: majority.yaml, reuse: true}\n"
    )
    exp.write_text(exp.read_text().replace("setups: [majority.yaml]", "setups: [cascade.yaml]"))
    lines = Experiment.from_file(exp, out=tmp_path / "out", progress=False).plan().lines()
    # two samples and their rater, then the mixture's three samples
    assert "  cascade (cascade.yaml): up to 6 calls per run; 3 of 3 runs to do, up to 18 calls" in lines
    assert "calls to send: up to 21, before retries" in lines


@pytest.mark.parametrize(
    ("example", "keys"),
    [
        ("math_experiment.yaml", {}),
        # priced in dollars: a key must be set, as for a run (nothing is sent)
        ("hosted_experiment.yaml", {"OPENAI_API_KEY": "sk-not-a-real-key"}),
    ],
)
def test_the_readme_s_dry_run_is_what_the_command_prints(
    tmp_path: Path, example: str, keys: dict[str, str]
) -> None:
    """The README's `--dry-run` examples, word for word, run beside a copy of `examples/` (where no
    earlier run's `moa-results/` can turn it into a resume)."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command = f"$ moa compare examples/{example} --dry-run\n"
    shown = readme[readme.index(command) + len(command) :].split("\n```", 1)[0]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LITELLM_LOCAL_MODEL_COST_MAP": "True", **keys}
    p = subprocess.run(
        [sys.executable, "-m", "moa", "compare", f"examples/{example}", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.rstrip("\n") == shown
