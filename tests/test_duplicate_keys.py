"""A key written twice in one mapping of a hand-written document is refused, naming the line: YAML
and JSON both keep the last silently, so an agent or a name would vanish. Dataset rows keep JSON's
own behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from moa.errors import UserError
from moa.experiment.config import load_spec
from moa.safe_read import parse_json, parse_yaml
from moa.topology.loader import load


def test_an_agent_defined_twice_is_refused(tmp_path: Path) -> None:
    """Two agents `a` in one YAML mapping: one line naming both lines."""
    f = tmp_path / "t.yaml"
    f.write_text(
        "name: x\nagents:\n  a: {model: openai/gpt-4o}\n  a: {model: openai/gpt-4o-mini}\nkind: single\n"
    )
    with pytest.raises(UserError) as info:
        load(f)
    assert str(info.value) == f"{f}:4: refused: duplicate key `a` (first on line 3)"


def test_a_top_level_key_written_twice_in_json_is_refused(tmp_path: Path) -> None:
    """`name` twice in a JSON topology: refused with the line of the repeat."""
    f = tmp_path / "t.json"
    f.write_text('{"name": "x", "kind": "single",\n "agents": {"a": {"model": "m"}},\n "name": "y"}\n')
    with pytest.raises(UserError) as info:
        load(f)
    assert str(info.value) == f"{f}:3: refused: duplicate key `name`"


def test_an_experiment_key_written_twice_is_refused(tmp_path: Path) -> None:
    """Experiment files go through the same reader."""
    f = tmp_path / "e.yaml"
    f.write_text("name: e\ndataset: d.jsonl\nevaluator: contains\nevaluator: exact\n")
    with pytest.raises(UserError, match=r"e\.yaml:4: refused: duplicate key `evaluator` \(first on line 3\)"):
        load_spec(f)


def test_only_a_repeat_within_one_mapping_is_refused() -> None:
    """A repeat in one mapping is refused; a `<<` merge overridden, or one key in two mappings, is not."""
    with pytest.raises(ValueError, match=r"line 2: duplicate key `x` \(first on line 1\)"):
        parse_yaml("x: 1\nx: 2\n")
    data = parse_yaml("base: &b {model: m, temperature: 0}\nagent: {<<: *b, temperature: 1}\n")
    assert data["agent"] == {"model": "m", "temperature": 1}
    assert parse_yaml("a: {x: 1}\nb: {x: 2}\n") == {"a": {"x": 1}, "b": {"x": 2}}


def test_dataset_rows_keep_json_behaviour() -> None:
    """parse_json refuses a repeated key only when asked (documents and dataset rows ask)."""
    assert parse_json('{"q": 1, "q": 2}') == {"q": 2}
    with pytest.raises(ValueError, match="duplicate key `q`"):
        parse_json('{"q": 1, "q": 2}', unique_keys=True)


def test_a_repeat_whose_line_is_unsure_names_no_line(tmp_path: Path) -> None:
    """`x` in three objects, repeated in the last: the parser keeps no positions, so no line is
    named (the second `"x":` of the text, on line 2, had been named though the repeat is on line 4)."""
    f = tmp_path / "t.json"
    f.write_text('{"a": {"x": 1},\n "b": {"x": 2},\n "c": {"x": 3,\n "x": 4}}\n')
    with pytest.raises(UserError) as info:
        load(f)
    assert str(info.value) == f"{f}: refused: duplicate key `x`"
