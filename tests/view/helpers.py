"""Experiments for the viewer's tests, made quickly and offline: three small ones run for real against
the loopback simulated model server (a judged one with a proposer/aggregator topology, hostile text
and a failed run; a code one under the execution evaluator; a multi-turn one), and a big one of any
size written straight through the store's methods (fake runs, no model)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moa.errors import ProviderError
from moa.experiment import Experiment, Store
from moa.experiment.store.calls import INSERT_CALL, call_rows
from moa.experiment.store.database import input_hash
from moa.results import Attempt, CallRecord, RunResult, Usage
from moa.testing.sim import SimModel, SimRequest, SimServer, last_user_text

PRICE = "pricing: {input_per_mtok: 1.0, output_per_mtok: 2.0}"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 1">'
#: an item id that is a path, a query and a fragment in a URL, and markup in a page
HOSTILE_ID = "hostile/<b>?x=1&y=2#top"
N_JUDGED = 14


def judged_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "id": f"q{i}",
            "input": f"What is {i} plus {i}?",
            "target": f"n{2 * i}",
            "category": "math" if i % 2 else "geometry",
        }
        for i in range(N_JUDGED - 1)
    ]
    # model output and dataset text are hostile: both must show as text
    rows.append({"id": HOSTILE_ID, "input": f"Repeat this: {HOSTILE}", "target": "n0", "category": "math"})
    return rows


def _target(text: str) -> str:
    m = re.search(r"What is (\d+) plus", text)
    return f"n{2 * int(m.group(1))}" if m else "n0"


def _draw(seed: str, text: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}|{text}".encode()).digest()[:8], "big") / 2**64


def _right(p: float, seed: str) -> Any:
    def answer(req: SimRequest) -> str:
        text = last_user_text(req.messages)
        if "Repeat this" in text:
            return f"Sure: {HOSTILE}"
        return f"The answer is {_target(text)}." if _draw(seed, text) < p else "The answer is wrong."

    return answer


def _aggregate(req: SimRequest) -> str:
    """Takes the answer most proposers gave (the aggregator's prompt numbers their replies)."""
    text = last_user_text(req.messages)
    found = re.findall(r"The answer is (n\d+)", text)
    if "Repeat this" in text:
        return f"Aggregated: {HOSTILE}"
    return f"The answer is {found[0]}." if found else "The answer is wrong."


def _judge(req: SimRequest) -> str:
    prompt = last_user_text(req.messages)
    question = prompt.split("[Question]\n", 1)[1].split("\n", 1)[0]
    a = prompt.split("[Answer A]\n", 1)[1].split("[Answer B]\n", 1)[0]
    b = prompt.split("[Answer B]\n", 1)[1].split("First explain", 1)[0]
    token = _target(question)
    ok_a, ok_b = token in a, token in b
    verdict = "A>B" if ok_a and not ok_b else "B>A" if ok_b and not ok_a else "A=B"
    return f"Answer A is {'right' if ok_a else 'wrong'}, answer B is {'right' if ok_b else 'wrong'}.\n[[{verdict}]]"


def judged_models() -> dict[str, SimModel]:
    return {
        "single-m": SimModel(answer=_right(0.5, "single")),
        "w1-m": SimModel(answer=_right(0.7, "w1")),
        "w2-m": SimModel(answer=_right(0.7, "w2")),
        "agg-m": SimModel(answer=_aggregate),
        "self-m": SimModel(answer=_right(0.3, "self")),
        "judge-m": SimModel(answer=_judge),
    }


def _agent(model: str, base_url: str, extra: str = "") -> str:
    return f"{{model: openai/{model}, api_base: {json.dumps(base_url)}, retry: {{max_attempts: 1}}, {PRICE}{extra}}}"


def _singles(folder: Path, base_url: str, names: Sequence[str]) -> None:
    """``NAME.yaml`` for each name: one agent on the simulated model ``NAME-m``."""
    for name in names:
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {_agent(name + '-m', base_url)}\n"
        )


