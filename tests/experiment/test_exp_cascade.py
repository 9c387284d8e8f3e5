"""A cascade in an experiment, against the loopback simulator with models of known accuracy: its
measured quality, escalation rate and calls per item match their analytic values, and the store,
summary and report say which stage answered.

The models: the cheap one is right with p = 0.7 (and priced 10x lower), the strong one with q = 0.8;
a wrong answer is always the same (the right number + 1), each call an independent draw.

- stage 1, two cheap samples, accepted when they agree: both right (p²) or both the same wrong
  answer ((1-p)²); escalation rate e = 2p(1-p) = 0.42
- stage 2, the mixture: majority of three strong samples, right when two or three are:
  m = 3q² - 2q³ = 0.896 (the earlier answers join its prompt; the simulated models ignore them)
- quality = p² + e·m = 0.49 + 0.42 · 0.896 = 0.86632 (an agreement on the wrong answer scores 0)
- calls per item = 2 + 3e = 3.26
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import hashlib
import json
import math
import sqlite3
from pathlib import Path

from exp_helpers import answers_of, questions

from moa import Runner, build
from moa.cascade import Cascade, CascadeContext
from moa.eval.datasets import Item
from moa.experiment import Experiment
from moa.experiment.conversation import run_item
from moa.experiment.store.database import Store
from moa.experiment.store.schema import SCHEMA_VERSION
from moa.testing import FunctionModel
from moa.testing.sim import SimModel, SimRequest, SimServer, last_user_text

N = 400
P, Q = 0.7, 0.8
ESCALATION = 2 * P * (1 - P)
MIXTURE = 3 * Q**2 - 2 * Q**3
QUALITY = P**2 + ESCALATION * MIXTURE
CALLS = 2 + 3 * ESCALATION
CONTEXT = " ".join(["Read the question below carefully and answer it with a single number."] * 6)


class OneWrong:
    """Right with probability ``p`` on the question found in the prompt (the longest key it holds),
    else the right number + 1: so two wrong answers always agree."""

    def __init__(self, p: float, answers: dict[str, str]) -> None:
        self.p, self.answers = p, answers
        self.keys = sorted(answers, key=len, reverse=True)

    def __call__(self, req: SimRequest) -> str:
        text = last_user_text(req.messages)
        key = next(k for k in self.keys if k in text)
        material = f"{req.model}|{text}|{req.call_index}".encode()
        u = int.from_bytes(hashlib.sha256(material).digest()[:8], "big") / 2**64
        right = self.answers[key]
        return f"The answer is {right}" if u < self.p else f"The answer is {int(right) + 1}"


def cheap_and_strong(answers: dict[str, str], more: dict[str, SimModel] | None = None) -> dict[str, SimModel]:
    """The cascade's two models: right with probability P and Q on each question; ``more`` added."""
    return {
        "cheap-m": SimModel(answer=OneWrong(P, answers)),
        "strong-m": SimModel(answer=OneWrong(Q, answers)),
        **(more or {}),
    }


