"""Language as a category: an experiment over items in several languages reports quality, Δ, pass@k
per language next to the overall figures (summary.json and report.md)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import shutil
from pathlib import Path

import pytest

from moa import Runner
from moa.experiment import Experiment
from moa.testing import FunctionModel

FIXTURE = Path(__file__).parent.parent / "eval" / "fixtures" / "languages" / "generic.jsonl"


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("node") is None, reason="needs gcc and node")
def test_per_language_quality_next_to_the_overall(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["language"] in ("c", "javascript")]
    assert {r["language"] for r in rows} == {"c", "javascript"}
    for r in rows:  # the fixture asks the same question in every language: tell them apart
        r["input"] = f"In {r['language']}: {r['input']}"
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, model in (("base", "sim/base"), ("coder", "sim/coder")):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: {model}}}\n"
        )
    (tmp_path / "exp.yaml").write_text(
        "name: langs\ndataset: data.jsonl\nevaluator: execution\nbaseline: base.yaml\nsetups: [coder.yaml]\n"
        "concurrency: 2\nbootstrap_rounds: 200\n"
    )
    by_input = {r["input"]: r for r in rows}

    def answer(kind: str) -> FunctionModel:
        def pick(req: object) -> str:
            row = by_input[str(req.messages[-1]["content"])]  # type: ignore[attr-defined]
            # the baseline is right only in C; the coder everywhere
            good = kind == "coder" or row["language"] == "c"
            return str(row["meta"]["correct" if good else "wrong"])

        return FunctionModel(pick)

    runner = Runner(models={"sim/base": answer("base"), "sim/coder": answer("coder")})
    summary = Experiment.from_file(
        tmp_path / "exp.yaml", out=tmp_path / "out", runner=runner, progress=False
    ).run()
    base, coder = summary.setup("base"), summary.setup("coder")
    assert set(coder.languages) == {"c", "javascript"}
    assert base.languages["c"].quality == 1.0 and base.languages["javascript"].quality == 0.0
    assert coder.languages["javascript"].quality == 1.0
    assert coder.languages["javascript"].delta_vs_baseline == pytest.approx(1.0)
    assert coder.languages["c"].delta_vs_baseline == pytest.approx(0.0)
    assert coder.languages["c"].pass_at_k == {"1": 1.0}
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["setups"][1]["languages"]["javascript"]["n"] == sum(
        r["language"] == "javascript" for r in rows
    )
    assert "## Per language" in (tmp_path / "out" / "report.md").read_text()
