"""The curated root: every exported name imports, nothing private leaks, import stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import moa

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_and_importable() -> None:
    """moa.__all__ is sorted and every name in it resolves."""
    assert moa.__all__ == sorted(moa.__all__)
    for name in moa.__all__:
        assert getattr(moa, name) is not None


def test_nothing_private_exported() -> None:
    """No underscore names in __all__."""
    assert not [n for n in moa.__all__ if n.startswith("_")]


def test_import_moa_is_light() -> None:
    """import moa (and loading a topology) does not import litellm, matplotlib or llama_cpp."""
    code = (
        "import sys, moa; t = moa.load('parallel-3'); t.graph; "
        "print(sorted(m for m in ('litellm', 'matplotlib', 'llama_cpp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_presets_all_validate() -> None:
    """Every preset validates, its file name equals its `name`, and it has a description."""
    presets = moa.presets()
    assert {
        "single",
        "sequential-refine",
        "parallel-3",
        "hierarchical",
        "moa-2x3",
        "self-moa-4",
        "local-single",
        "local-self-moa",
    } <= set(presets)
    for name, path in presets.items():
        t = moa.load(path)
        assert t.name == name
        assert t.description and "\n" not in t.description


def test_build_and_yaml_shorthand_agree() -> None:
    """moa.build.parallel and the same YAML shorthand give the same graph."""
    built = moa.build.parallel(["openai/a", "openai/b"], aggregator="openai/c", quorum=1)
    from moa.topology.loader import load_data

    yaml_t = load_data(
        {
            "name": "parallel",
            "kind": "parallel",
            "workers": ["a", "b"],
            "aggregator": "c",
            "quorum": 1,
            "agents": {"a": {"model": "openai/a"}, "b": {"model": "openai/b"}, "c": {"model": "openai/c"}},
        }
    )
    assert built.graph.order == yaml_t.graph.order
    for nid in built.graph.order:
        assert built.graph.nodes[nid].spec == yaml_t.graph.nodes[nid].spec


def test_wheel_ships_presets_and_schema(tmp_path: Path) -> None:
    """The built wheel contains the preset folder, the schema and py.typed."""
    import zipfile

    from hatchling.builders.wheel import WheelBuilder

    builder = WheelBuilder(str(ROOT))
    wheel = next(iter(builder.build(directory=str(tmp_path), versions=["standard"])))
    names = zipfile.ZipFile(wheel).namelist()
    assert "moa/_presets/parallel-3.yaml" in names
    assert "moa/_presets/local-self-moa.yaml" in names
    assert "moa/topology.schema.json" in names and "moa/py.typed" in names
    assert not [n for n in names if n.endswith((".gguf", ".pyc"))]


def test_sdist_ships_what_its_tests_read_and_no_results(tmp_path: Path) -> None:
    """The sdist holds `.ci/` (its tests read it) and leaves out an experiment's `moa-results/`."""
    import shutil
    import tarfile

    from hatchling.builders.sdist import SdistBuilder

    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*_cache"))
    # where `python run_experiment.py` or `moa compare` without --out writes, run inside examples/
    (tree / "examples" / "moa-results" / "x").mkdir(parents=True)
    (tree / "examples" / "moa-results" / "x" / "experiment.sqlite").write_text("answers")
    sdist = next(iter(SdistBuilder(str(tree)).build(directory=str(tmp_path / "dist"))))
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {".ci/run", ".ci/system-deps", "tests/test_readme.py"} <= names
    assert not [n for n in names if "moa-results" in n or n.endswith((".sqlite", ".pyc"))]


@pytest.mark.parametrize(
    ("package", "needed"),
    [
        ("litellm", (1, 104)),  # AsyncHTTPHandler(transport=...), for together_ai, hosted_vllm, ...
        ("pydantic", (2, 9)),  # field_validator(json_schema_input_type=...), at import
        ("aiohttp", (3, 10)),  # aiohttp.ConnectionTimeoutError, on every timeout of the direct path
    ],
)
def test_declared_minimum_versions_have_the_apis_moa_uses(package: str, needed: tuple[int, ...]) -> None:
    """pyproject's lower bounds admit no release lacking an API moa calls (each found by installing it)."""
    import re
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    spec = next(d for d in deps if re.match(rf"{package}\b", d))
    floor = re.search(r">=([\d.]+)", spec)
    assert floor is not None and tuple(int(p) for p in floor.group(1).split(".")) >= needed


def test_call_record_round_trips_through_json() -> None:
    """CallRecord.from_dict reads back what to_dict (the --json output) wrote."""
    import json

    rec = moa.CallRecord(
        node="agg",
        model="openai/b",
        usage=moa.Usage(3, 4),
        cost_usd=0.5,
        latency_s=0.2,
        attempts=2,
        error=None,
        requested_model="openai/a",
        started_s=0.1,
        priced=False,
        cached=True,
    )
    assert moa.CallRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


@pytest.mark.parametrize(
    ("old", "new"),
    [("Timeout", "moa.errors.TimedOut"), ("Token", "moa.results.Token"), ("Done", "moa.results.Done")],
)
def test_renamed_root_names_still_work_with_a_warning(old: str, new: str) -> None:
    """moa.Timeout, moa.Token and moa.Done still resolve, with a DeprecationWarning naming the new home."""
    module, _, name = new.rpartition(".")
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        value = getattr(moa, old)
    assert value is getattr(importlib.import_module(module), name)
    assert old not in moa.__all__


def test_errors_timeout_alias_warns() -> None:
    """moa.errors.Timeout is moa.errors.TimedOut, with a DeprecationWarning."""
    import moa.errors

    with pytest.warns(DeprecationWarning, match="TimedOut"):
        assert moa.errors.Timeout is moa.errors.TimedOut


def test_runner_sibling_is_scoped_with_a_warning() -> None:
    """Runner.sibling() still works as Runner.scoped(), with a DeprecationWarning."""
    runner = moa.Runner()
    with pytest.warns(DeprecationWarning, match="scoped"):
        child = runner.sibling()
    assert child.registry is runner.registry and child.rate_limits is runner.rate_limits