def build_judged(folder: Path, out: Path) -> None:
    """A judged experiment in ``out``: baseline ``single``, ``moa`` (two proposers and an aggregator,
    one run failed) and ``self`` (three samples, majority vote)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = judged_rows()
    with SimServer(judged_models()) as srv:
        url = srv.base_url
        _singles(folder, url, ("single",))
        (folder / "moa.yaml").write_text(
            "name: moa\nnodes:\n  - {id: proposer1, agent: w1}\n  - {id: proposer2, agent: w2}\n"
            "  - {id: final, agent: agg, inputs: [proposer1, proposer2], prompt: aggregate}\n"
            "output: final\nagents:\n"
            f"  w1: {_agent('w1-m', url)}\n  w2: {_agent('w2-m', url)}\n  agg: {_agent('agg-m', url)}\n"
        )
        (folder / "self.yaml").write_text(
            "name: self\nkind: self_moa\nagent: a\nsamples: 3\nreduce: majority\n"
            f"agents:\n  a: {_agent('self-m', url, ', temperature: 0.7')}\n"
        )
        (folder / "judge.yaml").write_text(
            f"name: judge\nkind: single\nagent: j\nagents:\n  j: {_agent('judge-m', url)}\n"
        )
        (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "exp.yaml").write_text(
            "name: judged\ndataset: data.jsonl\nevaluator: {name: judge, topology: judge.yaml}\n"
            "baseline: single.yaml\nsetups: [moa.yaml, self.yaml]\nconcurrency: 1\nbootstrap_rounds: 200\n"
        )
        # the aggregator's first call fails: one `moa` run ends in an error
        srv.script("agg-m", ["500"])
        Experiment.from_file(folder / "exp.yaml", out=out, progress=False).run()


CODE_ANSWERS = {
    "add_ok": "```python\ndef add_ok(a, b):\n    return a + b\n```",
    "add_wrong": "```python\ndef add_wrong(a, b):\n    return a - b\n```",
    "add_html": f"```python\ndef add_html(a, b):\n    return '{HOSTILE}'\n```",
}


def build_code(folder: Path, out: Path) -> None:
    """Code items under the execution evaluator: ``base`` passes one, ``coder`` all."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "task_id": name,
            "prompt": f"def {name}(a, b):\n    '''Return a + b.'''\n",
            "entry_point": name,
            "test": "def check(f):\n    assert f(2, 3) == 5\n",
        }
        for name in CODE_ANSWERS
    ]

    def task(req: SimRequest) -> str:
        m = re.search(r"def (add_\w+)\(", last_user_text(req.messages))
        return m.group(1) if m else "add_ok"

    def base(req: SimRequest) -> str:
        return CODE_ANSWERS[task(req)]

    def coder(req: SimRequest) -> str:
        return CODE_ANSWERS["add_ok"].replace("add_ok", task(req))

    with SimServer({"base-m": SimModel(answer=base), "coder-m": SimModel(answer=coder)}) as srv:
        _singles(folder, srv.base_url, ("base", "coder"))
        (folder / "code.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "exp.yaml").write_text(
            "name: code\ndataset: code.jsonl\nevaluator: {name: execution, timeout_s: 10, cpu_s: 5}\n"
            "baseline: base.yaml\nsetups: [coder.yaml]\nconcurrency: 3\nbootstrap_rounds: 100\n"
        )
        Experiment.from_file(folder / "exp.yaml", out=out, progress=False).run()


