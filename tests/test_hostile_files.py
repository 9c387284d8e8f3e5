"""Hostile files end in exit 2 and one stderr line naming the file: never a traceback, a hang or a
memory blow-up. The CLI tests run the real `moa` command; the rest test the safe reader alone."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from moa.errors import DatasetError, TopologyError, UserError
from moa.eval.datasets import load_dataset
from moa.safe_read import (
    MAX_DEPTH,
    iter_lines,
    open_regular,
    parse_json,
    parse_yaml,
    read_document,
    read_regular,
    refuse_special,
)
from moa.topology.loader import load, load_data

ROOT = Path(__file__).resolve().parent.parent
# generous: a loaded machine may take seconds to start Python; a hang or a 7 GB read takes minutes
TIMEOUT_S = 20
AGENT = '{model: openai/m, api_base: "http://127.0.0.1:9/v1"}'
TOPOLOGY = f"name: t\nkind: single\nagent: a\nagents:\n  a: {AGENT}\n"
BOMB = (
    "name: t\nkind: single\nagent: a\nagents:\n  a:\n    model: openai/m\n    params:\n"
    "      l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))
)


def moa(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "moa", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or ROOT,
        timeout=TIMEOUT_S,
    )


def refused(proc: subprocess.CompletedProcess[str], names: str | Path) -> str:
    """Exit 2 and exactly one stderr line naming ``names``; returns the line."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert str(names) in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


def experiment(tmp: Path, dataset: str | Path) -> Path:
    """An experiment whose only odd part is its dataset path."""
    (tmp / "single.yaml").write_text(TOPOLOGY)
    (tmp / "other.yaml").write_text(TOPOLOGY.replace("name: t", "name: other"))
    exp = tmp / "exp.yaml"
    exp.write_text(
        f"name: e\ndataset: {json.dumps(str(dataset))}\nevaluator: exact\nbaseline: single.yaml\n"
        "setups: [other.yaml]\n"
    )
    return exp


# -- the command line ---------------------------------------------------------------------------


def test_deep_yaml_nesting_is_one_line(tmp_path: Path) -> None:
    """100,000 nested `[` in YAML: exit 2, one line naming the file and the depth, no RecursionError."""
    f = tmp_path / "deep.yaml"
    f.write_text("name: t\nagents: " + "[" * 100_000)
    for args in (("validate", f), ("run", f, "--prompt", "hi")):
        line = refused(moa(*args), f)
        assert f"nesting deeper than {MAX_DEPTH} levels" in line


def test_deep_json_nesting_is_one_line(tmp_path: Path) -> None:
    """100,000 nested `[` in a JSON topology: exit 2, one line naming the file, no RecursionError."""
    f = tmp_path / "deep.json"
    f.write_text('{"name": "t", "agents": ' + "[" * 100_000 + "]" * 100_000 + "}")
    line = refused(moa("validate", f), f)
    assert "nesting deeper than" in line


def test_dev_zero_as_topology_is_refused_unread() -> None:
    """`/dev/zero` as the topology is refused as a device before a byte is read."""
    for args in (("validate", "/dev/zero"), ("run", "/dev/zero", "--prompt", "hi")):
        line = refused(moa(*args), "/dev/zero")
        assert "character device, not a regular file" in line


def test_fifo_as_topology_does_not_hang(tmp_path: Path) -> None:
    """A FIFO with no writer given as the topology is refused at once instead of blocking in open()."""
    f = tmp_path / "t.yaml"
    os.mkfifo(f)
    for args in (("validate", f), ("run", f, "--prompt", "hi")):
        line = refused(moa(*args), f)
        assert "a FIFO, not a regular file" in line


def test_huge_yaml_is_refused_by_its_size(tmp_path: Path) -> None:
    """A 300 MB topology is refused by its size, read never (a sparse file: its bytes are not there)."""
    f = tmp_path / "big.yaml"
    with f.open("wb") as fh:
        fh.truncate(300 << 20)
    line = refused(moa("validate", f), f)
    assert "300 MiB, over the 1 MiB limit" in line


