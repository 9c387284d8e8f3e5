"""What a new user meets first: `moa --version`, global options on either side of the command, prompts
from files, and missing API keys and misspelt providers found before any call, in run, compare and
serve alike."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import moa
from moa.calls.keys import missing_keys, unknown_providers
from moa.errors import TopologyError, UserError
from moa.testing import FunctionModel
from moa.testing.sim import SimModel, SimServer
from moa.topology.loader import load, load_data
from tests.test_cli import moa_cli

KEYS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "TOGETHERAI_API_KEY",
    "TOGETHER_API_KEY",
    "TOGETHER_AI_API_KEY",
)


def _no_keys() -> dict[str, str]:
    return {k: "" for k in KEYS}


def test_version() -> None:
    p = moa_cli("--version")
    assert p.returncode == 0 and p.stdout.startswith(f"moa {moa.__version__} ")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_and_log_before_or_after_the_command(where: str) -> None:
    opts = ["--debug", "--log", "json"]
    args = (
        [*opts, "run", "nope", "--prompt", "x"]
        if where == "before"
        else ["run", "nope", "--prompt", "x", *opts]
    )
    p = moa_cli(*args)
    assert p.returncode == 2 and "Traceback" in p.stderr  # --debug took effect on either side


def test_prompt_from_a_file_and_a_literal_at(tmp_path: Path) -> None:
    prompt = tmp_path / "question.txt"
    prompt.write_text("What is in this file?\n", encoding="utf-8")
    seen: list[str] = []

    def answer(req: object) -> str:
        seen.append(str(req.messages[-1]["content"]))  # type: ignore[attr-defined]
        return "ok"

    with SimServer(models={"sim": SimModel(answer=answer)}) as srv:
        topo = tmp_path / "t.yaml"
        topo.write_text(
            "name: t\nkind: single\nagent: a\nagents:\n"
            f'  a: {{model: openai/sim, api_base: "{srv.base_url}", retry: {{max_attempts: 1}}}}\n'
        )
        assert moa_cli("run", str(topo), "--prompt", f"@{prompt}").returncode == 0
        assert moa_cli("run", str(topo), "--prompt", "@@handle on twitter").returncode == 0
        missing = moa_cli("run", str(topo), "--prompt", f"@{tmp_path / 'nope.txt'}")
    assert seen == ["What is in this file?\n", "@handle on twitter"]
    assert missing.returncode == 2 and missing.stderr.strip().endswith("nope.txt: no such file")


def test_a_node_prompt_naming_a_file_is_read_or_refused(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "agg.txt").write_text("Merge: {references}\nQ: {prompt}")
    doc = (
        "name: pf\nnodes:\n  - {id: a, agent: x}\n  - {id: b, agent: x}\n"
        "  - {id: agg, agent: x, inputs: [a, b], prompt: PROMPT}\nagents:\n  x: {model: fake/m}\n"
    )
    good = tmp_path / "good.yaml"
    good.write_text(doc.replace("PROMPT", "prompts/agg.txt"))
    t = load(good)
    result = t.run_sync("question", runner=moa.Runner(models={"fake/*": FunctionModel(lambda r: "x")}))
    sent = next(c.messages for c in result.calls if c.node == "agg")
    assert (
        sent is not None and sent[-1]["content"].startswith("Merge: ") and "prompts/agg.txt" not in str(sent)
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(doc.replace("PROMPT", "prompts/missing.txt"))
    with pytest.raises(TopologyError, match=r"nodes\[2\] \(`agg`\): prompt names a file that cannot be read"):
        load(bad)
    # a template with placeholders is a template, even when it ends like a file name
    inline = load_data(
        {
            "name": "i",
            "nodes": [
                {"id": "a", "agent": "x"},
                {"id": "agg", "agent": "x", "inputs": ["a"], "prompt": "{references} notes.txt"},
            ],
            "agents": {"x": {"model": "fake/m"}},
        }
    )
    assert inline.graph.output == "agg"


def test_missing_keys_are_named_per_variable_before_any_call(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in KEYS:
        monkeypatch.delenv(k, raising=False)
    t = load("parallel-3")
    pairs = [(f"agents.{n}", a) for n, a in t.agents.items()]
    lines = missing_keys(pairs)
    assert len(lines) == 3 and all("is not set (needed by" in line for line in lines)
    assert any(line.startswith("`OPENAI_API_KEY`") for line in lines)
    # a fake answering every model needs no key: the runner's preflight passes
    fake = moa.Runner(models={"*": FunctionModel(lambda r: "x")})
    fake.preflight(t)
    with pytest.raises(UserError, match="OPENAI_API_KEY") as refused:
        moa.Runner().preflight(t)
    # the line the README quotes for its tour's file, whose agents (as these) name their variable
    said = str(refused.value).splitlines()[0].removeprefix("parallel-3: ")
    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    assert said.startswith("`OPENAI_API_KEY` is not set") and said in readme, said


def test_run_compare_and_serve_refuse_missing_keys_with_exit_2(tmp_path: Path) -> None:
    run = moa_cli("run", "parallel-3", "--prompt", "x", env=_no_keys())
    assert run.returncode == 2 and "OPENAI_API_KEY" in run.stderr and "ANTHROPIC_API_KEY" in run.stderr
    assert "QuorumNotReached" not in run.stderr
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"input": "q", "target": "a"}) + "\n")
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"name: e\ndataset: {data}\nevaluator: exact\nbaseline: single\nsetups: [parallel-3]\n")
    compare = moa_cli("compare", str(exp), "--out", str(tmp_path / "out"), env=_no_keys())
    assert compare.returncode == 2 and "OPENAI_API_KEY" in compare.stderr and "setup `" in compare.stderr
    serve = moa_cli("serve", "parallel-3", "--port", "0", env=_no_keys())
    assert serve.returncode == 2 and "OPENAI_API_KEY" in serve.stderr


def test_validate_catches_a_misspelt_provider_with_did_you_mean(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("name: t\nkind: single\nagent: a\nagents:\n  a: {model: opnai/gpt-4o}\n")
    p = moa_cli("validate", str(f))
    assert p.returncode == 2
    assert "unknown provider `opnai`; did you mean `openai/gpt-4o`?" in p.stderr
    t = load(f)
    assert unknown_providers([("agents.a", t.agents["a"])]) == [
        "agents.a: model `opnai/gpt-4o`: unknown provider `opnai`; did you mean `openai/gpt-4o`?"
    ]


def test_did_you_mean_for_unknown_fields_and_presets(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("name: t\nkind: single\nagent: a\nagents:\n  a: {model: fake/m, temprature: 0.2}\n")
    with pytest.raises(TopologyError) as e:
        load(f)
    assert e.value.problems == ["agents.a.temprature: unknown field; did you mean `temperature`?"]
    with pytest.raises(
        UserError,
        match=r"unknown topology `parallel3`: not a file and not a preset; did you mean `parallel-3`\?",
    ):
        load("parallel3")


async def test_a_budget_refusal_inside_a_quorum_is_budget_exceeded() -> None:
    """Workers refused by the budget leave the quorum unmet: the error says budget, not quorum."""
    t = load_data(
        {
            "name": "q",
            "kind": "parallel",
            "workers": ["w", "w", "w"],
            "aggregator": "w",
            "quorum": 2,
            "agents": {
                "w": {
                    "model": "fake/m",
                    "max_tokens": 1000,
                    "pricing": {"input_per_mtok": 1000, "output_per_mtok": 1000},
                }
            },
        }
    )
    runner = moa.Runner(models={"fake/*": FunctionModel(lambda r: "x")})
    with pytest.raises(moa.BudgetExceeded) as info:
        await t.run("q", runner=runner, budget_usd=0.0001)
    assert not isinstance(info.value, moa.QuorumNotReached) and info.value.needed_usd is not None


def _run_with_stdin(
    topo: Path, stdin: Any, *, closed: bool = False, **popen: Any
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **popen.pop("env", {})}
    cmd = [sys.executable, "-m", "moa", "run", str(topo), "--prompt", "-"]
    if closed:  # `moa run ... <&-`: the shell closes the descriptor before moa starts
        cmd = ["sh", "-c", 'exec "$0" "$@" <&-', *cmd]
    return subprocess.run(
        cmd,
        stdin=stdin,
        capture_output=True,
        env=env,
        timeout=120,
        **popen,
    )


def test_a_prompt_from_stdin_is_read_as_a_prompt_file_is(tmp_path: Path) -> None:
    """`--prompt -` reads UTF-8 whatever the locale (a byte order mark dropped) under the 4 MiB cap of
    `--prompt @FILE`: bytes that are not UTF-8, a closed stdin or `< /dev/zero` are one line and
    exit 2, never a traceback, a "lone surrogate" naming no input, or a read until memory runs out."""
    seen: list[str] = []

    def answer(req: Any) -> str:
        seen.append(str(req.messages[-1]["content"]))
        return "ok"

    with SimServer(models={"sim": SimModel(answer=answer)}) as srv:
        topo = tmp_path / "t.yaml"
        topo.write_text(
            "name: t\nkind: single\nagent: a\nagents:\n"
            f'  a: {{model: openai/sim, api_base: "{srv.base_url}", retry: {{max_attempts: 1}}}}\n'
        )
        ok = _run_with_stdin(topo, None, input="\ufeffWhat is 7 + 5?\n".encode())
        bad = "What is \xff 7 + 5?".encode("latin-1")
        # strict: what Python does under a UTF-8 locale other than C's, where this was a traceback
        strict = _run_with_stdin(topo, None, input=bad, env={"PYTHONIOENCODING": "utf-8:strict"})
        lenient = _run_with_stdin(topo, None, input=bad, env={"PYTHONIOENCODING": "utf-8:surrogateescape"})
        closed = _run_with_stdin(topo, subprocess.DEVNULL, closed=True)
        with open("/dev/zero", "rb") as zero:
            endless = _run_with_stdin(topo, zero)
    assert ok.returncode == 0 and seen == ["What is 7 + 5?\n"]
    said = {
        "not UTF-8": (strict, "moa: --prompt -: stdin is not UTF-8 text (byte 8)"),
        "not UTF-8, read leniently": (lenient, "moa: --prompt -: stdin is not UTF-8 text (byte 8)"),
        "closed": (closed, "moa: --prompt -: stdin is closed"),
        "endless": (endless, "moa: --prompt -: stdin is over the 4 MiB limit"),
    }
    for case, (p, line) in said.items():
        assert (p.returncode, p.stderr.decode().strip()) == (2, line), case
    assert seen == ["What is 7 + 5?\n"]  # nothing else was sent


def test_an_answer_a_stdout_cannot_encode_is_printed_escaped(tmp_path: Path) -> None:
    """On a stdout whose encoding lacks an answer's letters (or `moa compare`'s `×`), `moa run` prints
    them escaped and exits 0, where the finished run ended in a traceback."""
    with SimServer(models={"sim": SimModel(answer=lambda req: "Δ × café")}) as srv:
        topo = tmp_path / "t.yaml"
        topo.write_text(
            "name: t\nkind: single\nagent: a\nagents:\n"
            f'  a: {{model: openai/sim, api_base: "{srv.base_url}", retry: {{max_attempts: 1}}}}\n'
        )
        p = _run_with_stdin(topo, None, input=b"Why?", env={"PYTHONIOENCODING": "ascii"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode("ascii").strip() == "\\u0394 \\xd7 caf\\xe9"


def test_a_prompt_of_a_bare_at_names_the_mistake() -> None:
    """`--prompt @` (no file after the @) says so, rather than "moa: : no such file"."""
    p = moa_cli("run", "local-single", "--prompt", "@")
    assert p.returncode == 2
    assert p.stderr.strip() == (
        "moa: --prompt @ names no file: write @FILE to read the prompt from a file, or @@ for a literal @"
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "the file is empty (or holds only comments): expected a mapping at the top level"),
        (
            "# name: draft\n",
            "the file is empty (or holds only comments): expected a mapping at the top level",
        ),
        ("- a\n- b\n", "expected a mapping at the top level, got a list"),
        ("parallel-3\n", "expected a mapping at the top level, got a single string"),
    ],
)
def test_a_file_that_is_not_a_mapping_says_what_it_holds(tmp_path: Path, text: str, said: str) -> None:
    """An empty topology or experiment file is named empty, not "got NoneType"; a list is "a list"."""
    f = tmp_path / "t.yaml"
    f.write_text(text)
    p = moa_cli("validate", str(f))
    assert p.returncode == 2 and p.stderr.strip() == f"{f}: {said}"
    c = moa_cli("compare", str(f), "--out", str(tmp_path / "out"))
    assert c.returncode == 2 and c.stderr.strip().endswith(f"{f}: {said}")


def test_validate_refuses_an_unknown_local_model(tmp_path: Path) -> None:
    """`local/<name>` naming neither a bundled model nor a file fails `moa validate`, as it fails a run."""
    f = tmp_path / "t.yaml"
    f.write_text(
        "name: t\nkind: single\nagent: a\nagents:\n"
        "  a: {model: local/smollm2, fallbacks: [local/smollm2-135m, local/tiny]}\n"
    )
    p = moa_cli("validate", str(f))
    hint = "use one of local/smollm2-135m, a path such as local/./models/x.gguf, or params.model_path"
    assert p.returncode == 2 and "ok:" not in p.stdout
    assert p.stderr.splitlines() == [
        f"{f}: agent `a`: unknown local model `local/smollm2`: {hint}",
        f"{f}: agent `a`: unknown local model `local/tiny`: {hint}",
    ]
    # a path, or params.model_path, is left to the run: the file may live where the run does
    f.write_text(
        "name: t\nkind: single\nagent: a\nagents:\n  a: {model: local/models/x.gguf}\n"
        "  b: {model: local/mine, params: {model_path: /models/mine.gguf}}\n"
    )
    assert moa_cli("validate", str(f)).returncode == 0


def test_a_run_refuses_an_unknown_local_model_before_any_call() -> None:
    """An aggregator on `local/<typo>` fails the run before its workers are called (and paid), unless a
    backend of the runner answers that model."""
    t = load_data(
        {
            "name": "p",
            "kind": "parallel",
            "workers": ["w", "w"],
            "aggregator": "agg",
            "agents": {"w": {"model": "fake/m"}, "agg": {"model": "local/smollm"}},
        }
    )
    calls: list[str] = []
    runner = moa.Runner(models={"fake/*": FunctionModel(lambda r: calls.append(r.model) or "x")})
    with pytest.raises(UserError, match=r"^p: agent `agg`: unknown local model `local/smollm`: use one of"):
        t.run_sync("q", runner=runner)
    assert calls == []
    answered = moa.Runner(models={"*": FunctionModel(lambda r: "x")})
    assert t.run_sync("q", runner=answered).output == "x"


def test_serve_refuses_an_unknown_local_model_at_startup(tmp_path: Path) -> None:
    """`moa serve` on a topology with `local/<typo>` exits 2 at startup, never serving a first request's 500."""
    f = tmp_path / "t.yaml"
    f.write_text("name: t\nkind: single\nagent: a\nagents:\n  a: {model: local/smollm}\n")
    p = moa_cli("serve", str(f), "--port", "0")
    assert p.returncode == 2
    assert p.stderr.startswith("moa serve: t: agent `a`: unknown local model `local/smollm`: use one of")


