"""Tuning a cascade's threshold (``tune:`` / ``moa compare --tune-cascade``) on the loopback simulator
with models of known accuracy (those of ``test_exp_cascade``: the cheap model right with p = 0.7, the
strong one with q = 0.8, a wrong answer always the right number + 1).

Stage 1 is two cheap samples under ``agree`` (or one under a ``judge``), stage 2 the mixture, a
majority of three strong samples (right with m = 3q² - 2q³ = 0.896). Read off one recording:

- ``agree: 1`` never escalates; its answer, the first-arriving of two samples on a tie, is right with
  probability p² + p(1-p) = p: the cheap model's quality;
- ``agree: 2`` is the cascade as written, so it reproduces the stored cascade runs item for item;
- always escalating is the mixture: quality m.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import hashlib
import json
import math
import random
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from exp_helpers import answers_of, questions
from test_exp_cascade import CONTEXT, MIXTURE, OneWrong, P, Q, _write, cheap_and_strong

from moa import Runner
from moa.cascade.execute import StageRecord, record_stages
from moa.cascade.tune import Setting, current_setting, outcome, outcome_cost_max, settings_for, trace
from moa.errors import ProviderError, UserError
from moa.experiment import Experiment, rebuild_report
from moa.experiment.analysis.tuning import TuneResult, analyse, split_items
from moa.experiment.report.tune import add_tune_section, read_tune, tune_markdown
from moa.testing import FunctionModel
from moa.testing.sim import SimModel, SimRequest, SimServer, last_user_text
from moa.topology import load_data

N = 400


class Counted:
    """An answer function that counts its calls."""

    def __init__(self, answer: Callable[[SimRequest], str]) -> None:
        self.answer, self.calls = answer, 0
        self._lock = threading.Lock()

    def __call__(self, req: SimRequest) -> str:
        with self._lock:
            self.calls += 1
        return self.answer(req)


def _rows(n: int) -> list[dict[str, object]]:
    return [{**r, "input": f"{CONTEXT} {r['input']}"} for r in questions(n)]


def _se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def _cost_order(result: TuneResult) -> list[float]:
    return [c.cost_usd for c in result.choices]


def test_agree_sweep_reads_every_setting_off_one_recording(tmp_path: Path) -> None:
    """`agree: 1` gives the cheap model's quality, always escalating the mixture's, `agree: 2` the
    stored cascade's exactly; stage-1 calls are not sent again (nor anything on a re-run); the
    choices hold their CIs and cost more for a larger share of the gain; tune.json and one report
    section are written, and `moa report` keeps it."""
    rows = _rows(N)
    answers = answers_of(rows)
    cheap, strong = Counted(OneWrong(P, answers)), Counted(OneWrong(Q, answers))
    with SimServer({"cheap-m": SimModel(answer=cheap), "strong-m": SimModel(answer=strong)}) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.3, seed: 3}\n")
        run = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        summary = run.run()
        sent = (cheap.calls, strong.calls)
        again = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        again.run()
    t = run.tuned
    assert t is not None and again.tuned == t
    assert (cheap.calls, strong.calls) == sent  # a re-run reads every call back from the store
    assert t == TuneResult.model_validate_json((tmp_path / "out" / "tune.json").read_text())
    assert (t.dev_items, t.test_items) == (120, 280)
    rows_by = {s.label: s for s in t.settings}
    assert list(rows_by) == ["agree: 1", "agree: 2", "always escalate"] and t.current == "agree: 2"
    never, written, always = rows_by["agree: 1"], rows_by["agree: 2"], rows_by["always escalate"]
    # never escalating is the cheap model; always escalating is the mixture
    assert never.test.escalation_rate == 0 and always.test.escalation_rate == 1
    assert abs(never.test.quality - P) <= 3 * _se(P, t.test_items), never.test.quality
    assert abs(never.test.quality - t.single_quality["test"]) <= 6 * _se(P, t.test_items)
    assert abs(always.test.quality - MIXTURE) <= 3 * _se(MIXTURE, t.test_items), always.test.quality
    assert t.mixture_quality["test"] == always.test.quality
    mix = summary.setup("mixture").quality
    assert mix is not None and abs(always.test.quality - mix) <= 6 * _se(MIXTURE, t.test_items)

    # the setting as written is the stored cascade, item for item (the same cached calls)
    def pooled(stat: str) -> float:
        dev, test = getattr(written.dev, stat), getattr(written.test, stat)
        return (dev * t.dev_items + test * t.test_items) / N

    c = summary.setup("cascade")
    assert c.quality is not None and c.cost_per_item_usd is not None and c.escalation_rate is not None
    assert math.isclose(pooled("quality"), c.quality, abs_tol=1e-9)
    assert math.isclose(pooled("cost_usd"), c.cost_per_item_usd, rel_tol=1e-9)
    assert math.isclose(pooled("escalation_rate"), c.escalation_rate, abs_tol=1e-9)
    # stage 1 was all cached: only the mixture ran again, on the items the cascade had accepted
    assert cheap.calls == N + 2 * N
    escalated = round(c.escalation_rate * N)
    assert strong.calls == 3 * N + 3 * escalated + 3 * (N - escalated)
    # costs never fall along the sweep, on either split
    for split in ("dev", "test"):
        costs = [getattr(s, split).cost_usd for s in t.settings]
        assert costs == sorted(costs)
    assert [c.share for c in t.choices] == [0.5, 0.8, 0.95]
    for choice in t.choices:
        lo, hi = choice.quality_ci95
        assert lo <= choice.quality <= hi and choice.reached
        assert choice.cost_saving is not None and choice.cost_saving_ci95 is not None
    assert _cost_order(t) == sorted(_cost_order(t))
    # as written: 2 cheap calls at a tenth of the price, 3 strong ones on 42% of items: about half
    # of always-MoA's cost (3 strong calls on every item)
    assert 0.3 < 1 - written.test.cost_usd / t.mixture_cost_usd < 0.7
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.count("## Cascade tuning") == 1 and "agree: 2" in report
    asyncio.run(rebuild_report(tmp_path / "out"))  # `moa report` keeps the section, once
    assert (tmp_path / "out" / "report.md").read_text().count("## Cascade tuning") == 1


def _paid(out: Path) -> float:
    from moa.experiment import Store

    store = Store.open(out, create=False)
    try:
        return store.spent_usd()
    finally:
        store.close()


def _judged_cascade(folder: Path, base_url: str, rows: list[dict[str, object]], rater: str = "") -> Path:
    """The experiment of ``_write`` with stage 1 one cheap sample under a judge (``rater-m``)."""
    exp = _write(folder, base_url, rows)
    cascade = (
        (folder / "cascade.yaml")
        .read_text()
        .replace(
            "{agent: mini, samples: 2, accept: {agree: 2, vote_on: last_number}}",
            "{agent: mini, accept: {judge: {agent: rater, threshold: 0.5}}}",
        )
    )
    rater = rater or f"api_base: {json.dumps(base_url)}"
    (folder / "cascade.yaml").write_text(cascade + f"  rater: {{model: openai/rater-m, {rater}}}\n")
    return exp


@pytest.mark.parametrize("retry_errors", [True, False])
def test_an_item_whose_escalation_failed_is_recorded_again_as_a_failed_run_is(
    tmp_path: Path, retry_errors: bool
) -> None:
    """An item whose escalated stage failed in the tuning is recorded again on the next run (only
    its failed calls are sent), as a failed run is, unless `retry_errors: false`; the rest are
    read back, and a third run sends nothing."""
    rows = _rows(30)
    answers = answers_of(rows)
    strong = Counted(OneWrong(Q, answers))
    models = {
        "cheap-m": SimModel(answer=OneWrong(P, answers)),
        "strong-m": SimModel(answer=strong),
        "rater-m": SimModel(answer='{"confidence": 0.9}'),
    }
    with SimServer(models) as srv:
        exp = _judged_cascade(tmp_path / "e", srv.base_url, rows)
        exp.write_text(exp.read_text() + f"retry_errors: {str(retry_errors).lower()}\n")
        # every item is accepted at stage 1: the mixture runs first in the tuning
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert strong.calls == 3 * len(rows)  # the mixture setup's own
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.5, seed: 3}\n")
        srv.script("strong-m", ["500"])  # one item's mixture fails
        first = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        first.run()
        sent = strong.calls
        second = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        second.run()
        resent = strong.calls - sent
        third = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        third.run()
    if retry_errors:
        assert 1 <= resent <= 3 and first.tuned != second.tuned
    else:
        assert resent == 0 and first.tuned == second.tuned
    assert strong.calls == sent + resent and third.tuned == second.tuned


def test_the_single_models_quality_is_the_reports_after_samples_drop(tmp_path: Path) -> None:
    """After a run with `samples: 3`, a run with one sample reports the baseline on its first sample;
    the tuning averaged all three stored, so its targets were set against another single model."""
    rows = _rows(20)
    answers = answers_of(rows)
    models = cheap_and_strong(answers)
    with SimServer(models) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False, samples=3).run()
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.5, seed: 3}\n")
        run = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        summary = run.run()
    t = run.tuned
    single = summary.setup("single").quality
    assert t is not None and single is not None and (t.dev_items, t.test_items) == (10, 10)
    pooled = (t.single_quality["dev"] + t.single_quality["test"]) / 2
    assert math.isclose(pooled, single, abs_tol=1e-9), (pooled, single)


def _rater(answers: dict[str, str]) -> SimModel:
    """Rates an answer's confidence: uniform in [0.4, 1] when right, in [0, 0.6] when wrong."""
    keys = sorted(answers, key=len, reverse=True)

    def rate(req: SimRequest) -> str:
        text = last_user_text(req.messages)
        key = next(k for k in keys if k in text)
        found = re.search(r"Answer:\n(.*?)\n\nReply", text, re.S)
        right = found is not None and found.group(1).strip() == f"The answer is {answers[key]}"
        u = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64
        return json.dumps({"confidence": round(0.4 + 0.6 * u if right else 0.6 * u, 3)})

    return SimModel(answer=rate)


