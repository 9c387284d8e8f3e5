"""The `regex` evaluator against a dataset's hostile pattern: a bounded failure naming the item, never
a hang, and nothing paid for lost."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

from moa._run import Runner
from moa.eval.datasets import Item
from moa.eval.registry import make_evaluator
from moa.experiment import Experiment
from moa.experiment.store import STORE_NAME
from moa.testing import FunctionModel
from tests.probe import run_python

SINGLE = "name: single\nkind: single\nagent: a\nagents:\n  a: {model: sim/a, retry: {max_attempts: 1}}\n"

# in a child: `re` holds the GIL through a match, so no guard in this process could end a hang
_HOSTILE = textwrap.dedent(
    """
    import asyncio
    from moa.errors import UserError
    from moa.eval.datasets import Item
    from moa.eval.registry import make_evaluator

    async def main():
        ev = make_evaluator("regex")
        try:
            await ev.score(Item(id="row7", input="q", target="(a+)+$"), "a" * 40 + "b")
        except UserError as e:
            print(e)
        # the evaluator goes on: the next item is scored by a new child
        print((await ev.score(Item(id="row8", input="q", target=r"^\\d+$"), "42")).value)

    asyncio.run(main())
    """
)


def test_a_catastrophically_backtracking_target_fails_naming_the_item_instead_of_hanging() -> None:
    """`(a+)+$` against `aaa...ab` backtracked for centuries in `re`, uninterruptibly: the match now
    runs in a child process killed past its limit, and the scoring fails in one line naming the
    item and the pattern; the next item scores as usual."""
    out = run_python("-c", _HOSTILE, timeout=120).splitlines()
    assert len(out) == 2, out
    assert out[0].startswith("item `row7`: regex /(a+)+$/ did not finish within 2 s on an answer of 41")
    assert out[1] == "1.0"


async def test_regex_matches_as_python_re_does() -> None:
    """The child matches with `re` itself: flags, full matches, non-ASCII and a lone surrogate in the
    answer (which JSON carries to the child) read as they did in-process."""
    ev = make_evaluator({"name": "regex", "ignore_case": True, "full_match": True})
    item = Item(id="1", input="q", target=r"par[íi]s\W?")
    assert (await ev.score(item, "  PARÍS\ud800 ")).value == 1.0
    assert (await ev.score(item, "Paris, France")).value == 0.0
    multi = Item(id="2", input="q", target="a\nb")
    assert (await make_evaluator("regex").score(multi, "xa\nby")).value == 1.0


def test_a_hostile_row_in_an_experiment_keeps_every_answer_and_names_the_item(tmp_path: Path) -> None:
    """Under `moa compare`, the hostile row's answers are stored (paid for) and left unscored with a
    note naming the item; the other rows are scored, and a corrected target scores the stored
    answers without a call."""
    rows = [
        {"id": "ok", "input": "q1", "target": "^4\\d$"},
        {"id": "evil", "input": "q2", "target": "(a+)+$"},
    ]
    (tmp_path / "single.yaml").write_text(SINGLE)
    (tmp_path / "other.yaml").write_text(SINGLE.replace("name: single", "name: other"))
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "name: t\ndataset: data.jsonl\nevaluator: regex\nbaseline: single.yaml\nsetups: [other.yaml]\n"
    )
    model = FunctionModel(lambda r: "42" if "q1" in str(r.messages) else "a" * 40 + "b")
    summary = Experiment.from_file(
        exp, out=tmp_path / "out", runner=Runner(models={"sim/*": model}), progress=False
    ).run()
    (note,) = [n for n in summary.notes if "could not be scored" in n]
    assert "2 answers could not be scored" in note and "item `evil`: regex /(a+)+$/" in note
    assert "\n" not in note
    with sqlite3.connect(tmp_path / "out" / STORE_NAME) as db:
        assert db.execute("SELECT count(*) FROM runs WHERE answer IS NOT NULL").fetchone() == (4,)
    calls = len(model.calls)
    rows[1]["target"] = "^a+b$"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = Experiment.from_file(
        exp, out=tmp_path / "out", runner=Runner(models={"sim/*": model}), progress=False
    ).run()
    assert not [n for n in again.notes if "could not be scored" in n]
    assert len(model.calls) == calls
    assert all(s.quality == 1.0 for s in again.setups)