def test_yaml_alias_bomb_in_params_is_refused(tmp_path: Path) -> None:
    """A billion-laughs alias bomb inside `params` fails validation and run before it expands."""
    f = tmp_path / "bomb.yaml"
    f.write_text(BOMB)
    for args in (("validate", f), ("run", f, "--prompt", "hi")):
        line = refused(moa(*args), f)
        assert "expands to more than" in line and "aliases" in line


def test_nul_byte_in_a_model_name_is_refused(tmp_path: Path) -> None:
    """A NUL byte in a model string (YAML `\\0`, JSON `\\u0000`) is a validation error naming the field."""
    y = tmp_path / "nul.yaml"
    y.write_text(TOPOLOGY.replace("openai/m", '"openai/m\\0"'))
    line = refused(moa("validate", y), y)
    assert "agents.a.model" in line and "control character" in line and "\\x00" in line
    j = tmp_path / "nul.json"
    j.write_text(json.dumps({"name": "t", "kind": "single", "agent": "a", "agents": {"a": {"model": "m\0"}}}))
    refused(moa("run", j, "--prompt", "hi"), j)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "deep-row"])
def test_hostile_dataset_is_one_line(tmp_path: Path, kind: str) -> None:
    """`/dev/zero`, a FIFO or a row nested 100,000 deep as the dataset: `moa compare` exits 2, one line."""
    if kind == "dev-zero":
        data: Path = Path("/dev/zero")
    elif kind == "fifo":
        data = tmp_path / "data.jsonl"
        os.mkfifo(data)
    else:
        data = tmp_path / "data.jsonl"
        data.write_text('{"input": "a"}\n' + "[" * 100_000 + "\n")
    exp = experiment(tmp_path, data)
    line = refused(moa("compare", exp, "--out", tmp_path / "out", "--no-progress"), data.name)
    assert "not a regular file" in line if kind != "deep-row" else "data.jsonl:2: nesting deeper" in line


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "huge"])
def test_hostile_experiment_file_is_one_line(tmp_path: Path, kind: str) -> None:
    """The experiment file itself as `/dev/zero`, a FIFO or 300 MB: exit 2, one line naming it."""
    if kind == "dev-zero":
        exp = Path("/dev/zero")
    else:
        exp = tmp_path / "exp.yaml"
        if kind == "fifo":
            os.mkfifo(exp)
        else:
            with exp.open("wb") as fh:
                fh.truncate(300 << 20)
    refused(moa("compare", exp, "--out", tmp_path / "out", "--no-progress"), exp)


@pytest.mark.parametrize(
    ("value", "expect"),
    [("'\"banana\"'", "'banana'"), ("'99'", "version 99 was written by a newer moa"), ("'{'", "'{'")],
)
def test_store_with_a_bad_schema_version_is_one_line(tmp_path: Path, value: str, expect: str) -> None:
    """A garbage or newer `schema_version`: `moa report` and `moa compare` exit 2 naming the store file,
    the version found and the supported one, and leave the store as it was."""
    out = tmp_path / "out"
    out.mkdir()
    db = out / "experiment.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        f"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        f"INSERT INTO meta VALUES ('schema_version', {value});"
    )
    conn.commit()
    conn.close()
    (tmp_path / "data.jsonl").write_text('{"input": "q", "target": "a"}\n')
    exp = experiment(tmp_path, tmp_path / "data.jsonl")
    for proc in (moa("report", out), moa("compare", exp, "--out", out, "--no-progress")):
        line = refused(proc, db)
        assert expect in line and "reads" in line, line
    conn = sqlite3.connect(db)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {"meta"}, "nothing is written into a store that was refused"


@pytest.mark.parametrize("kind", ["text", "fifo"])
def test_store_that_is_not_sqlite_is_one_line(tmp_path: Path, kind: str) -> None:
    """A store that is a text file or a FIFO: `moa report` and `moa compare` exit 2 naming it, unblocked."""
    out = tmp_path / "out"
    out.mkdir()
    db = out / "experiment.sqlite"
    if kind == "fifo":
        os.mkfifo(db)
    else:
        db.write_bytes(b"this is not a database, just text\n" * 100)
    (tmp_path / "data.jsonl").write_text('{"input": "q", "target": "a"}\n')
    exp = experiment(tmp_path, tmp_path / "data.jsonl")
    for proc in (moa("report", out), moa("compare", exp, "--out", out, "--no-progress")):
        line = refused(proc, db)
        assert ("a FIFO, not a regular file" if kind == "fifo" else "not a readable experiment store") in line