def build_qa(folder: Path, out: Path) -> None:
    """NQ-open rows of several accepted answers, scored by SQuAD's exact match: ``base`` answers
    with the second alias, ``other`` with a wrong name."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": "q1", "question": "Who painted the Mona Lisa?", "answer": ["Leonardo da Vinci", "da Vinci"]}
    ]
    with SimServer({"base-m": SimModel(answer="da Vinci"), "other-m": SimModel(answer="Raphael")}) as srv:
        _singles(folder, srv.base_url, ("base", "other"))
        (folder / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "exp.yaml").write_text(
            "name: qa\ndataset: qa.jsonl\nbaseline: base.yaml\nsetups: [other.yaml]\nbootstrap_rounds: 100\n"
        )
        Experiment.from_file(folder / "exp.yaml", out=out, progress=False).run()


def build_chat(folder: Path, out: Path) -> None:
    """Multi-turn items (MT-Bench layout) under the judge: ``good`` answers turn 2 better."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "question_id": 81 + i,
            "category": "writing",
            "turns": [f"Chat {i}, first turn.", f"Chat {i}, follow-up."],
        }
        for i in range(3)
    ]

    def answerer(name: str, second: str) -> Any:
        def answer(req: SimRequest) -> str:
            if "follow-up" not in last_user_text(req.messages):
                return f"{name} first answer"
            return f"{second} second answer from {name}"

        return answer

    def judge(req: SimRequest) -> str:
        prompt = last_user_text(req.messages)
        a = prompt.split("<|The Start of Assistant A's Conversation with User|>", 1)[1].split("<|The End", 1)[
            0
        ]
        b = prompt.split("<|The Start of Assistant B's Conversation with User|>", 1)[1].split("<|The End", 1)[
            0
        ]
        last_a, last_b = a.rsplit("### Assistant", 1)[1], b.rsplit("### Assistant", 1)[1]
        verdict = "A>B" if "GOOD" in last_a else "B>A" if "GOOD" in last_b else "A=B"
        return f"Turn reasoning.\n[[{verdict}]]"

    models = {
        "base-m": SimModel(answer=answerer("base", "SAME")),
        "good-m": SimModel(answer=answerer("good", "GOOD")),
        "judge-m": SimModel(answer=judge),
    }
    with SimServer(models) as srv:
        _singles(folder, srv.base_url, ("base", "good", "judge"))
        (folder / "question.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "exp.yaml").write_text(
            "name: chat\ndataset: question.jsonl\nevaluator: {name: judge, topology: judge.yaml}\n"
            "baseline: base.yaml\nsetups: [good.yaml]\nconcurrency: 2\nbootstrap_rounds: 100\n"
        )
        Experiment.from_file(folder / "exp.yaml", out=out, progress=False).run()


# -- a big experiment written straight into a store --------------------------------------------------


def _call(node: str, model: str, start: float, text: str, reply: str, rng: random.Random) -> CallRecord:
    usage = Usage(prompt_tokens=rng.randint(20, 200), completion_tokens=rng.randint(5, 80))
    return CallRecord(
        node=node,
        model=model,
        usage=usage,
        cost_usd=(usage.prompt_tokens + 2 * usage.completion_tokens) / 1e6,
        latency_s=rng.uniform(0.2, 1.5),
        started_s=start,
        messages=[{"role": "user", "content": text}],
        reply=reply,
    )


def _calls(is_base: bool, question: str, answer: str, rng: random.Random) -> list[CallRecord]:
    if is_base:
        return [_call("answer", "openai/single-m", 0.0, question, answer, rng)]
    p1 = _call("proposer1", "openai/w1-m", 0.0, question, answer, rng)
    p2 = _call("proposer2", "openai/w2-m", 0.0, question, answer, rng)
    start = max(p1.latency_s, p2.latency_s)
    return [p1, p2, _call("final", "openai/agg-m", start, f"1. {answer}\n2. {answer}", answer, rng)]


_INSERT_RUN = (
    "INSERT INTO runs(run_id, setup, topo_hash, item_id, input_hash, answer, error, error_type, cost_usd, "
    "latency_s, critical_path_s, prompt_tokens, completion_tokens, n_calls, finished_at, sample, cost_usd_max, "
    "unknown_attempts, turns) VALUES (?,?,?,?,?,?,NULL,NULL,?,?,?,?,?,?,0,0,?,0,NULL)"
)


_BASE_AND_MOA = [("base", "h0", True), ("moa", "h1", False)]


def _manifest(
    experiment: str,
    setups: Sequence[tuple[str, str, bool]],
    evaluator_id: str,
    item_ids: Sequence[str],
    *,
    evaluator: dict[str, Any] | None = None,
    pairwise: bool = False,
    samples: int = 1,
    rounds: int = 50,
) -> dict[str, Any]:
    """A stored experiment's manifest: ``setups`` as (name, hash, is_baseline)."""
    return {
        "experiment": experiment,
        "dataset": "generated",
        "setups": [{"name": n, "hash": h, "source": n, "is_baseline": b} for n, h, b in setups],
        "evaluator": evaluator or {"name": "exact"},
        "evaluator_id": evaluator_id,
        "pairwise": pairwise,
        "samples": samples,
        "item_ids": list(item_ids),
        "seed": 0,
        "bootstrap_rounds": rounds,
    }