@pytest.mark.parametrize("args", [["topologies"], ["schema"], ["validate", "single", "parallel-3"]])
def test_a_closed_pipe_on_stdout_ends_quietly(args: list[str]) -> None:
    """`moa ... | head -1`: a reader that left loses the output, with no traceback; the exit code
    still says how the command went (here: it succeeded)."""
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line is written
    try:
        p = subprocess.run(
            [sys.executable, "-m", "moa", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            timeout=120,
        )
    finally:
        os.close(write)
    assert p.stderr == "" and p.returncode == 0


def test_run_and_serve_refuse_an_embedded_model_this_machine_cannot_run_before_any_call(
    tmp_path: Path,
) -> None:
    """A hosted node before a `local/` one whose GGUF file is missing: exit 2 naming it, nothing paid."""
    with SimServer(models={"sim": SimModel()}) as srv:
        f = tmp_path / "t.yaml"
        f.write_text(
            "name: mixed\nkind: sequential\nsteps: [hosted, here]\nagents:\n"
            f'  hosted: {{model: openai/sim, api_base: "{srv.base_url}"}}\n'
            f"  here: {{model: local/{tmp_path}/missing.gguf}}\n"
        )
        run = moa_cli("run", str(f), "--prompt", "hi")
        serve = moa_cli("serve", str(f), "--port", "0")
        served = srv.stats.served
    assert served == 0
    line = f"GGUF file {tmp_path}/missing.gguf does not exist (needed by agent `here`"
    assert run.returncode == 2 and run.stderr.startswith(f"moa: {f}: model `local/") and line in run.stderr
    assert serve.returncode == 2 and line in serve.stderr


def test_an_embedded_model_without_the_local_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without llama-cpp-python, every agent on an embedded model is named once with the install command."""
    import sys

    from moa._run import every_agent
    from moa.calls.keys import unavailable_local_models

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    lines = unavailable_local_models(every_agent(load("local-self-moa")))
    assert len(lines) == 1 and "pip install 'moa-sdk[local]'" in lines[0]
    assert "agent `sampler` (local/smollm2-135m), agent `aggregator`" in lines[0]


def test_a_stdout_closed_before_the_start_is_not_a_traceback() -> None:
    """`moa validate single >&-`: with stdout closed (None in Python), the command still ends with 0."""
    import subprocess
    import sys

    p = subprocess.run(
        ["sh", "-c", 'exec "$0" -m moa validate single >&-', sys.executable],
        capture_output=True,
        text=True,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        timeout=120,
    )
    assert p.returncode == 0 and p.stderr == ""


def test_a_failed_run_says_what_it_spent_on_its_error_line(tmp_path: Path) -> None:
    """A run whose second step fails after a priced first call names that spend on its one error line."""
    with SimServer(models={"sim": SimModel()}) as srv:
        f = tmp_path / "t.yaml"
        price = "pricing: {input_per_mtok: 1000000, output_per_mtok: 0}"
        f.write_text(
            "name: t\nkind: sequential\nsteps: [a, b]\nagents:\n"
            f'  a: {{model: openai/sim, api_base: "{srv.base_url}", {price}}}\n'
            f'  b: {{model: openai/gone, api_base: "{srv.base_url}", {price}, retry: {{max_attempts: 1}}}}\n'
        )
        p = moa_cli("run", str(f), "--prompt", "hello")
        paid = srv.stats.prompt_tokens * 1.0  # $1 a prompt token, the failed call's 404 unbilled
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and paid > 0
    assert p.stderr.startswith("moa: run failed: ") and f"(2 calls made: ${paid:.6f})" in p.stderr


def test_a_file_given_to_the_wrong_command_says_which_command_it_is_for(tmp_path: Path) -> None:
    """An experiment file given to `moa run` / `moa validate`, or a topology file to `moa compare`,
    listed every field as unknown without saying what the file was."""
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: e\ndataset: d.jsonl\nevaluator: exact\nbaseline: single\nsetups: [parallel-3]\n")
    topo = tmp_path / "topo.yaml"
    topo.write_text("name: t\nkind: single\nagent: a\nagents:\n  a: {model: openai/gpt-4o-mini}\n")
    for p in (moa_cli("validate", str(exp)), moa_cli("run", str(exp), "--prompt", "hi")):
        assert p.returncode == 2
        assert (
            "this is an experiment file (`dataset`, `setups`): run it with `moa compare`"
            in p.stdout + p.stderr
        )
    p = moa_cli("compare", str(topo))
    assert (
        p.returncode == 2 and "this is a topology file (`kind`, `agents`): run it with `moa run`" in p.stderr
    )


def test_validate_refuses_a_bare_model_name_litellm_cannot_route(tmp_path: Path) -> None:
    """`model: gpt4o` (no provider, none litellm can infer) fails every call: validate says so, exit 2."""
    f = tmp_path / "t.yaml"
    f.write_text("name: t\nkind: single\nagent: a\nagents:\n  a: {model: gpt4o}\n")
    p = moa_cli("validate", str(f))
    assert p.returncode == 2 and "ok:" not in p.stdout
    assert "model `gpt4o`: litellm knows no provider for it" in p.stderr


async def test_a_bare_model_name_litellm_cannot_route_is_refused_before_any_call() -> None:
    """The unroutable step comes second: before, the first step was sent, and paid for, first."""
    t = load_data(
        {
            "name": "s",
            "kind": "sequential",
            "steps": ["draft", "revise"],
            "agents": {"draft": {"model": "fake/m"}, "revise": {"model": "claude-haiku"}},
        }
    )
    fake = FunctionModel(lambda r: "a draft")
    with pytest.raises(UserError, match="model `claude-haiku`: litellm knows no provider") as info:
        await t.run("q", runner=moa.Runner(models={"fake/*": fake}))
    assert fake.calls == [] and info.value.calls == []


def test_bare_model_names_litellm_routes_or_moa_sends_directly_pass() -> None:
    """A bare name litellm infers a provider for, one the direct path sends as written, or one a
    runner's own backend answers, is no problem."""
    agents = [
        ("a", moa.AgentSpec(model="gpt-4o")),
        ("b", moa.AgentSpec(model="served", api_base="http://127.0.0.1:9/v1", transport="openai-http")),
        ("c", moa.AgentSpec(model="mine")),
        ("d", moa.AgentSpec(model="served", params={"custom_llm_provider": "openai"})),
    ]
    assert unknown_providers(agents, answered=lambda m: m == "mine") == []


@pytest.mark.parametrize("typed", ["local-single.yaml", "topologies/parallel-3.yaml"])
def test_a_preset_written_as_a_missing_file_names_the_preset(tmp_path: Path, typed: str) -> None:
    """`moa run topologies/parallel-3.yaml` outside a checkout (or `local-single.yaml`) said only
    "no such file"; the preset of that name is what runs."""
    with pytest.raises(UserError) as info:
        load(tmp_path / typed)
    stem = Path(typed).stem
    assert str(info.value) == f"{tmp_path / typed}: no such file; did you mean the preset `{stem}`?"


def test_a_dataset_given_as_a_topology_says_what_it_is(tmp_path: Path) -> None:
    """`moa run data.jsonl` or `moa validate data.jsonl` read the rows as YAML: "expected
    '<document start>'", with no word of what the file is for."""
    data = tmp_path / "data.jsonl"
    data.write_text('{"input": "q1", "target": "a"}\n{"input": "q2", "target": "b"}\n')
    said = (
        f"{data}: a dataset, not a topology file: run a topology on one prompt, or compare topologies "
        "over the dataset with `moa compare` and an experiment file naming it as `dataset:`"
    )
    with pytest.raises(UserError) as info:
        load(data)
    assert str(info.value) == said
    p = moa_cli("validate", str(data))
    assert p.returncode == 2 and p.stderr == said + "\n"