# -- the safe reader ----------------------------------------------------------------------------


def test_json_depth_bound_is_exact() -> None:
    """JSON nested exactly MAX_DEPTH levels parses; one more level is a ValueError, never a RecursionError."""
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    for text in ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), '{"a":' * 100_000, "[" * 100_000):
        with pytest.raises(ValueError, match="nesting deeper than"):
            parse_json(text)
    with pytest.raises(json.JSONDecodeError):
        parse_json("{oops")


def test_yaml_depth_bound_is_exact() -> None:
    """YAML nested exactly MAX_DEPTH levels parses, one more is refused naming its line, block style too."""
    assert parse_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(ValueError, match=r"line 1: nesting deeper than"):
        parse_yaml("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    block = "".join("  " * i + "- \n" for i in range(MAX_DEPTH + 5))
    with pytest.raises(ValueError, match=rf"line {MAX_DEPTH + 1}: nesting deeper than"):
        parse_yaml(block)


def test_yaml_aliases_are_bounded_by_their_expansion() -> None:
    """Ordinary anchors and merge keys load; alias and merge-key bombs and self-reference are refused."""
    ok = parse_yaml("d: &d {model: m, temperature: 0}\nagents: {a: *d, b: {<<: *d, temperature: 1}}\n")
    assert ok["agents"]["b"] == {"model": "m", "temperature": 1}
    merge_bomb = "a0: &a0 {x: 1, y: 2}\n" + "".join(
        f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 10)}]}}\n" for i in range(1, 8)
    )
    for text in (BOMB, merge_bomb):
        with pytest.raises(ValueError, match="expands to more than"):
            parse_yaml(text)
    with pytest.raises(ValueError, match="alias refers to a collection that contains it"):
        parse_yaml("a: &a [1, *a]\n")


def test_aliases_deepen_past_the_bound_are_refused() -> None:
    """Aliases that stack shallow collections into a deep one are refused like written-out nesting."""
    half = MAX_DEPTH // 2 + 1
    text = f"a: &a {'[' * half}1{']' * half}\nb: {'[' * half}*a{']' * half}\n"
    with pytest.raises(ValueError, match="nesting deeper than"):
        parse_yaml(text)


def test_read_document_names_file_and_problem(tmp_path: Path) -> None:
    """Size, type, encoding and syntax problems are each one UserError line naming the file."""
    cases = {
        "big.yaml": (b"a: 1\n" * 100, {"max_bytes": 100}, "over the 100 bytes limit"),
        "bad.json": (b'{\n"a": }', {}, ":2: invalid JSON"),
        "bad.yaml": (b"a: [1,\n", {}, "invalid YAML"),
        "latin.yaml": (b"a: 1\nb: \xff\n", {}, ":2: not UTF-8 text"),
    }
    for name, (raw, kw, expect) in cases.items():
        f = tmp_path / name
        f.write_bytes(raw)
        with pytest.raises(UserError, match=expect) as info:
            read_document(f, **kw)  # type: ignore[arg-type]
        assert str(f) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="is a directory, not a regular file"):
        read_document(tmp_path)
    with pytest.raises(UserError, match="no such file"):
        read_document(tmp_path / "gone.yaml")