def _save(
    store: Store,
    items: Sequence[Any],
    runs: Sequence[Any],
    calls: Sequence[Any],
    scores: Sequence[Any],
    manifest: dict[str, Any],
) -> None:
    """Items, runs, calls and scores as rows, and the manifest, in one transaction."""
    with store.conn:
        store.put_items(items)
        store.conn.executemany(_INSERT_RUN, runs)
        store.conn.executemany(INSERT_CALL, calls)
        store.conn.executemany(
            "INSERT INTO scores(run_id, evaluator_id, value, detail) VALUES (?,?,?,?)", scores
        )
        store.set_meta("manifest", manifest)


def build_big(out: Path, n_items: int, *, seed: int = 0) -> None:
    """``n_items`` items (three categories), a baseline (one call per item) and a three-call setup,
    scored 0/1 under ``exact``, written in one transaction the way a run stores them (runs, calls
    with their traces, scores, the manifest); ``rebuild_report`` then writes the report files."""
    rng = random.Random(seed)
    store = Store.open(out)
    try:
        setups = [("single", "h-single", True), ("moa", "h-moa", False)]
        ids = [f"item-{i:05d}" for i in range(n_items)]
        items = []
        for i, item_id in enumerate(ids):
            data = {
                "id": item_id,
                "input": f"Question {i}: what is {i} times 3?",
                "target": str(3 * i),
                "category": ("arith", "logic", "trivia")[i % 3],
            }
            items.append((item_id, input_hash(data["input"]), data["category"], json.dumps(data)))
        evaluator_id = "exact:big"
        runs, calls, scores = [], [], []
        run_id = 0
        for name, h, is_base in setups:
            for item_id, ih, _, data_json in items:
                data = json.loads(data_json)
                right = rng.random() < (0.6 if is_base else 0.75)
                answer = data["target"] if right else "wrong"
                made = _calls(is_base, data["input"], answer, rng)
                run_id += 1
                end = max(c.started_s + c.latency_s for c in made)
                usage = sum((c.usage for c in made), Usage())
                cost = sum(c.cost_usd for c in made)
                runs.append(
                    (
                        run_id,
                        name,
                        h,
                        item_id,
                        ih,
                        answer,
                        cost,
                        end,
                        end,
                        usage.prompt_tokens,
                        usage.completion_tokens,
                        len(made),
                        cost,
                    )
                )
                calls.extend(call_rows(made, run_id, None, text_limit=4096))
                scores.append(
                    (
                        run_id,
                        evaluator_id,
                        1.0 if right else 0.0,
                        None if right else "expected " + data["target"],
                    )
                )
        manifest = _manifest("big", setups, evaluator_id, ids, rounds=200)
        _save(store, items, runs, calls, scores, manifest)
    finally:
        store.close()


#: markup, script, links and bidi/zero-width/NUL characters, in every name a page shows
EVIL = {
    # a right-to-left override that, unchecked, reverses the rest of the line it sits in
    "setup": '<img src=x onerror="window.__pwned=1">\u202e',
    "baseline": "\u202ejavascript:window.__pwned=1//",
    "node": '<svg onload="window.__pwned=1"></svg>',
    "model": "</script><script>window.__pwned=1</script>",
    "category": "<style>*{display:none}</style>",
    "item": "javascript:window.__pwned=1",
    "experiment": '<iframe srcdoc="<script>parent.__pwned=1</script>">',
    "answer": '[click](javascript:window.__pwned=1) **bold** \u202eevil\u200b\x00 <a href="javascript:window.__pwned=1">a</a>',
}