def test_judge_sweep_through_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--tune-cascade` on a judge rule: the threshold grid, `judge >= 0` never escalating (the cheap
    model's quality), always escalating the mixture's, and the terminal table."""
    from moa.cli import main

    n = 200
    rows = _rows(n)
    answers = answers_of(rows)
    models = cheap_and_strong(answers, {"rater-m": _rater(answers)})
    with SimServer(models) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        cascade = (tmp_path / "e" / "cascade.yaml").read_text()
        rater = f"  rater: {{model: openai/rater-m, api_base: {json.dumps(srv.base_url)}}}\n"
        cascade = cascade.replace(
            "{agent: mini, samples: 2, accept: {agree: 2, vote_on: last_number}}",
            "{agent: mini, accept: {judge: {agent: rater, threshold: 0.5}}}",
        )
        (tmp_path / "e" / "cascade.yaml").write_text(cascade + rater)
        exp.write_text(
            exp.read_text().replace("setups: [cascade.yaml, mixture.yaml]", "setups: [cascade.yaml]")
        )
        out = tmp_path / "out"
        code = main(["compare", str(exp), "--out", str(out), "--no-progress", "--tune-cascade", "cascade"])
    assert code == 0
    assert "cascade tuning of `cascade`" in capsys.readouterr().out
    t = TuneResult.model_validate_json((out / "tune.json").read_text())
    assert len(t.settings) == 22 and t.settings[0].label == "judge >= 0" and t.current == "judge >= 0.5"
    assert t.settings[-1].label == "always escalate" and t.settings[-1].value is None
    never, always = t.settings[0], t.settings[-1]
    assert never.test.escalation_rate == 0 and always.test.escalation_rate == 1
    assert abs(never.test.quality - P) <= 3 * _se(P, t.test_items)
    assert abs(always.test.quality - MIXTURE) <= 3 * _se(MIXTURE, t.test_items)
    # the judge separates right from wrong: escalating its doubts gains quality
    mid = next(s for s in t.settings if s.label == "judge >= 0.5")
    assert mid.test.quality > never.test.quality
    costs = [s.test.cost_usd for s in t.settings]
    assert costs == sorted(costs)
    assert _cost_order(t) == sorted(_cost_order(t))
    for choice in t.choices:
        assert choice.quality_ci95[0] <= choice.quality <= choice.quality_ci95[1]


class _Picky:
    """Scores the cheap model's answers; raises on the strong one's (a scoring bug)."""

    name = "picky"

    async def score(self, item: Any, answer: str) -> Any:
        from moa.eval.types import Score

        if answer.startswith("Strong"):
            raise ValueError("cannot read a strong answer")
        return Score(1.0 if item.target in answer else 0.0)


def test_every_item_left_out_names_why(tmp_path: Path) -> None:
    """When the items left out make a split too small, the line says why they were left out (it
    said only to use more items or another dev_fraction, neither of which helps)."""
    rows = _rows(40)
    answers = answers_of(rows)
    strong = OneWrong(Q, answers)
    models = {
        "cheap-m": SimModel(answer=OneWrong(P, answers)),
        "strong-m": SimModel(answer=lambda r: "Strong: " + strong(r)),
    }
    with SimServer(models) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 0.5, seed: 3}\n")
        run = Experiment.from_file(exp, out=tmp_path / "out", progress=False)
        run.evaluator = _Picky()
        with pytest.raises(UserError) as info:
            run.run()
    line = str(info.value)
    assert "\n" not in line and "0 dev and 0 held-out items are left" in line
    assert "left out 40 item(s)" in line and "ValueError: cannot read a strong answer" in line


# ---- refused before any call ---------------------------------------------------------------------


def _refused(tmp_path: Path, tune: str, n: int = 40) -> str:
    # no server: a call would fail on its closed port, so a refusal is made before any
    exp = _write(tmp_path / "e", "http://127.0.0.1:9", _rows(n))
    (tmp_path / "e" / "judged.yaml").write_text(
        "name: tested\nkind: cascade\nstages:\n  - {agent: mini, accept: tests}\n  - {agent: mini}\n"
        "agents:\n  mini: {model: openai/cheap-m, api_base: 'http://127.0.0.1:9'}\n"
    )
    text = exp.read_text().replace(
        "setups: [cascade.yaml, mixture.yaml]", "setups: [cascade.yaml, mixture.yaml, judged.yaml]"
    )
    exp.write_text(text + f"tune: {tune}\n")
    with pytest.raises(UserError) as info:
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    assert not (tmp_path / "out" / "experiment.sqlite").exists()
    line = str(info.value)
    assert "\n" not in line.strip()
    return line


@pytest.mark.parametrize(
    ("tune", "expected"),
    [
        ("{setup: mixture}", "setup `mixture` is a `self_moa` topology, not a cascade"),
        ("{setup: single}", "setup `single` is the baseline, not a cascade"),
        ("{setup: nope}", "no setup is named `nope`"),
        ("{setup: tested}", "stage 1 has a `tests` accept rule, which has no threshold to sweep"),
        ("{setup: cascade, dev_fraction: 0.1}", "4 dev and 36 held-out items; each split needs at least 10"),
    ],
)
def test_a_bad_tuning_request_is_one_line_before_any_call(tmp_path: Path, tune: str, expected: str) -> None:
    """A setup that is not a tunable cascade, or a split too small, is refused naming the culprit."""
    assert expected in _refused(tmp_path, tune)


def test_dev_fraction_is_within_zero_and_one(tmp_path: Path) -> None:
    """`dev_fraction: 1` is refused when the file is read, naming the field."""
    exp = _write(tmp_path / "e", "http://127.0.0.1:9", _rows(20))
    exp.write_text(exp.read_text() + "tune: {setup: cascade, dev_fraction: 1}\n")
    with pytest.raises(UserError) as info:
        Experiment.from_file(exp, out=tmp_path / "out")
    assert "dev_fraction" in str(info.value)


@pytest.mark.parametrize("name", ["", "bad\x01name"])
def test_a_bad_tune_cascade_name_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """`--tune-cascade` with an empty or unprintable name is one line naming the option (a pydantic
    traceback before), and nothing is run."""
    from moa.cli import main

    exp = _write(tmp_path / "e", "http://127.0.0.1:9", _rows(20))
    code = main(
        ["compare", str(exp), "--out", str(tmp_path / "out"), "--no-progress", "--tune-cascade", name]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"moa: --tune-cascade {name!r}: ") and "\n" not in err
    assert not (tmp_path / "out").exists()


# ---- the recording, with fakes ---------------------------------------------------------------------


def _three_stages() -> Any:
    retry = {"max_attempts": 1}
    price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
    return load_data(
        {
            "name": "c3",
            "kind": "cascade",
            "agents": {
                "mini": {"model": "fake/mini", "temperature": 0.7, "pricing": price, "retry": retry},
                "mid": {"model": "fake/mid", "pricing": price, "retry": retry},
                "rater": {"model": "fake/rater", "pricing": price, "retry": retry},
                "big": {"model": "fake/big", "pricing": price, "retry": retry},
            },
            "stages": [
                {"agent": "mini", "samples": 2, "accept": {"agree": 2, "vote_on": "last_number"}},
                {"agent": "mid", "reuse": True, "accept": {"judge": {"agent": "rater", "threshold": 0.5}}},
                {"agent": "big", "reuse": True},
            ],
        }
    )


async def test_every_stage_is_recorded_with_what_its_rule_measured() -> None:
    """`record_stages` runs all three stages whatever the rules say: stage 1's agreement, stage 2's
    unreadable rating as a rule error (it escalates), stage 3 reading both earlier stages' answers."""
    c = _three_stages()
    big = FunctionModel(lambda r: "big 9")
    models = {
        "fake/mini": FunctionModel(lambda r: "mini 7"),
        "fake/mid": FunctionModel(lambda r: "mid 8"),
        "fake/rater": FunctionModel(lambda r: "not a number"),
        "fake/big": big,
    }
    records = await record_stages(
        c.name, c.stage_list, Runner(models=models), "q", budget=None, deadline_s=None
    )
    one, two, three = records
    assert (one.answer, one.agreeing, one.accepted, one.calls) == ("mini 7", 2, True, 2)
    assert two.answer == "mid 8" and two.confidence is None and not two.accepted
    assert two.error is not None and two.error.startswith("rule: MalformedReply") and two.calls == 2
    assert three.answer == "big 9" and three.calls == 1 and not three.accepted
    assert re.search(r"\[1\] <<\w+>>\nmini 7\n", str(big.calls[0].messages[-1]["content"]))
    assert re.search(r"\[3\] <<\w+>>\nmid 8", str(big.calls[0].messages[-1]["content"]))
    t = trace(records, [0.0, 1.0, 0.5])
    assert t.escalated_quality == 0.5  # stage 2's rule failed: stage 3 answers
    assert math.isclose(t.escalated_cost, one.cost_usd + two.cost_usd + three.cost_usd)
    assert math.isclose(t.mixture_cost, two.cost_usd + three.cost_usd)
    never, always = Setting("agree: 1", 1), Setting("always escalate", math.inf)
    assert outcome(never, t) == (0.0, one.cost_usd, False)
    assert outcome(always, t)[0::2] == (0.5, True)


async def test_a_failed_first_stage_escalates_at_every_setting() -> None:
    """A stage 1 whose model fails is recorded with no answer, and no setting accepts it."""
    c = _three_stages()
    models = {
        "fake/mini": FunctionModel(lambda r: ProviderError("down")),
        "fake/mid": FunctionModel(lambda r: "mid 8"),
        "fake/rater": FunctionModel(lambda r: "0.9"),
        "fake/big": FunctionModel(lambda r: "big 9"),
    }
    records = await record_stages(
        c.name, c.stage_list, Runner(models=models), "q", budget=None, deadline_s=None
    )
    assert records[0].answer is None and records[0].error is not None
    assert records[1].confidence == 0.9 and records[1].accepted
    t = trace(records, [0.0, 1.0, 0.0])
    assert t.measure is None and t.escalated_quality == 1.0  # stage 2 accepted: stage 3 not counted
    assert math.isclose(t.escalated_cost, records[0].cost_usd + records[1].cost_usd)
    assert outcome(Setting("agree: 1", 1), t) == (1.0, t.escalated_cost, True)


async def test_stage_costs_carry_the_worst_case_of_calls_of_unknown_usage() -> None:
    """A stage whose calls were cut off after they were sent (usage unknown, maybe billed) records
    their worst case in ``cost_usd_max``; the trace, every setting, tune.json and the report carry
    that bound beside the known cost."""
    c = _three_stages()
    models = {
        "fake/mini": FunctionModel(lambda r: ProviderError("connection reset")),
        "fake/mid": FunctionModel(lambda r: "mid 8"),
        "fake/rater": FunctionModel(lambda r: "0.9"),
        "fake/big": FunctionModel(lambda r: "big 9"),
    }
    records = await record_stages(
        c.name, c.stage_list, Runner(models=models), "q", budget=None, deadline_s=None
    )
    one, two, _ = records
    assert one.cost_usd == 0 and one.cost_usd_max > 0
    assert two.cost_usd_max == pytest.approx(two.cost_usd) and two.cost_usd > 0
    t = trace(records, [0.0, 1.0, 0.0])
    assert t.first_cost_max == one.cost_usd_max and t.mixture_cost_max == pytest.approx(two.cost_usd_max)
    assert t.escalated_cost_max == pytest.approx(one.cost_usd_max + two.cost_usd_max)
    never, always = Setting("agree: 1", 1), Setting("always escalate", math.inf)
    assert outcome_cost_max(always, t) == t.escalated_cost_max
    header = {"setup": "c3", "setup_hash": "h", "baseline": "b", "stage": "s", "dev_fraction": 0.5, "seed": 1}
    result = analyse(
        settings=[never, always], current=never, dev=[(t, 0.0)], test=[(t, 0.0)], rounds=20, header=header
    )
    row = result.settings[1]
    assert row.test.cost_usd == pytest.approx(t.escalated_cost)
    assert row.test.cost_usd_max == pytest.approx(t.escalated_cost_max)
    assert (
        result.choices[0].cost_usd_max is not None
        and result.choices[0].cost_usd_max > result.choices[0].cost_usd
    )
    assert TuneResult.model_validate_json(result.model_dump_json()) == result
    assert f"(up to ${t.escalated_cost_max:.6f})" in "\n".join(tune_markdown(result))


def test_a_written_threshold_near_a_grid_point_keeps_its_own_row() -> None:
    """A judge threshold written as 0.1 * 3 (0.30000000000000004) was labelled `judge >= 0.3`, like
    the grid's 0.3: two rows of one name, and the dev numbers of one were the other's."""
    price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
    c = load_data(
        {
            "name": "c",
            "kind": "cascade",
            "agents": {a: {"model": f"fake/{a}", "pricing": price} for a in ("mini", "rater", "big")},
            "stages": [
                {"agent": "mini", "accept": {"judge": {"agent": "rater", "threshold": 0.1 * 3}}},
                {"agent": "big"},
            ],
        }
    )
    settings = settings_for(c.name, c.stage_list)
    labels = [s.label for s in settings]
    assert len(set(labels)) == len(labels) and "judge >= 0.30000000000000004" in labels
    # a rating of exactly 0.3 holds at the grid's 0.3 and not at the written threshold
    records = [StageRecord(1, "a", 0.1, 1, 0.1, confidence=0.3), StageRecord(2, "b", 1.0, 1, 1.0)]
    t = trace(records, [0.0, 1.0])
    header = {"setup": "c", "setup_hash": "h", "baseline": "b", "stage": "s", "dev_fraction": 0.5, "seed": 1}
    written = current_setting(c.name, c.stage_list)
    result = analyse(
        settings=settings, current=written, dev=[(t, 0.0)], test=[(t, 0.0)], rounds=100, header=header
    )
    rows = {r.label: r for r in result.settings}
    assert rows["judge >= 0.3"].dev.escalation_rate == 0 and rows["judge >= 0.3"].test.escalation_rate == 0
    assert rows[written.label].dev.escalation_rate == 1 and rows[written.label].current


def _small_result() -> TuneResult:
    t = trace([StageRecord(1, "a", 0.1, 1, 0.1, agreeing=1), StageRecord(2, "b", 1.0, 1, 1.0)], [0.0, 1.0])
    never, always = Setting("agree: 1", 1), Setting("always escalate", math.inf)
    header = {"setup": "c", "setup_hash": "h", "baseline": "b", "stage": "s", "dev_fraction": 0.5, "seed": 1}
    return analyse(
        settings=[never, always], current=never, dev=[(t, 0.0)], test=[(t, 0.0)], rounds=100, header=header
    )


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(single_quality={}),
        lambda d: d.update(mixture_quality={"dev": 0.5}),
        lambda d: d["choices"][0].update(quality_ci95=[0.5]),
        lambda d: d["choices"][0].update(delta_vs_mixture_ci95=[]),
        lambda d: d["choices"][0].update(cost_saving_ci95=[0.1, 0.2, 0.3]),
    ],
)
def test_a_damaged_tune_json_is_left_out_of_the_report(tmp_path: Path, damage: Any) -> None:
    """A tune.json that reads as JSON but lacks a split or an interval's bound is not the report's to
    show: `moa report` raised KeyError or IndexError on it instead of leaving it out."""
    data = json.loads(_small_result().model_dump_json())
    damage(data)
    (tmp_path / "tune.json").write_text(json.dumps(data))
    manifest = {"setups": [{"name": "c", "hash": "h"}]}
    assert read_tune(tmp_path, manifest) is None
    (tmp_path / "tune.json").write_text(_small_result().model_dump_json())
    intact = read_tune(tmp_path, manifest)
    assert intact is not None and "## Cascade tuning" in tune_markdown(intact)


def test_a_note_naming_a_hostile_item_id_stays_one_bullet(tmp_path: Path) -> None:
    """An item id with a line break, named in a note, started a `## Cascade tuning` heading of its
    own: the next rewrite of the report cut the section there and kept its tail twice over."""
    hostile = "q1\n## Cascade tuning\nstale tail"
    note = f"left out 1 item(s) with no scored baseline run; first: `{hostile}`"
    result = _small_result().model_copy(update={"notes": [note]})
    lines = tune_markdown(result)
    assert not any("\n" in line for line in lines)
    report = tmp_path / "report.md"
    report.write_text("# exp\n\nthe comparison\n")
    add_tune_section(report, result)
    add_tune_section(report, result)
    text = report.read_text()
    assert text.startswith("# exp\n\nthe comparison\n") and text.count("stale tail") == 1
    assert sum(line == "## Cascade tuning" for line in text.splitlines()) == 1


def test_the_dev_split_does_not_depend_on_row_order_and_survives_an_added_item() -> None:
    """A shuffle of the rows' list re-dealt every item when the dataset was reordered or grew, so
    a setting chosen on dev was judged on other held-out items than the run before."""
    ids = [f"q{i}" for i in range(200)]
    dev, test = split_items(ids, 0.3, 7)
    assert len(dev) == 60 and len(test) == 140 and set(dev) | set(test) == set(ids)
    shuffled = list(reversed(ids))
    random.Random(1).shuffle(shuffled)
    assert split_items(shuffled, 0.3, 7) == (dev, test)
    dev2, test2 = split_items([*ids, "q-new"], 0.3, 7)
    moved = (set(dev) - set(dev2)) | (set(test) - set(test2))
    assert len(moved) <= 1
    assert split_items(ids, 0.3, 8)[0] != dev  # the seed still deals another split


def test_a_tuning_stopped_by_the_budget_still_prints_the_comparisons_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The comparison is stored and paid when the tuning's first new call meets the budget: its
    table is printed before the budget's error, which used to come alone."""
    rows = _rows(N)
    answers = answers_of(rows)
    models = cheap_and_strong(answers)
    with SimServer(models) as srv:
        exp = _write(tmp_path / "e", srv.base_url, rows)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        spent = _paid(tmp_path / "out")
        # the comparison is resumed from the store (nothing new to pay); the tuning must send calls
        exp.write_text(
            exp.read_text()
            + f"budget_usd: {spent * 1.000001}\ntune: {{setup: cascade, dev_fraction: 0.3, seed: 3}}\n"
        )
        capsys.readouterr()
        with pytest.raises(UserError, match=r"tune: stopped at the budget"):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False, echo=True).run()
    printed = capsys.readouterr().out
    assert "quality Δ [95% CI]" in printed and "cascade" in printed
