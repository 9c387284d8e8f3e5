"""HTML answers through the execution evaluator and an experiment: rendered in Chromium, scored by
whether the page runs cleanly, the screenshot kept under the experiment's folder."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
from pathlib import Path

import pytest

from moa import Runner
from moa.eval.datasets import Item
from moa.eval.execution import score_execution_async
from moa.eval.html import renderer_problem
from moa.experiment import Experiment
from moa.testing import FunctionModel

pytestmark = pytest.mark.skipif(renderer_problem() is not None, reason=f"{renderer_problem()}")

GOOD = "Here it is:\n```html\n<!DOCTYPE html><html><body><h1 id='t'>Hello</h1></body></html>\n```"
BAD = "```html\n<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>\n```"


async def test_an_html_item_is_rendered_and_scored(tmp_path: Path) -> None:
    item = Item(id="page", input="Make a page saying Hello", language="html")
    good = await score_execution_async(GOOD, item, artefacts_dir=str(tmp_path))
    bad = await score_execution_async(BAD, item, artefacts_dir=str(tmp_path))
    none = await score_execution_async("I cannot do that.", item)
    assert good.value == 1.0 and "screenshot:" in (good.detail or "")
    assert bad.value == 0.0 and "undefinedFunction" in (bad.detail or "")
    assert none.value == 0.0 and none.detail == "no HTML page found in the answer"
    shots = list((tmp_path / "html").glob("*.png"))
    assert len(shots) == 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in shots)


def test_html_items_in_an_experiment_keep_their_screenshots(tmp_path: Path) -> None:
    rows = [{"id": "p1", "input": "Make a page saying Hello", "language": "html"}]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("base", "good"):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{name}}}\n"
        )
    (tmp_path / "exp.yaml").write_text(
        "name: pages\ndataset: data.jsonl\nevaluator: execution\nbaseline: base.yaml\nsetups: [good.yaml]\n"
    )
    runner = Runner(
        models={"sim/base": FunctionModel(lambda r: BAD), "sim/good": FunctionModel(lambda r: GOOD)}
    )
    summary = Experiment.from_file(
        tmp_path / "exp.yaml", out=tmp_path / "out", runner=runner, progress=False
    ).run()
    assert summary.setup("good").quality == 1.0 and summary.setup("base").quality == 0.0
    assert len(list((tmp_path / "out" / "artefacts" / "html").glob("*.png"))) == 2
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert all("screenshot: " in r["score_detail"] for r in results)


async def test_the_judge_is_shown_how_each_page_rendered() -> None:
    """With show_execution, an HTML item's judge prompt carries each page's outcome (its console
    errors), though the item has no tests."""
    from moa.eval.judge import JudgeConfig, JudgeEvaluator
    from moa.topology.loader import load_data

    prompts: list[str] = []

    def judge(req: object) -> str:
        prompts.append(str(req.messages[-1]["content"]))  # type: ignore[attr-defined]
        return "[[A>B]]"

    topo = load_data({"name": "j", "kind": "single", "agent": "a", "agents": {"a": {"model": "fake/j"}}})
    ev = JudgeEvaluator(JudgeConfig(topology="j", show_execution=True), topology=topo)
    item = Item(id="page", input="Make a page saying Hello", language="html")
    await ev.score_pair(item, GOOD, BAD, runner=Runner(models={"fake/*": FunctionModel(judge)}))
    assert len(prompts) == 2
    assert all("the page rendered: rendered, no console errors" in p for p in prompts)
    assert all(
        "the page rendered: page has 1 console error" in p and "undefinedFunction" in p for p in prompts
    )