def build_hostile(out: Path) -> None:
    """A small experiment whose every name and text is hostile (``EVIL``), written through the store."""
    rng = random.Random(1)
    store = Store.open(out)
    try:
        ids = [EVIL["item"], "plain"]
        items = []
        for item_id in ids:
            data = {"id": item_id, "input": EVIL["answer"], "target": "4", "category": EVIL["category"]}
            items.append((item_id, input_hash(data["input"]), data["category"], json.dumps(data)))
        setups = [(EVIL["baseline"], "h-base", True), (EVIL["setup"], "h-setup", False)]
        runs, calls, scores = [], [], []
        run_id = 0
        for name, h, is_base in setups:
            for item_id, ih, _, _ in items:
                run_id += 1
                first = _call(EVIL["node"], EVIL["model"], 0.0, EVIL["answer"], EVIL["answer"], rng)
                made = (
                    [first]
                    if is_base
                    else [first, _call("final", EVIL["model"], 2.0, EVIL["answer"], EVIL["answer"], rng)]
                )
                usage = sum((c.usage for c in made), Usage())
                cost = sum(c.cost_usd for c in made)
                runs.append(
                    (
                        run_id,
                        name,
                        h,
                        item_id,
                        ih,
                        EVIL["answer"],
                        cost,
                        3.0,
                        3.0,
                        usage.prompt_tokens,
                        usage.completion_tokens,
                        len(made),
                        cost,
                    )
                )
                calls.extend(call_rows(made, run_id, None, text_limit=4096))
                scores.append((run_id, "exact:evil", float(is_base), EVIL["answer"]))
        manifest = _manifest(
            EVIL["experiment"], setups, "exact:evil", ids, evaluator={"name": EVIL["answer"]}
        )
        _save(store, items, runs, calls, scores, manifest)
    finally:
        store.close()


def build_retried(out: Path) -> None:
    """One item, a baseline and a setup whose one call was tried three times: a timeout (usage
    unknown), a ``flex`` reply it rejected (billed $0.0012) and a ``default`` answer ($0.0034); the
    baseline's call is from a store written before attempts kept their cost and tier."""
    store = Store.open(out)
    try:
        data = {"id": "r1", "input": "What is 2 plus 2?", "target": "4"}
        items = [("r1", input_hash(data["input"]), None, json.dumps(data))]
        usage = Usage(prompt_tokens=100, completion_tokens=20)
        retried = CallRecord(
            node="answer",
            model="openai/tiered-m",
            usage=usage,
            cost_usd=0.0046,
            latency_s=2.0,
            attempts=3,
            attempt_log=[
                Attempt("timeout", 30.0, None, "timed out after 30 s", worst_case_usd=0.01),
                Attempt("error", 1.0, usage, "content filter", cost_usd=0.0012, service_tier="flex"),
                Attempt("ok", 1.0, usage, None, cost_usd=0.0034, service_tier="default"),
            ],
            service_tier="default",
            messages=[{"role": "user", "content": data["input"]}],
            reply="4",
        )
        old = CallRecord(
            node="answer",
            model="openai/old-m",
            usage=usage,
            cost_usd=0.002,
            latency_s=1.0,
            attempt_log=[Attempt("ok", 1.0, usage)],
            messages=[{"role": "user", "content": data["input"]}],
            reply="4",
        )
        setups = [("single", "h-single", True, old), ("tiered", "h-tiered", False, retried)]
        runs, calls, scores = [], [], []
        for run_id, (name, h, _, call) in enumerate(setups, 1):
            cost = call.cost_usd
            runs.append((run_id, name, h, "r1", items[0][1], "4", cost, 2.0, 2.0, 100, 20, 1, cost))
            calls.extend(call_rows([call], run_id, None, text_limit=4096))
            scores.append((run_id, "exact:retried", 1.0, None))
        manifest = _manifest("retried", [(n, h, b) for n, h, b, _ in setups], "exact:retried", ["r1"])
        _save(store, items, runs, calls, scores, manifest)
        # the timeout's worst case is not known to be paid: the run's cost is known up to it
        store.conn.execute("UPDATE runs SET cost_usd_max = 0.0146, unknown_attempts = 1 WHERE run_id = 2")
        # the baseline's attempt as a store written before attempts kept their cost and tier holds it
        old_entry = [{"status": "ok", "latency_s": 1.0, "usage": usage.to_dict(), "error": None}]
        store.conn.execute("UPDATE calls SET attempt_log = ? WHERE run_id = 1", (json.dumps(old_entry),))
        store.conn.commit()
    finally:
        store.close()


