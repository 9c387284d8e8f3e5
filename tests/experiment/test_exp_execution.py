"""The execution evaluator inside experiments: the code-extraction fallback chain, hostile answers
ending as failed items with their reasons, and pass@k over samples against hand-computed values."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import re
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from moa.experiment import Experiment, Store
from moa.experiment.store import SCHEMA_VERSION
from moa.testing.sim import SimModel, SimRequest, SimServer, last_user_text

GOOD = "def {f}(a, b):\n    return a + b\n"
# one task per behaviour; the name of the function says which answer the `mixed` model gives
ANSWERS: Mapping[str, str] = {
    "add_ok": f"Here you go:\n```python\n{GOOD}```\n",
    # the tagged python block wins over a longer block in a non-code language
    "add_tagged": f"```python\n{GOOD}```\nOutput:\n```text\n{'not code ' * 40}\n```",
    # no code-language block: the longest block of any kind is taken
    "add_untagged_text": f"```text\n{GOOD}```",
    # no fence at all: the raw answer parses as Python
    "add_raw": GOOD,
    "add_prose": "You should add the two numbers together and return the sum.",
    "add_wrong": "```python\ndef {f}(a, b):\n    return a - b\n```",
    # hostile code runs beside a correct function (code without the function is not run at all)
    "add_fork_bomb": f"```python\nimport os\nwhile True:\n    os.fork()\n{GOOD}```",
    "add_loop": f"```python\nwhile True:\n    pass\n{GOOD}```",
    "add_alloc": f"```python\nx = bytearray(50 * 1024 ** 3)\n{GOOD}```",
    "add_env": f"```python\nimport os\nassert 'OPENAI_API_KEY' in os.environ, 'no key here'\n{GOOD}```",
    "add_escape": f"```python\nopen('/var/tmp/moa-escape-test', 'w').write('x')\n{GOOD}```",
    "add_socket": f"```python\nimport socket\nsocket.create_connection(('127.0.0.1', 9))\n{GOOD}```",
    "add_missing": "```python\ndef plus(a, b):\n    return a + b\n```",
}


def _rows(names: list[str]) -> list[dict[str, str]]:
    return [
        {
            "task_id": name,
            "prompt": f"def {name}(a, b):\n    '''Return a + b.'''\n",
            "entry_point": name,
            "test": "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n",
        }
        for name in names
    ]


def _task(req: SimRequest) -> str:
    m = re.search(r"def (add_\w+)\(", last_user_text(req.messages))
    assert m is not None
    return m.group(1)


def mixed(req: SimRequest) -> str:
    f = _task(req)
    return ANSWERS[f].replace("{f}", f)


def correct(req: SimRequest) -> str:
    return ANSWERS["add_ok"].replace("{f}", _task(req))


def _experiment(folder: Path, base_url: str, rows: list[dict[str, str]], extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("base", "coder"):
        agent = f"model: openai/{name}-m, api_base: {json.dumps(base_url)}, retry: {{max_attempts: 1}}"
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{{agent}}}\n"
        )
    (folder / "code.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the wall-clock limit well above the CPU limit: beside other work (a load of 10 on 2 cores) the
    # endless loop's 2 s of CPU took over 5 s of wall time, and it read "timeout", not "cpu limit"
    (folder / "exp.yaml").write_text(
        "name: code\ndataset: code.jsonl\nevaluator: {name: execution, timeout_s: 30, cpu_s: 2, memory_mb: 256}\n"
        f"baseline: base.yaml\nsetups: [coder.yaml]\nconcurrency: 6\nbootstrap_rounds: 200\n{extra}"
    )
    return folder / "exp.yaml"


def _details(out: Path, setup: str) -> dict[str, tuple[float, str | None]]:
    rows = [json.loads(line) for line in (out / "results.jsonl").open()]
    return {r["item_id"]: (r["score"], r["score_detail"]) for r in rows if r["setup"] == setup}


def test_extraction_fallbacks_and_hostile_answers_inside_an_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fenced, untagged and raw code all pass; prose, wrong code and hostile code (fork bomb, endless
    loop, 50 GB, reading the environment, writing outside, a socket) score 0 with their reason, and
    the experiment completes with the reasons counted in the report."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    rows = _rows(list(ANSWERS))
    with SimServer({"base-m": SimModel(answer=mixed), "coder-m": SimModel(answer=correct)}) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url, rows)
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    got = _details(tmp_path / "out", "base")
    for ok in ("add_ok", "add_tagged", "add_untagged_text", "add_raw"):
        assert got[ok][0] == 1.0, got[ok]
    expected = {
        "add_prose": "no code found in the answer",
        "add_wrong": "tests failed: AssertionError",
        "add_fork_bomb": "blocked: sandbox: os.fork is refused",
        "add_loop": "cpu limit (2s)",
        "add_alloc": "memory limit (256 MB)",
        "add_env": "tests failed: AssertionError: no key here",
        "add_escape": "blocked: sandbox: writing '/var/tmp/moa-escape-test' outside",
        "add_socket": "blocked: sandbox: network access",
        "add_missing": "the answer's code does not define `add_missing`",
    }
    for item, reason in expected.items():
        score, detail = got[item]
        assert score == 0.0 and detail is not None and detail.startswith(reason), (item, detail)
    assert not Path("/var/tmp/moa-escape-test").exists()
    base, coder = summary.setup("base"), summary.setup("coder")
    assert summary.complete and base.errors == 0 and coder.quality == 1.0
    assert base.quality == pytest.approx(4 / len(ANSWERS))
    reasons = {f["reason"]: f["count"] for f in base.failure_reasons}
    assert (
        reasons["tests failed: AssertionError"] == 2 and reasons["blocked: sandbox: os.fork is refused"] == 1
    )
    assert base.pass_at_k is not None and list(base.pass_at_k) == ["1"]
    assert base.pass_at_k["1"] == pytest.approx(4 / len(ANSWERS))
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Why answers failed" in report and "memory limit (256 MB) ×1" in report
    assert "## pass@k" in report


def _by_sample(c: Mapping[str, int]) -> Callable[[SimRequest], str]:
    """Right on the first ``c[item]`` requests for an item, wrong afterwards."""

    def answer(req: SimRequest) -> str:
        f = _task(req)
        body = "a + b" if req.call_index < c[f] else "a * b"
        return f"```python\ndef {f}(a, b):\n    return {body}\n```"

    return answer


def test_pass_at_k_over_samples_matches_hand_computation_and_resumes_per_sample(tmp_path: Path) -> None:
    """4 samples per item with 0, 1, 2 and 4 passing: pass@1..4 as computed by hand; going from 2 to
    4 samples runs only the new samples, and a re-run sends nothing."""
    names = ["add_c0", "add_c1", "add_c2", "add_c4"]
    c = {"add_c0": 0, "add_c1": 1, "add_c2": 2, "add_c4": 4}
    rows = _rows(names)
    with SimServer({"base-m": SimModel(answer=correct), "coder-m": SimModel(answer=_by_sample(c))}) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url, rows, extra="samples: 2\n")
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
        assert srv.stats.served == 2 * 4 * 2
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False, samples=4).run()
        assert srv.stats.served == 2 * 4 * 4  # only samples 2 and 3 were new
        Experiment.from_file(exp, out=tmp_path / "out", progress=False, samples=4).run()
        assert srv.stats.served == 2 * 4 * 4
    coder = summary.setup("coder")
    # pass@k = mean over items of 1 - C(n-c, k) / C(n, k), n = 4
    assert coder.pass_at_k is not None
    assert coder.pass_at_k["1"] == pytest.approx((0 + 1 / 4 + 2 / 4 + 1) / 4)
    assert coder.pass_at_k["2"] == pytest.approx((0 + (1 - 3 / 6) + (1 - 1 / 6) + 1) / 4)
    assert coder.pass_at_k["3"] == pytest.approx((0 + (1 - 1 / 4) + 1 + 1) / 4)
    assert coder.pass_at_k["4"] == pytest.approx(3 / 4)
    assert coder.quality == pytest.approx(coder.pass_at_k["1"]) and coder.samples == 4 and coder.missing == 0
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(on_disk["setups"][1]["pass_at_k"]) == {"1", "2", "3", "4"}
    samples = {json.loads(line)["sample"] for line in (tmp_path / "out" / "results.jsonl").open()}
    assert samples == {0, 1, 2, 3}


def test_a_store_written_before_samples_is_upgraded(tmp_path: Path) -> None:
    """A schema-1 store (no `sample` column) opens as schema 2 with its runs kept as sample 0."""
    tmp_path.joinpath("out").mkdir()
    conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
    conn.executescript(
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE runs(run_id INTEGER PRIMARY KEY, setup TEXT NOT NULL, topo_hash TEXT NOT NULL, "
        "item_id TEXT NOT NULL, input_hash TEXT NOT NULL, answer TEXT, error TEXT, error_type TEXT, "
        "cost_usd REAL NOT NULL, latency_s REAL NOT NULL, critical_path_s REAL NOT NULL, "
        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, n_calls INTEGER NOT NULL, "
        "finished_at REAL NOT NULL, UNIQUE(setup, topo_hash, item_id, input_hash));"
        "INSERT INTO runs VALUES (7, 's', 'h', 'i1', 'x', 'ans', NULL, NULL, 0.5, 1, 1, 3, 4, 1, 0);"
    )
    conn.commit()
    conn.close()
    store = Store.open(tmp_path / "out")
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION
        row = store.run_for("s", "h", "i1", 0)
        assert row is not None and row.run_id == 7 and row.answer == "ans" and row.sample == 0
        assert store.finished("s", "h", with_errors=True) == {("i1", "x", 0)}
    finally:
        store.close()


HUMANEVAL = Path(__file__).parents[1] / "eval" / "fixtures" / "humaneval" / "problems.jsonl"


def _humaneval_answers(rows: list[dict[str, str]], key: str) -> Callable[[SimRequest], str]:
    """Answers with ``row[key]`` as the body, in turn in the official completion format, as the
    whole program, and as a chat answer holding only the entry-point function."""

    def answer(req: SimRequest) -> str:
        text = last_user_text(req.messages)
        i, row = next((i, r) for i, r in enumerate(rows) if f"def {r['entry_point']}(" in text)
        body = row[key]
        if i % 3 == 0:
            return body
        if i % 3 == 1:
            return row["prompt"] + body
        m = re.search(rf"^(@.*\n)*def {row['entry_point']}\(", row["prompt"], re.MULTILINE)
        assert m is not None
        return f"Sure:\n\n```python\n{row['prompt'][m.start() :]}{body}```\n\nThis is linear."

    return answer


def test_humaneval_answer_shapes_inside_an_experiment(tmp_path: Path) -> None:
    """HumanEval problems answered as bodies, whole programs and chat functions: every correct
    answer passes and every wrong one fails on its assertions."""
    rows = [json.loads(line) for line in HUMANEVAL.read_text().splitlines()]
    models = {
        "base-m": SimModel(answer=_humaneval_answers(rows, "wrong_solution")),
        "coder-m": SimModel(answer=_humaneval_answers(rows, "canonical_solution")),
    }
    with SimServer(models) as srv:
        exp = _experiment(tmp_path / "e", srv.base_url, rows)
        summary = Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    assert summary.complete
    assert summary.setup("coder").quality == 1.0 and summary.setup("base").quality == 0.0
    details = _details(tmp_path / "out", "base")
    assert len(details) == len(rows)
    assert all((d or "").startswith("tests failed: AssertionError") for _, d in details.values()), details