def _write(folder: Path, base_url: str, rows: list[dict[str, object]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    common = f"api_base: {json.dumps(base_url)}, retry: {{max_attempts: 1}}"
    strong = f"{common}, pricing: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}"
    cheap = f"{common}, pricing: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}"
    (folder / "single.yaml").write_text(
        f"name: single\nkind: single\nagent: a\nagents:\n  a: {{model: openai/cheap-m, {cheap}}}\n"
    )
    (folder / "mixture.yaml").write_text(
        "name: mixture\nkind: self_moa\nagent: s\nsamples: 3\nreduce: majority\nvote_on: last_number\n"
        f"agents:\n  s: {{model: openai/strong-m, temperature: 0.7, {strong}}}\n"
    )
    (folder / "cascade.yaml").write_text(
        "name: cascade\nkind: cascade\nstages:\n"
        "  - {agent: mini, samples: 2, accept: {agree: 2, vote_on: last_number}}\n"
        "  - {topology: mixture.yaml, reuse: true}\n"
        f"agents:\n  mini: {{model: openai/cheap-m, temperature: 0.7, {cheap}}}\n"
    )
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "exp.yaml").write_text(
        "name: sim-cascade\ndataset: data.jsonl\nevaluator: {name: numeric}\nbaseline: single.yaml\n"
        "setups: [cascade.yaml, mixture.yaml]\nconcurrency: 8\nbootstrap_rounds: 200\n"
    )
    return folder / "exp.yaml"


def _within(measured: float | None, expected: float, se: float) -> bool:
    return measured is not None and abs(measured - expected) <= 3 * se


def test_cascade_matches_its_analytic_quality_escalation_and_calls(tmp_path: Path) -> None:
    """400 items: quality, escalation rate, stage shares and calls per item within 3 standard errors
    of p² + e·m, e = 2p(1-p) and 2 + 3e; the store holds each run's stage; the report shows it."""
    # a question of a realistic length: the earlier answers `reuse` adds are then a small part of
    # the escalated prompt (on a five-word question they would triple its cost)
    rows = [{**r, "input": f"{CONTEXT} {r['input']}"} for r in questions(N)]
    answers = answers_of(rows)
    models = cheap_and_strong(answers)
    with SimServer(models) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    c, mix = summary.setup("cascade"), summary.setup("mixture")
    assert c.n == N and c.errors == 0
    se_e = math.sqrt(ESCALATION * (1 - ESCALATION) / N)
    assert _within(c.escalation_rate, ESCALATION, se_e), c.escalation_rate
    assert c.stage_shares is not None and _within(c.stage_shares["2"], ESCALATION, se_e)
    assert abs(c.stage_shares["1"] + c.stage_shares["2"] - 1) < 1e-9
    assert _within(c.quality, QUALITY, math.sqrt(QUALITY * (1 - QUALITY) / N)), c.quality
    assert _within(c.calls_per_item, CALLS, 3 * se_e), c.calls_per_item
    assert _within(mix.quality, MIXTURE, math.sqrt(MIXTURE * (1 - MIXTURE) / N)), mix.quality
    assert mix.escalation_rate is None and mix.stage_shares is None
    assert mix.calls_per_item == 3.0
    # more calls than the mixture's 3, but the cheap model's cost a tenth: about half the cost
    assert c.cost_usd < 0.7 * mix.cost_usd
    print(
        f"\nanalytic: quality {QUALITY:.4f} escalation {ESCALATION:.4f} calls {CALLS:.3f} mixture {MIXTURE:.4f}"
        f"\nmeasured: quality {c.quality:.4f} escalation {c.escalation_rate:.4f} calls {c.calls_per_item:.3f} "
        f"mixture {mix.quality:.4f} single {summary.setup('single').quality:.4f} "
        f"cost cascade/mixture {c.cost_usd / mix.cost_usd:.3f}"
    )
    conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
    try:
        stages = dict(conn.execute("SELECT stage, COUNT(*) FROM runs WHERE setup='cascade' GROUP BY stage"))
        assert set(stages) == {1, 2} and sum(stages.values()) == N
        assert conn.execute(
            "SELECT COUNT(*) FROM runs WHERE setup='mixture' AND stage IS NOT NULL"
        ).fetchone() == (0,)
    finally:
        conn.close()
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    entry = next(s for s in on_disk["setups"] if s["name"] == "cascade")
    assert entry["escalation_rate"] == c.escalation_rate and set(entry["stage_shares"]) == {"1", "2"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Cascade" in report and "escalation rate" in report


def test_a_version_3_store_gains_the_stage_column(tmp_path: Path) -> None:
    """Upgrading a v3 store adds `runs.stage`; its old runs read back with no stage."""
    out = tmp_path / "out"
    out.mkdir()
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.executescript(
        """
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '3');
        CREATE TABLE runs(run_id INTEGER PRIMARY KEY, setup TEXT NOT NULL, topo_hash TEXT NOT NULL,
          item_id TEXT NOT NULL, input_hash TEXT NOT NULL, answer TEXT, error TEXT, error_type TEXT,
          cost_usd REAL NOT NULL, latency_s REAL NOT NULL, critical_path_s REAL NOT NULL,
          prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, n_calls INTEGER NOT NULL,
          finished_at REAL NOT NULL, sample INTEGER NOT NULL DEFAULT 0, cost_usd_max REAL,
          unknown_attempts INTEGER NOT NULL DEFAULT 0,
          UNIQUE(setup, topo_hash, item_id, input_hash, sample));
        INSERT INTO runs(setup, topo_hash, item_id, input_hash, answer, cost_usd, latency_s,
          critical_path_s, prompt_tokens, completion_tokens, n_calls, finished_at)
          VALUES ('s', 'h', '1', 'x', '4', 0.1, 1.0, 1.0, 10, 5, 1, 0);
        """
    )
    conn.commit()
    conn.close()
    store = Store.open(out)
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION
        row = store.run_for("s", "h", "1")
        assert row is not None and row.stage is None and row.answer == "4"
    finally:
        store.close()


async def test_an_experiment_run_hands_the_item_to_the_rules() -> None:
    """`run_item` (each experiment pair) opens the item's scope, so a rule sees the dataset item."""
    seen: list[object] = []

    def rule(answer: str, ctx: CascadeContext) -> bool:
        seen.append(ctx.item)
        return True

    c = Cascade.model_validate(
        {
            "name": "py",
            "agents": {"m": {"model": "fake/m", "temperature": 0.5}},
            "stages": [{"agent": "m", "samples": 2, "accept": rule}, {"topology": build.single("fake/m")}],
        }
    )
    item = Item(id="1", input="q")
    runner = Runner(models={"fake/m": FunctionModel(lambda r: "a")})
    result, _ = await run_item(runner, c, item)
    assert seen == [item] and result.stage == 1