def test_open_regular_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    """Opening a FIFO through the safe reader returns at once with an error (checked in a thread with a
    deadline, so a regression fails instead of hanging the suite)."""
    f = tmp_path / "fifo"
    os.mkfifo(f)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            read_regular(f, max_bytes=10)
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(TIMEOUT_S)
    if t.is_alive():  # unblock the thread: a writer makes its open() return
        with open(os.open(f, os.O_WRONLY | os.O_NONBLOCK), "wb"):
            pass
        pytest.fail("read_regular blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], UserError) and "FIFO" in str(outcome[0])
    with pytest.raises(DatasetError, match="FIFO"):
        refuse_special(f, what="dataset", error=DatasetError)


def test_open_regular_reads_a_symlink_to_a_regular_file(tmp_path: Path) -> None:
    """A symlink to a regular file is read like the file; a symlink to a device is refused."""
    (tmp_path / "real.yaml").write_text("a: 1\n")
    (tmp_path / "link.yaml").symlink_to(tmp_path / "real.yaml")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    with open_regular(tmp_path / "link.yaml", max_bytes=100) as f:
        assert f.read() == b"a: 1\n"
    with pytest.raises(UserError, match="character device"):
        read_document(tmp_path / "zero.yaml")


def test_iter_lines_bounds_a_file_that_grows() -> None:
    """Lines are read up to the byte cap in total; a file that grows past it while read is refused."""
    assert list(iter_lines(io.BytesIO(b"a\nb\n"), max_bytes=4, path="x")) == [b"a\n", b"b\n"]
    with pytest.raises(DatasetError, match="x: dataset grew over the 4 bytes limit"):
        list(iter_lines(io.BytesIO(b"a\nbc\n"), max_bytes=4, path="x", what="dataset", error=DatasetError))
    with pytest.raises(UserError, match="grew over"):
        list(iter_lines(io.BytesIO(b"\0" * 1000), max_bytes=10, path="x"))


class _FailingDisk(io.BytesIO):
    """A file whose disk fails after its first line, as a network share that goes away does."""

    def readline(self, size: int | None = -1) -> bytes:
        if self.tell():
            raise OSError(5, "Input/output error")
        return super().readline(size)


def test_iter_lines_turns_a_read_error_into_one_line() -> None:
    """A read that fails halfway is the caller's one-line error naming the file and the last line read."""
    lines = iter_lines(_FailingDisk(b"a\nb\n"), max_bytes=100, path="x", what="dataset", error=DatasetError)
    assert next(lines) == b"a\n"
    with pytest.raises(DatasetError, match=r"^x: cannot read dataset past line 1: Input/output error$"):
        next(lines)


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="Linux's /proc")
def test_a_dataset_that_cannot_be_read_is_one_line() -> None:
    """/proc/self/mem, a regular file whose every read fails, is a DatasetError naming it, not an OSError."""
    with pytest.raises(DatasetError, match=r"^/proc/self/mem: cannot read dataset past line 0: "):
        load_dataset("/proc/self/mem")


def test_nul_path_is_one_line() -> None:
    """A path holding a NUL byte is a UserError, not the ValueError os.stat raises."""
    with pytest.raises(UserError, match="NUL byte"):
        read_regular("a\0b.yaml", max_bytes=10)


def test_dataset_deep_rows_and_cells_name_their_line(tmp_path: Path) -> None:
    """A JSONL row or a CSV `tests` cell nested too deep is a bad row with its line, skippable."""
    jl = tmp_path / "d.jsonl"
    jl.write_text('{"input": "a"}\n{"input": "b", "meta": ' + "[" * 5000 + "\n")
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: nesting deeper than"):
        load_dataset(jl)
    assert [i.input for i in load_dataset(jl, on_bad_row="skip")] == ["a"]
    cv = tmp_path / "d.csv"
    cv.write_text('input,tests\na,"[""x""]"\nb,' + "[" * 5000 + "\n")
    with pytest.raises(DatasetError, match=r"d\.csv:3: `tests`: nesting deeper than"):
        load_dataset(cv)


def test_control_characters_in_names_are_refused() -> None:
    """Control characters in agent names, references, fallbacks and env names are refused naming the field."""
    base = {"name": "t", "kind": "single", "agent": "a", "agents": {"a": {"model": "m"}}}
    cases = [
        ({**base, "agents": {"a\nb": {"model": "m"}}}, "agents: agent name 'a\\nb'"),
        ({**base, "agents": {"a": {"model": "m", "fallbacks": ["x\x1b"]}}}, "agents.a.fallbacks"),
        ({**base, "agents": {"a": {"model": "m", "api_key_env": "K\0"}}}, "agents.a.api_key_env"),
        ({**base, "agent": "a\0"}, "agent: name 'a\\x00'"),
        ({**base, "name": "t\x7f"}, "name: name 't\\x7f'"),
        (
            {"name": "t", "agents": {"a": {"model": "m"}}, "nodes": [{"id": "x", "agent": "a\r"}]},
            "nodes[0] (`x`).agent",
        ),
    ]
    for data, expect in cases:
        with pytest.raises(TopologyError) as info:
            load_data(data)
        assert any(expect in p and "control character" in p for p in info.value.problems), info.value.problems
        assert all("\n" not in p for p in info.value.problems)
    assert load_data({**base, "agents": {"a": {"model": "m", "stop": ["\n\n"]}}}).name == "t"


