"""`moa compare --dry-run`: what the runs to do would cost, as bounds from the items' real prompts.

The hand counts below follow ``moa.experiment.estimate``: a prompt's bound is its UTF-8 bytes plus 8
a message plus 8, plus every answer it reads at that answer's ``max_tokens``, and its most what the
budget holds for it, twice that bound plus 1024 (``C`` below); its least its characters / 4, rounded
up, with every answer empty. The most adds every answer at its ``max_tokens``; the least adds nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from moa.cascade.confidence import confidence_prompt
from moa.cascade.execute import with_earlier
from moa.errors import UserError
from moa.eval.judge import format_conversation_prompt, format_judge_prompt
from moa.experiment import Experiment, Plan
from moa.testing.sim import FaultPlan, SimModel, SimServer

REPO = Path(__file__).resolve().parents[2]
LOOP = "http://127.0.0.1:9"  # no server: a dry run sends nothing
ROWS = [{"id": "a", "input": "abcd", "target": "x"}, {"id": "b", "input": "abcdefgh", "target": "x"}]


def _agent(
    model: str,
    *,
    pricing: tuple[float, float] | None = (1.0, 2.0),
    max_tokens: int | None = 100,
    base: str = LOOP,
    temperature: float | None = None,
    attempts: int = 1,
    fallbacks: Sequence[str] = (),
) -> str:
    price = (
        ""
        if pricing is None
        else f", pricing: {{input_per_mtok: {pricing[0]}, output_per_mtok: {pricing[1]}}}"
    )
    cap = "" if max_tokens is None else f", max_tokens: {max_tokens}"
    cap += "" if temperature is None else f", temperature: {temperature}"
    cap += f", fallbacks: [{', '.join(fallbacks)}]" if fallbacks else ""
    return f"{{model: openai/{model}, api_base: {json.dumps(base)}, retry: {{max_attempts: {attempts}}}{price}{cap}}}"


def _single(folder: Path, name: str, agent: str) -> None:
    (folder / f"{name}.yaml").write_text(f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {agent}\n")


def _experiment(
    folder: Path, setups: list[str], *, rows: Sequence[Mapping[str, object]] = ROWS, extra: str = ""
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    listed = ", ".join(f"{s}.yaml" for s in setups)
    (folder / "exp.yaml").write_text(
        f"name: cost\ndataset: data.jsonl\nevaluator: contains\nbaseline: single.yaml\nsetups: [{listed}]\n{extra}"
    )
    return folder / "exp.yaml"


def C(bound: int) -> int:
    """The prompt tokens a budget holds for a prompt of at most ``bound``: twice it, plus 1024."""
    return 2 * bound + 1024


def _plan(exp: Path, out: Path) -> Plan:
    return Experiment.from_file(exp, out=out, progress=False).plan()


def _two_layers(folder: Path) -> None:
    """Two proposers (50 tokens each, $1/$2 per Mtok) and an aggregator reading both (10 tokens,
    $3/$6) through ``R:{references}Q:{prompt}``."""
    (folder / "layers.yaml").write_text(
        "name: layers\nagents:\n"
        f"  p: {_agent('p-m', max_tokens=50)}\n"
        f"  agg: {_agent('agg-m', pricing=(3.0, 6.0), max_tokens=10)}\n"
        "nodes:\n  - {id: p1, agent: p}\n  - {id: p2, agent: p}\n"
        "  - {id: final, agent: agg, inputs: [p1, p2], prompt: 'R:{references}Q:{prompt}'}\n"
        "output: final\n"
    )


def test_each_setup_is_priced_from_every_item_s_prompt(tmp_path: Path) -> None:
    """A single call and a two-layer topology over two items: the hand-counted bounds, exactly."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    _two_layers(folder)
    plan = _plan(_experiment(folder, ["layers"]), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    single, layers = plan.setups
    # "abcd": 4 bytes + 8 + 8 = 20 prompt tokens at most, 1 (4 characters / 4) at least; 100 out at
    # $2/Mtok. "abcdefgh": 24 at most, 2 at least
    assert single.estimated_usd_low == pytest.approx((1 + 2) * 1e-6)
    assert single.estimated_usd_high == pytest.approx((C(20) + C(24)) * 1e-6 + 2 * 100 * 2e-6)
    # each proposer as `single` but 50 out. The aggregator's text: "R:" + the two empty reference
    # blocks ("1. [p1] <<tag>>\n\n<<end tag>>", 22 characters + two 16-character tags, joined by
    # "\n\n": 46 + 64 = 110) + "Q:" + the prompt: 114 + 4 ("abcd") = 118 or 122 ("abcdefgh") characters;
    # at most those + 16 tokens + both proposers' 50, at $3/Mtok, and 10 out at $6/Mtok
    proposers_low = 2 * (1 + 2) * 1e-6
    proposers_high = 2 * ((C(20) + C(24)) * 1e-6 + 2 * 50 * 2e-6)
    agg_low = (30 + 31) * 3e-6  # ceil(118 / 4), ceil(122 / 4)
    agg_high = (C(118 + 16 + 100) + C(122 + 16 + 100)) * 3e-6 + 2 * 10 * 6e-6
    assert layers.estimated_usd_low == pytest.approx(proposers_low + agg_low)
    assert layers.estimated_usd_high == pytest.approx(proposers_high + agg_high)
    assert plan.estimated_usd_high == pytest.approx(single.estimated_usd_high + layers.estimated_usd_high)
    assert (plan.estimated_items, plan.items_to_do) == (2, 2)
    lines = plan.lines()
    assert f"  single: $0.000003 to ${single.estimated_usd_high:.6f}" in lines
    assert any(
        line.startswith("estimated cost of the runs to do (from the prompts of all 2 items to do")
        for line in lines
    )


def test_an_unpriced_model_is_named_and_counted_zero(tmp_path: Path) -> None:
    """A model no price map lists and no `pricing:` prices costs $0 in the estimate, and is named."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    _single(folder, "mystery", _agent("no-such-model-anywhere", pricing=None))
    plan = _plan(_experiment(folder, ["mystery"]), tmp_path / "out")
    mystery = plan.setups[1]
    assert (mystery.estimated_usd_low, mystery.estimated_usd_high) == (0.0, 0.0)
    assert mystery.unpriced_models == ("openai/no-such-model-anywhere",)
    assert (
        "  unpriced, counted $0 (set the agent's `pricing:`): openai/no-such-model-anywhere" in plan.lines()
    )


def test_an_agent_without_max_tokens_has_no_upper_bound_unless_a_budget_caps_it(tmp_path: Path) -> None:
    """No max_tokens and no budget: "no upper bound", naming the model. Under a budget moa sends
    4096 for it, so that is its most."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    _single(folder, "open", _agent("open-m", max_tokens=None))
    exp = _experiment(folder, ["open"])
    plan = _plan(exp, tmp_path / "out")
    open_ = plan.setups[1]
    assert open_.estimated_usd_high is None and plan.estimated_usd_high is None
    assert open_.no_max_tokens == ("openai/open-m",)
    assert open_.estimated_usd_low == pytest.approx(3e-6)
    assert "  open: $0.000003 to no upper bound (no max_tokens: openai/open-m)" in plan.lines()
    budgeted = _plan(_experiment(folder, ["open"], extra="budget_usd: 5\n"), tmp_path / "out")
    assert budgeted.setups[1].estimated_usd_high == pytest.approx((C(20) + C(24)) * 1e-6 + 2 * 4096 * 2e-6)


def test_a_judge_s_calls_are_priced_with_the_answers_it_reads(tmp_path: Path) -> None:
    """Two verdicts per judged run; each judge prompt holds the setup's and the baseline's answers,
    at most their max_tokens (10 and 100)."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    _single(folder, "short", _agent("short-m", max_tokens=10))
    _single(folder, "judge", _agent("judge-m", pricing=(1.0, 1.0), max_tokens=5))
    exp = _experiment(folder, ["short"], extra="")
    exp.write_text(
        exp.read_text().replace("evaluator: contains", "evaluator: {name: judge, topology: judge.yaml}")
    )
    plan = _plan(exp, tmp_path / "out")
    texts = [format_judge_prompt(r["input"], "", "") for r in ROWS]
    low = sum(-(-len(t) // 4) for t in texts) * 1e-6
    high = sum(C(len(t.encode()) + 16 + 10 + 100) + 5 for t in texts) * 1e-6
    assert plan.judge_estimated_usd_low == pytest.approx(2 * low)
    assert plan.judge_estimated_usd_high == pytest.approx(2 * high)
    assert f"  judge: ${2 * low:.6f} to ${2 * high:.6f}" in plan.lines()
    assert plan.estimated_usd_high == pytest.approx(
        sum(s.estimated_usd_high or 0.0 for s in plan.setups) + 2 * high
    )


def test_a_budget_the_estimate_may_pass_is_warned_of(tmp_path: Path) -> None:
    """One line when the most passes the budget; a firmer one when even the least does."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    _two_layers(folder)
    tight = _plan(_experiment(folder, ["layers"], extra="budget_usd: 0.001\n"), tmp_path / "out").lines()
    assert any(
        line.startswith("warning: the estimate's most, $")
        and "the $0.001000 the budget leaves: the run may stop" in line
        for line in tight
    )
    broke = _plan(_experiment(folder, ["layers"], extra="budget_usd: 0.000001\n"), tmp_path / "out").lines()
    assert any(
        line.startswith("warning: even the least estimate, $") and "the run will stop" in line
        for line in broke
    )
    roomy = _plan(_experiment(folder, ["layers"], extra="budget_usd: 5\n"), tmp_path / "out").lines()
    assert not any(line.startswith("warning:") for line in roomy)


def test_a_resume_prices_only_the_runs_left_against_the_budget_left(tmp_path: Path) -> None:
    """After a run of item `a`, the estimate is item `b`'s alone, and the budget left is what the
    store's spending leaves."""
    folder = tmp_path / "e"
    folder.mkdir()
    with SimServer({"single-m": SimModel(answer="x"), "short-m": SimModel(answer="x")}) as srv:
        _single(folder, "single", _agent("single-m", base=srv.base_url))
        _single(folder, "short", _agent("short-m", max_tokens=10, base=srv.base_url))
        exp = _experiment(folder, ["short"], extra="budget_usd: 1\n")
        Experiment.from_file(exp, out=tmp_path / "out", progress=False, limit=1).run()
    exp.write_text(exp.read_text().replace("budget_usd: 1", "budget_usd: 0.0002"))
    plan = _plan(exp, tmp_path / "out")
    single, short = plan.setups
    assert (single.to_run, short.to_run) == (1, 1)
    # item `b` only: 24 prompt tokens at most, 2 at least
    assert single.estimated_usd_high == pytest.approx(C(24) * 1e-6 + 100 * 2e-6)
    assert short.estimated_usd_high == pytest.approx(C(24) * 1e-6 + 10 * 2e-6)
    assert short.estimated_usd_low == pytest.approx(2e-6)
    assert plan.spent_usd > 0
    left = plan.budget_left_usd
    assert left is not None and left == pytest.approx(0.0002 - max(plan.spent_usd, plan.spent_usd_max or 0.0))
    assert any(
        line.startswith("  total: ") and line.endswith(f"(budget left ${left:.6f})") for line in plan.lines()
    )
    # the most, $0.002364 (2 * 24 + 1024 = 1072 prompt tokens a setup), passes what is left of $0.0002
    assert any(line.startswith("warning: the estimate's most, $0.002364,") for line in plan.lines())


def test_a_cascade_s_least_is_its_first_stage_and_its_most_every_stage_and_rater(tmp_path: Path) -> None:
    """Stage 1 (two samples of mini-m, 20 tokens) rated by rater-m (5 tokens, reading the question
    and the stage's answer), then `single` reusing the two samples appended to the prompt."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    (folder / "cascade.yaml").write_text(
        "name: cascade\nkind: cascade\nagents:\n"
        f"  mini: {_agent('mini-m', max_tokens=20, temperature=0.7)}\n  rater: {_agent('rater-m', pricing=(1.0, 1.0), max_tokens=5)}\n"
        "stages:\n  - {agent: mini, samples: 2, accept: {judge: {agent: rater, threshold: 0.8}}}\n"
        "  - {topology: single.yaml, reuse: true}\n"
    )
    plan = _plan(_experiment(folder, ["cascade"], rows=ROWS[:1]), tmp_path / "out")
    cascade = plan.setups[1]
    # each sample: "abcd", 20 prompt tokens at most and 1 at least, 20 out at $2/Mtok
    samples_low, samples_high = 2 * 1e-6, 2 * (C(20) * 1e-6 + 20 * 2e-6)
    rated = confidence_prompt("abcd", "")  # the rater's text, the answer (at most 20) left out
    rater_high = C(len(rated.encode()) + 16 + 20) * 1e-6 + 5 * 1e-6
    reused = str(with_earlier("abcd", ["", ""]))  # the last stage's, both samples (20 each) left out
    last_high = C(len(reused.encode()) + 16 + 40) * 1e-6 + 100 * 2e-6
    assert cascade.estimated_usd_low == pytest.approx(samples_low)
    assert cascade.estimated_usd_high == pytest.approx(samples_high + rater_high + last_high)


def test_a_conversation_is_priced_turn_by_turn_with_its_earlier_answers(tmp_path: Path) -> None:
    """An MT-Bench item of two turns: turn 2 reads turn 1's question and answer (at most 100), and
    the judge compares the two conversations up to each turn, both orders."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    _single(folder, "short", _agent("short-m", max_tokens=10))
    _single(folder, "judge", _agent("judge-m", pricing=(1.0, 1.0), max_tokens=5))
    rows = [{"question_id": "m", "category": "writing", "turns": ["ab", "cdef"]}]
    exp = _experiment(folder, ["short"], rows=rows)
    exp.write_text(
        exp.read_text().replace("evaluator: contains", "evaluator: {name: judge, topology: judge.yaml}")
    )
    plan = _plan(exp, tmp_path / "out")
    single, short = plan.setups
    # turn 1: "ab", 2 + 8 + 8 = 18 at most, 1 at least; turn 2: "ab", "" and "cdef" as three
    # messages, 6 + 24 + 8 = 38 and the first answer's 100 at most, 2 (6 characters) at least
    assert single.estimated_usd_low == pytest.approx((1 + 2) * 1e-6)
    assert single.estimated_usd_high == pytest.approx((C(18) + C(38 + 100)) * 1e-6 + 2 * 100 * 2e-6)
    assert short.estimated_usd_high == pytest.approx((C(18) + C(38 + 10)) * 1e-6 + 2 * 10 * 2e-6)
    texts = [format_conversation_prompt(["ab", "cdef"][:k], [""] * k, [""] * k) for k in (1, 2)]
    judge_high = sum((C(len(t.encode()) + 16 + k * (10 + 100)) + 5) * 1e-6 for k, t in enumerate(texts, 1))
    assert plan.judge_estimated_usd_high == pytest.approx(2 * judge_high)


def test_a_huge_dataset_is_estimated_from_an_even_sample_and_says_so(tmp_path: Path) -> None:
    """1,200 items to do: 1,000 evenly spaced ones are read and the sum scaled to all 1,200."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    _single(folder, "short", _agent("short-m", max_tokens=10))
    rows = [{"id": f"q{k}", "input": f"q{k:04d}", "target": "x"} for k in range(1200)]
    plan = _plan(_experiment(folder, ["short"], rows=rows), tmp_path / "out")
    # every prompt 5 characters: 21 tokens at most, 2 at least
    assert plan.setups[0].estimated_usd_high == pytest.approx(1200 * (C(21) * 1e-6 + 100 * 2e-6))
    assert plan.setups[0].estimated_usd_low == pytest.approx(1200 * 2e-6)
    assert (plan.estimated_items, plan.items_to_do) == (1000, 1200)
    assert any(
        "from the prompts of 1000 evenly spaced of the 1200 items to do, scaled" in line
        for line in plan.lines()
    )


def test_a_mapped_model_is_priced_as_its_record_is_at_the_dearest_tier_that_may_serve(tmp_path: Path) -> None:
    """gpt-4o-mini from litellm's offline map ($0.15/$0.60 per Mtok): asking no service tier, the
    project's default may serve priority ($0.25/$1.00), which the most counts, as a budget holds
    it; the least is at the standard rates."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    _single(folder, "mini", _agent("gpt-4o-mini", pricing=None))
    plan = _plan(_experiment(folder, ["mini"]), tmp_path / "out")
    mini = plan.setups[1]
    assert mini.unpriced_models == ()
    assert mini.estimated_usd_low == pytest.approx((1 + 2) * 0.15e-6)
    assert mini.estimated_usd_high == pytest.approx((C(20) + C(24)) * 0.25e-6 + 2 * 100 * 1.0e-6)


def test_the_stored_answers_a_judge_has_still_to_judge_are_priced_from_their_text(tmp_path: Path) -> None:
    """Every run stored, the judge down last time: nothing is left to run, and the judge's calls on
    the two stored answers are priced from the prompts it will be sent, the stored answers in them
    (they were priced as the items' mean, each answer at its max_tokens, 10 and 100)."""
    folder = tmp_path / "e"
    folder.mkdir()
    mine, theirs = "my answer is forty-two, after a long derivation", "no"
    models = {
        "single-m": SimModel(answer=theirs),
        "short-m": SimModel(answer=mine),
        "judge-m": SimModel(answer="[[A=B]]"),
    }
    with SimServer(models, faults=FaultPlan(rate=1.0, kinds=("500",), models=["judge-m"])) as srv:
        _single(folder, "single", _agent("single-m", base=srv.base_url))
        _single(folder, "short", _agent("short-m", max_tokens=10, base=srv.base_url))
        _single(folder, "judge", _agent("judge-m", pricing=(1.0, 1.0), max_tokens=5, base=srv.base_url))
        exp = _experiment(folder, ["short"])
        exp.write_text(
            exp.read_text().replace("evaluator: contains", "evaluator: {name: judge, topology: judge.yaml}")
        )
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    plan = _plan(exp, tmp_path / "out")
    assert [s.to_run for s in plan.setups] == [0, 0] and plan.estimated_items == 0
    # both orders' prompts hold the same text: each verdict priced twice
    texts = [format_judge_prompt(r["input"], mine, theirs) for r in ROWS]
    low = sum(-(-len(t) // 4) for t in texts) * 1e-6
    high = sum(C(len(t.encode()) + 16) + 5 for t in texts) * 1e-6
    assert plan.judge_estimated_usd_low == pytest.approx(2 * low)
    assert plan.judge_estimated_usd_high == pytest.approx(2 * high)
    assert "estimated cost of the runs to do (no item left to do):" in plan.lines()


def test_a_judge_comparing_answers_without_max_tokens_has_no_upper_bound_and_says_why(tmp_path: Path) -> None:
    """The judge's own agent sets max_tokens, but the baseline's answers it reads have none."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m", max_tokens=None))
    _single(folder, "short", _agent("short-m", max_tokens=10))
    _single(folder, "judge", _agent("judge-m", pricing=(1.0, 1.0), max_tokens=5))
    exp = _experiment(folder, ["short"])
    exp.write_text(
        exp.read_text().replace("evaluator: contains", "evaluator: {name: judge, topology: judge.yaml}")
    )
    plan = _plan(exp, tmp_path / "out")
    assert plan.judge_estimated_usd_high is None and plan.judge_no_max_tokens == ()
    assert any(
        line.startswith("  judge: $")
        and line.endswith("to no upper bound (it reads answers without max_tokens)")
        for line in plan.lines()
    )


def test_a_dearer_fallback_is_the_most_and_every_attempt_the_retried_figure(tmp_path: Path) -> None:
    """single-m ($0.1/$0.2 per Mtok) falls back to gpt-4o-mini (the map's, its dearest tier $0.25/
    $1.00): the most is each call once at the fallback's hold; with 2 attempts a model, every
    attempt billed is 2 x (both holds). The most left the fallback out (priced single-m's alone)."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    cheap = _agent("cheap-m", pricing=(0.1, 0.2), attempts=2, fallbacks=["openai/gpt-4o-mini"])
    _single(folder, "chain", cheap)
    plan = _plan(_experiment(folder, ["chain"]), tmp_path / "out")
    chain = plan.setups[1]
    own = (C(20) + C(24)) * 0.1e-6 + 2 * 100 * 0.2e-6
    fallback = (C(20) + C(24)) * 0.25e-6 + 2 * 100 * 1.0e-6
    assert chain.estimated_usd_high == pytest.approx(fallback)
    assert chain.estimated_usd_retried == pytest.approx(2 * (own + fallback))
    assert chain.estimated_usd_low == pytest.approx((1 + 2) * 0.1e-6)  # its own model, which answers first
    single = (C(20) + C(24)) * 1e-6 + 2 * 100 * 2e-6  # one attempt, no fallback: the most
    assert plan.estimated_usd_retried == pytest.approx(single + 2 * (own + fallback))
    retried = f"  up to ${single + 2 * (own + fallback):.6f} if every attempt fails after it was sent"
    assert any(line.startswith(retried) for line in plan.lines())


def test_an_unpriced_fallback_is_named(tmp_path: Path) -> None:
    """A fallback nothing prices (the agent's `pricing:` is its own model's) is named, counted $0."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    _single(folder, "chain", _agent("single-m", fallbacks=["openai/no-such-model-anywhere"]))
    plan = _plan(_experiment(folder, ["chain"]), tmp_path / "out")
    assert plan.setups[1].unpriced_models == ("openai/no-such-model-anywhere",)
    assert plan.setups[1].estimated_usd_high == pytest.approx((C(20) + C(24)) * 1e-6 + 2 * 100 * 2e-6)


def test_a_budget_below_the_most_is_warned_of_because_the_run_needs_room_for_the_hold(tmp_path: Path) -> None:
    """Under a budget of $0.0003, one call of item `a` holds 2 x 20 + 1024 prompt tokens and 100 out
    ($0.001264): the run stops at the budget, and the dry run warns of it. The old most, the prompt's
    byte bound (20 tokens, $0.00022), fitted and warned of nothing."""
    folder = tmp_path / "e"
    folder.mkdir()
    with SimServer({"single-m": SimModel(answer="x"), "short-m": SimModel(answer="x")}) as srv:
        _single(folder, "single", _agent("single-m", base=srv.base_url))
        _single(folder, "short", _agent("short-m", max_tokens=1, base=srv.base_url))
        exp = _experiment(folder, ["short"], rows=ROWS[:1], extra="budget_usd: 0.0003\n")
        plan = _plan(exp, tmp_path / "out")
        assert plan.setups[0].estimated_usd_high == pytest.approx(C(20) * 1e-6 + 100 * 2e-6)
        assert any(line.startswith("warning: the estimate's most, $") for line in plan.lines())
        with pytest.raises(UserError, match=r"stopped at the budget of \$0\.0003: .* worst case \$0\.001264"):
            Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()


def test_a_stored_conversation_awaiting_the_judge_is_priced_turn_by_turn_from_its_text(
    tmp_path: Path,
) -> None:
    """An MT-Bench item of two turns, both setups' answers stored, the judge down: turn k's verdicts
    read both conversations up to turn k, their stored answers in them, both orders."""
    folder = tmp_path / "e"
    folder.mkdir()
    mine, theirs = "a stored answer of some length", "short"
    models = {
        "single-m": SimModel(answer=theirs),
        "short-m": SimModel(answer=mine),
        "judge-m": SimModel(answer="[[A=B]]"),
    }
    rows = [{"question_id": "m", "category": "writing", "turns": ["ab", "cdef"]}]
    with SimServer(models, faults=FaultPlan(rate=1.0, kinds=("500",), models=["judge-m"])) as srv:
        _single(folder, "single", _agent("single-m", base=srv.base_url))
        _single(folder, "short", _agent("short-m", max_tokens=10, base=srv.base_url))
        _single(folder, "judge", _agent("judge-m", pricing=(1.0, 1.0), max_tokens=5, base=srv.base_url))
        exp = _experiment(folder, ["short"], rows=rows)
        exp.write_text(
            exp.read_text().replace("evaluator: contains", "evaluator: {name: judge, topology: judge.yaml}")
        )
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    plan = _plan(exp, tmp_path / "out")
    texts = [format_conversation_prompt(["ab", "cdef"][:k], [mine] * k, [theirs] * k) for k in (1, 2)]
    assert plan.judge_estimated_usd_high == pytest.approx(
        2 * sum((C(len(t.encode()) + 16) + 5) * 1e-6 for t in texts)
    )
    assert plan.judge_estimated_usd_low == pytest.approx(2 * sum(-(-len(t) // 4) * 1e-6 for t in texts))


def test_a_judge_shown_execution_results_counts_them_at_their_cap(tmp_path: Path) -> None:
    """`show_execution: true` on an item with tests: each verdict's prompt also holds the two
    results' blocks ("\n[Execution result]\n" and "\n" around each), each result at most 2,000
    bytes; the least counts them empty. They were left out of the most."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    _single(folder, "short", _agent("short-m", max_tokens=10))
    _single(folder, "judge", _agent("judge-m", pricing=(1.0, 1.0), max_tokens=5))
    rows = [{"id": "a", "input": "abcd", "target": "x", "tests": ["assert True"]}]
    exp = _experiment(folder, ["short"], rows=rows)
    exp.write_text(
        exp.read_text().replace(
            "evaluator: contains", "evaluator: {name: judge, topology: judge.yaml, show_execution: true}"
        )
    )
    plan = _plan(exp, tmp_path / "out")
    text = format_judge_prompt("abcd", "", "")
    shown = 2 * (len("\n[Execution result]\n\n") + 2000)
    assert plan.judge_estimated_usd_high == pytest.approx(
        2 * (C(len(text.encode()) + 16 + 110 + shown) + 5) * 1e-6
    )
    assert plan.judge_estimated_usd_low == pytest.approx(2 * -(-len(text) // 4) * 1e-6)
    assert any(
        line.startswith("  judge: $")
        and line.endswith("the execution results it is shown at up to 2000 bytes each")
        for line in plan.lines()
    )


def test_a_run_whose_every_attempt_is_billed_books_the_retried_figure_exactly(tmp_path: Path) -> None:
    """Every reply of cheap-m and of its fallback gpt-4o-mini unreadable (sent, so of unknown
    usage: each attempt booked at its hold), 2 attempts a model: what the run books at most is the
    dry run's figure with every attempt retried, to the cent's millionth."""
    folder = tmp_path / "e"
    folder.mkdir()
    models = {
        "single-m": SimModel(answer="x"),
        "cheap-m": SimModel(answer="x"),
        "gpt-4o-mini": SimModel(answer="x"),
    }
    broken = FaultPlan(rate=1.0, kinds=("malformed_json",), models=["cheap-m", "gpt-4o-mini"])
    with SimServer(models, faults=broken) as srv:
        _single(folder, "single", _agent("single-m", base=srv.base_url))
        chain = _agent(
            "cheap-m", pricing=(0.1, 0.2), attempts=2, fallbacks=["openai/gpt-4o-mini"], base=srv.base_url
        )
        _single(folder, "chain", chain)
        exp = _experiment(folder, ["chain"])
        before = _plan(exp, tmp_path / "out").setups[1]
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    booked = summary.setup("chain")
    assert booked.errors == 2 and booked.cost_usd == 0.0
    assert before.estimated_usd_retried == pytest.approx(booked.cost_usd_max, rel=1e-9)
    own = (C(20) + C(24)) * 0.1e-6 + 2 * 100 * 0.2e-6
    fallback = (C(20) + C(24)) * 0.25e-6 + 2 * 100 * 1.0e-6
    assert booked.cost_usd_max == pytest.approx(2 * (own + fallback))


def test_a_system_prompt_and_n_answers_are_in_the_most(tmp_path: Path) -> None:
    """An agent with a system prompt ("be brief", its own message) asking for n: 3 answers: each
    call's bound holds both messages, and all three answers are billed at max_tokens."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    agent = _agent("multi-m", temperature=0.7)[:-1] + ", system: be brief, params: {n: 3}}"
    _single(folder, "multi", agent)
    plan = _plan(_experiment(folder, ["multi"]), tmp_path / "out")
    # "be brief" (8 bytes) + 8, "abcd" (4) + 8 or "abcdefgh" (8) + 8, and 8: 36 or 40
    assert plan.setups[1].estimated_usd_high == pytest.approx((C(36) + C(40)) * 1e-6 + 2 * 3 * 100 * 2e-6)
    # the least: "be brief" and the prompt, 12 or 16 characters, 3 or 4 tokens
    assert plan.setups[1].estimated_usd_low == pytest.approx((3 + 4) * 1e-6)


def test_a_budget_only_retries_may_pass_gets_a_note_not_a_warning(tmp_path: Path) -> None:
    """Each setup's most is $0.002536 (two prompts held at 1064 and 1072 tokens, two answers of
    100): $0.005072 in all fits $0.008; with 3 attempts for `retry`, $0.002536 + 3 x $0.002536 =
    $0.010144 does not, which a note says."""
    folder = tmp_path / "e"
    folder.mkdir()
    _single(folder, "single", _agent("single-m"))
    _single(folder, "retry", _agent("retry-m", attempts=3))
    plan = _plan(_experiment(folder, ["retry"], extra="budget_usd: 0.008\n"), tmp_path / "out")
    assert plan.estimated_usd_high == pytest.approx(0.005072)
    assert plan.estimated_usd_retried == pytest.approx(0.010144)
    lines = plan.lines()
    assert not any(line.startswith("warning:") for line in lines)
    assert (
        "note: with every attempt retried, $0.010144, the estimate passes the $0.008000 the budget"
        " leaves: failures a provider bills may stop the run at the budget"
    ) in lines