def build_sixteenths(out: Path) -> None:
    """16 items: the baseline right on 5 (quality 0.3125), ``six`` on those and one more (0.375, Δ
    +0.0625) and 1.125 times as slow: figures that sit exactly halfway between two printed digits,
    where rounding half up and half to even part."""
    store = Store.open(out)
    try:
        ids = [f"s{i:02d}" for i in range(16)]
        items = []
        for item_id in ids:
            data = {"id": item_id, "input": f"Question {item_id}", "target": "yes"}
            items.append((item_id, input_hash(data["input"]), None, json.dumps(data)))
        setups = [("single", "h-single", True, 5, 2.0), ("six", "h-six", False, 6, 2.25)]
        runs, calls, scores = [], [], []
        run_id = 0
        usage = Usage(prompt_tokens=100, completion_tokens=20)
        for name, h, _, right, latency in setups:
            for k, (item_id, ih, _, _) in enumerate(items):
                run_id += 1
                call = CallRecord(
                    node="answer", model="openai/m", usage=usage, cost_usd=0.001, latency_s=latency
                )
                runs.append((run_id, name, h, item_id, ih, "yes", 0.001, latency, latency, 100, 20, 1, 0.001))
                calls.extend(call_rows([call], run_id, None, text_limit=4096))
                scores.append((run_id, "exact:16", 1.0 if k < right else 0.0, None))
        manifest = _manifest(
            "sixteenths", [(n, h, b) for n, h, b, _, _ in setups], "exact:16", ids, rounds=200
        )
        _save(store, items, runs, calls, scores, manifest)
    finally:
        store.close()


def build_both_failed(out: Path, *, pairwise: bool) -> None:
    """Item ``i``: the baseline's run and ``moa``'s both failed; item ``j``: both answered. Under a
    judge the failed pair is stored as a tie (0.5 each), as the summary counts it."""
    store = Store.open(out)
    try:
        for item_id in ("i", "j"):
            data = {"id": item_id, "input": f"Question {item_id}", "target": "y"}
            store.put_items([(item_id, input_hash(data["input"]), None, json.dumps(data))])
        ev = "judge:t" if pairwise else "exact:t"
        b = store.record_run("base", "h0", "i", "x", None, ProviderError("down"))
        m = store.record_run("moa", "h1", "i", "x", None, ProviderError("down"))
        ok = RunResult("y", "t", Usage(), 0.0, 1.0, 1.0, [], {})
        bj = store.record_run("base", "h0", "j", "x", ok)
        mj = store.record_run("moa", "h1", "j", "x", ok)
        if pairwise:
            store.put_score(b, ev, 0.5, "baseline")
            store.put_score(m, ev, 0.5, "both failed on this item", baseline_run_id=b)
            store.put_score(bj, ev, 0.5, "baseline")
            store.put_score(mj, ev, 0.5, "[[A=B]] / [[A=B]]", baseline_run_id=bj)
        else:
            store.put_score(bj, ev, 1.0, None)
            store.put_score(mj, ev, 1.0, None)
        evaluator = {"name": "judge" if pairwise else "exact"}
        manifest = _manifest("failed", _BASE_AND_MOA, ev, ["i", "j"], evaluator=evaluator, pairwise=pairwise)
        store.set_meta("manifest", manifest)
    finally:
        store.close()


def build_one_sample_failed(out: Path) -> None:
    """Three samples per item: on item ``i`` ``moa`` answers two (scored 1) and fails one; the
    baseline answers all three, scored 0. The item's score for ``moa`` is 2/3, a win."""
    store = Store.open(out)
    try:
        data = {"id": "i", "input": "Question i", "target": "y"}
        store.put_items([("i", input_hash(data["input"]), None, json.dumps(data))])
        ok = RunResult("y", "t", Usage(), 0.0, 1.0, 1.0, [], {})
        for k in range(3):
            store.put_score(store.record_run("base", "h0", "i", "x", ok, sample=k), "exact:s", 0.0, None)
            if k == 2:
                store.record_run("moa", "h1", "i", "x", None, ProviderError("down"), sample=k)
            else:
                store.put_score(store.record_run("moa", "h1", "i", "x", ok, sample=k), "exact:s", 1.0, None)
        store.set_meta("manifest", _manifest("sampled", _BASE_AND_MOA, "exact:s", ["i"], samples=3))
    finally:
        store.close()