def test_a_lone_surrogate_in_what_is_sent_to_a_model_is_refused(tmp_path: Path) -> None:
    """A YAML `"\\ud800"` in a system prompt, a stop sequence or a prompt template is refused naming
    the field: `moa validate` passed it, then every call failed to encode its request (a
    ProviderError of the first node to send it)."""
    f = tmp_path / "t.yaml"
    f.write_text(
        'name: t\nagents:\n  a: {model: m, system: "be brief \\ud800", stop: ["\\udfff"]}\n'
        'nodes:\n  - {id: n, agent: a, prompt: "Q: {prompt} \\ud800"}\noutput: n\n'
    )
    with pytest.raises(TopologyError) as info:
        load(f)
    expected = ["agents.a.system", "agents.a.stop", "nodes[0] (`n`).prompt"]
    for field, line in zip(expected, info.value.problems, strict=True):
        assert line.startswith(field) and "lone UTF-16 surrogate" in line, line
    assert load_data(
        {"name": "t", "agents": {"a": {"model": "m", "system": "🙂 é"}}, "kind": "single", "agent": "a"}
    )


def test_presets_still_load() -> None:
    """The bounds leave every shipped preset loadable."""
    from moa.topology.loader import presets

    for path in presets().values():
        load(path)


def test_control_characters_in_experiment_fields_are_refused(tmp_path: Path) -> None:
    """A NUL in an experiment's name, dataset or setup path is a validation line naming the field."""
    from moa.experiment.config import load_spec

    base = "name: e\ndataset: d.jsonl\nevaluator: exact\nbaseline: s.yaml\nsetups: [s.yaml]\n"
    for field, bad in (
        ("name", 'name: "e\\0"'),
        ("dataset", 'dataset: "d\\0.jsonl"'),
        ("setups", 'setups: ["s\\0"]'),
    ):
        f = tmp_path / f"{field}.yaml"
        f.write_text("\n".join(bad if line.startswith(field) else line for line in base.splitlines()) + "\n")
        with pytest.raises(TopologyError, match=rf"{field}.*control character '\\x00'") as info:
            load_spec(f)
        assert str(f) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("field", ["budget_usd", "deadline_s"])
def test_an_infinite_budget_or_deadline_is_refused_by_name(tmp_path: Path, field: str) -> None:
    """`.inf` is no cap and no time limit; the field is left out for that, so `.inf` is read as the
    mistake it likely is (summary.json would hold `Infinity`, which is not JSON)."""
    from moa.experiment.config import load_spec

    f = tmp_path / "exp.yaml"
    f.write_text(
        f"name: e\ndataset: d.jsonl\nevaluator: exact\nbaseline: s.yaml\nsetups: [s.yaml]\n{field}: .inf\n"
    )
    with pytest.raises(TopologyError, match=rf"{field}") as info:
        load_spec(f)
    assert "\n" not in str(info.value)


def test_a_json_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    """Windows editors save one; YAML files and prompt files already dropped it, JSON refused it
    with Python's `decode using utf-8-sig`."""
    f = tmp_path / "t.json"
    data = {"name": "t", "kind": "single", "agents": {"a": {"model": "openai/gpt-4o-mini"}}}
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps(data).encode())
    assert load(f).graph.output == "answer"


@pytest.mark.parametrize("comment", ["// agents below\n", "/* agents */", "# agents\n"])
def test_a_comment_in_a_json_file_is_named_as_one(tmp_path: Path, comment: str) -> None:
    f = tmp_path / "t.json"
    f.write_text('{"name": "t",\n' + comment + '"kind": "single"}')
    with pytest.raises(UserError) as info:
        load(f)
    assert str(info.value).startswith(f"{f}:2: invalid JSON: ")
    assert str(info.value).endswith(
        "(JSON has no comments: remove it, or save the file as .yaml and write `# ...`)"
    )


