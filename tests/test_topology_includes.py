"""Cascade files name other files through their stages: a file that names itself, directly or
through another, is one line naming the chain, never a RecursionError."""

from __future__ import annotations

from pathlib import Path

import pytest

from moa import cli
from moa.errors import TopologyError
from moa.topology.loader import MAX_INCLUDE_DEPTH, load

AGENTS = "agents: {m: {model: openai/gpt-4o-mini, temperature: 0.7}}\n"


def cascade(name: str, stage_ref: str) -> str:
    return (
        f"name: {name}\nkind: cascade\n{AGENTS}stages:\n"
        "  - {agent: m, samples: 2, accept: {agree: 2}}\n"
        f"  - {{topology: {stage_ref}}}\n"
    )


def test_a_cascade_naming_itself_is_one_line(tmp_path: Path) -> None:
    """`stages: [..., {topology: selfref.yaml}]` in selfref.yaml names the loop."""
    f = tmp_path / "selfref.yaml"
    f.write_text(cascade("selfref", "selfref.yaml"))
    with pytest.raises(TopologyError) as info:
        load(f)
    assert info.value.lines() == [
        f"{f}: stages[1]: `selfref.yaml` includes itself (selfref.yaml → selfref.yaml)"
    ]


def test_two_cascades_naming_each_other(tmp_path: Path) -> None:
    """a.yaml → b.yaml → a.yaml is refused with the whole chain."""
    (tmp_path / "a.yaml").write_text(cascade("a", "b.yaml"))
    (tmp_path / "b.yaml").write_text(cascade("b", "a.yaml"))
    with pytest.raises(TopologyError) as info:
        load(tmp_path / "a.yaml")
    (line,) = info.value.lines()
    assert line.endswith(
        "stages[1]: topology `b.yaml`: stages[1]: `a.yaml` includes itself (a.yaml → b.yaml → a.yaml)"
    )


def test_a_long_chain_of_distinct_files_stops_at_the_depth_limit(tmp_path: Path) -> None:
    """Distinct cascades each naming the next stop at MAX_INCLUDE_DEPTH, not at the recursion limit."""
    n = 3 * MAX_INCLUDE_DEPTH
    for i in range(n):
        (tmp_path / f"c{i}.yaml").write_text(cascade(f"c{i}", f"c{i + 1}.yaml"))
    (tmp_path / f"c{n}.yaml").write_text(f"name: end\nkind: single\n{AGENTS}")
    with pytest.raises(TopologyError) as info:
        load(tmp_path / "c0.yaml")
    assert f"more than {MAX_INCLUDE_DEPTH} deep" in str(info.value)


def test_validate_command_reports_the_loop_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moa validate selfref.yaml` exits 2 with one line, no traceback."""
    f = tmp_path / "selfref.yaml"
    f.write_text(cascade("selfref", "selfref.yaml"))
    assert cli.main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert "includes itself" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