def test_a_tab_in_a_yaml_file_is_named_as_one(tmp_path: Path) -> None:
    """An editor's tab indent gave PyYAML's "found character '\\t' that cannot start any token",
    which does not say what to type instead."""
    f = tmp_path / "t.yaml"
    f.write_text("name: t\nkind: single\nagent: a\nagents:\n\ta: {model: openai/gpt-4o}\n")
    with pytest.raises(UserError) as info:
        load(f)
    assert str(info.value) == (
        f"{f}:5: invalid YAML: found character '\\t' that cannot start any token "
        "(a tab: YAML indents and separates with spaces)"
    )


@pytest.mark.parametrize("ref", ["../secret.txt", "SECRET_ABS", "prompts/link.txt"])
def test_a_prompt_file_outside_the_topology_folder_is_refused_unread(tmp_path: Path, ref: str) -> None:
    """A prompt file's text is sent to the agent's model (whose `api_base` the file also names):
    a shared topology could send `../../.env` or `~/.aws/credentials` out. It must lie inside the
    topology's folder, symbolic links followed."""
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-TOKEN {prompt}")
    folder = tmp_path / "shared"
    (folder / "prompts").mkdir(parents=True)
    (folder / "prompts" / "link.txt").symlink_to(secret)
    (folder / "prompts" / "ok.txt").write_text("Inside: {prompt}")
    ref = str(secret) if ref == "SECRET_ABS" else ref
    f = folder / "t.yaml"
    f.write_text(
        "name: t\nagents:\n  a: {model: openai/gpt-4o-mini}\n"
        f"nodes:\n  - {{id: x, agent: a, prompt: {ref}}}\n"
    )
    with pytest.raises(TopologyError) as info:
        load(f)
    assert info.value.lines() == [
        f"{f}: nodes[0] (`x`): prompt file `{ref}` is outside the topology's folder {folder.resolve()}: "
        "a prompt file must be inside it (its text is sent to the model)"
    ]
    f.write_text(
        "name: t\nagents:\n  a: {model: openai/gpt-4o-mini}\nnodes:\n  - {id: x, agent: a, prompt: prompts/ok.txt}\n"
    )
    assert load(f).graph.nodes["x"].spec.prompt == "Inside: {prompt}"


def test_agent_names_and_models_cannot_write_mermaid_or_html() -> None:
    """A `"` in an agent name closed the node's label and the rest was read as mermaid (a `click`
    callback); a model string's `<img onerror=...>` was HTML in the label."""
    name = 'a"]; click x call alert(1); y["'
    t = load_data(
        {
            "name": "t",
            "agents": {name: {"model": "x/<img src=x onerror=alert(1)>"}},
            "nodes": [{"id": "x", "agent": name}],
        }
    )
    assert t.to_mermaid().splitlines() == [
        "flowchart LR",
        '  n0["x<br/>a#34;]; click x call alert(1); y[#34;: x/#60;img src=x onerror=alert(1)#62;"]',
    ]


def test_node_ids_mermaid_reserves_do_not_break_the_chart() -> None:
    """A node named `end` closed the flowchart early (mermaid's keyword), and a cascade drew each
    stage's graph under its own node ids, so ids are generated and the node id is the label."""
    t = load_data(
        {
            "name": "t",
            "agents": {"a": {"model": "fake/a"}},
            "nodes": [{"id": "end", "agent": "a"}, {"id": "graph.x-o", "agent": "a", "inputs": ["end"]}],
        }
    )
    assert t.to_mermaid().splitlines() == [
        "flowchart LR",
        '  n0["end<br/>a: fake/a"]',
        '  n1["graph.x-o<br/>a: fake/a"]',
        "  n0 --> n1",
    ]


def test_a_key_pasted_as_api_key_env_is_refused_unshown(tmp_path: Path) -> None:
    """A key written where the variable's name goes was accepted, then printed by the run's
    `... is not set` line (into a terminal, a CI log)."""
    key = "sk-proj-AbCdEf1234567890SECRET"
    f = tmp_path / "t.yaml"
    f.write_text(f"name: t\nkind: single\nagents:\n  a: {{model: openai/gpt-4o-mini, api_key_env: {key}}}\n")
    out = moa("run", f, "--prompt", "hi")
    assert out.returncode == 2
    assert key not in out.stdout + out.stderr
    assert "agents.a.api_key_env: is not the name of an environment variable" in out.stderr
