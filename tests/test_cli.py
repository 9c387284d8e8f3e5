"""The `moa` command: exit codes, one-line errors, the stable --json fields."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from moa.cli import main
from moa.testing.sim import SimModel, SimServer

ROOT = Path(__file__).resolve().parent.parent


def moa_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "moa", *args],
        capture_output=True,
        text=True,
        env=e,
        cwd=ROOT,
        timeout=120,
        input=stdin,
    )


def test_topologies_lists_presets(capsys: pytest.CaptureFixture[str]) -> None:
    """`moa topologies` lists every preset with a description."""
    assert main(["topologies"]) == 0
    out = capsys.readouterr().out
    for name in ("single", "sequential-refine", "parallel-3", "hierarchical", "moa-2x3", "self-moa-4"):
        assert any(line.startswith(name + " ") for line in out.splitlines())


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file exits 0."""
    assert main(["validate", str(ROOT / "topologies" / "parallel-3.yaml")]) == 0
    assert "ok:" in capsys.readouterr().out


def test_validate_bad_file_exit_2_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken file exits 2 with one stderr line per problem, each naming the file."""
    f = tmp_path / "bad.yaml"
    f.write_text(
        "name: b\nagents: {a: {model: m, temperature: -1}}\nnodes: [{id: x, agent: a, inputs: [y]}]\n"
    )
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert all(line.startswith(str(f) + ": ") for line in err)


def test_validate_names_an_unknown_provider_inside_a_cascade_stage_or_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cascade whose stage topology (or judge topology) names an unknown provider is invalid,
    one line each naming the stage, though the cascade's own agents are fine."""
    (tmp_path / "stage.yaml").write_text("name: stg\nkind: single\nagents:\n  a: {model: opnai/gpt-4o}\n")
    (tmp_path / "rater.yaml").write_text("name: rt\nkind: single\nagents:\n  r: {model: antropic/x}\n")
    f = tmp_path / "casc.yaml"
    f.write_text(
        "name: casc\nkind: cascade\nstages:\n"
        "  - {agent: mini, accept: {judge: {topology: rater.yaml, threshold: 0.5}}}\n"
        "  - {topology: stage.yaml}\n"
        "agents:\n  mini: {model: openai/gpt-4o-mini}\n"
    )
    assert main(["validate", str(f)]) == 2
    captured = capsys.readouterr()
    assert "ok:" not in captured.out
    assert captured.err.strip().splitlines() == [
        f"{f}: stage 1 judge: agent `r`: model `antropic/x`: unknown provider `antropic`; did you "
        "mean `anthropic/x`?",
        f"{f}: stage 2 (topology `stg`): agent `a`: model `opnai/gpt-4o`: unknown provider `opnai`; "
        "did you mean `openai/gpt-4o`?",
    ]


def test_validate_warns_of_an_agent_no_node_uses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An agent declared in `agents:` that no node names (a typo'd reference, dead config) gets one
    warning line naming it, validation still passes, and its model is not checked (a run never
    calls it): `validate` said nothing of it before."""
    f = tmp_path / "typo.yaml"
    f.write_text(
        "name: typo\nagents:\n  writer: {model: openai/gpt-4o-mini}\n  writter: {model: opnai/gpt-4o}\n"
        "  spare: {model: anthropic/claude-haiku-4-5}\nnodes: [{id: a, agent: writer}]\noutput: a\n"
    )
    assert main(["validate", str(f)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"ok: {f} ")
    assert captured.err.strip().splitlines() == [
        f"{f}: warning: agent `writter` is declared but no node uses it",
        f"{f}: warning: agent `spare` is declared but no node uses it",
    ]


def test_validate_warns_of_a_model_nothing_prices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model neither litellm's price map nor the agent's `pricing` prices costs $0 in every record
    and report, so the setup looks free: one warning line, naming a priced model it is close to
    (a typo); validation still passes (one's own server's model is often unpriced on purpose). A
    model the agent prices, a priced fallback and the embedded model get no warning."""
    f = tmp_path / "prices.yaml"
    f.write_text(
        "name: prices\nagents:\n"
        "  typo: {model: openai/gpt-4o-mnii, fallbacks: [openai/gpt-4o-mini, openai/house-2]}\n"
        "  house: {model: openai/house-1, pricing: {input_per_mtok: 1.0, output_per_mtok: 2.0}}\n"
        "  mine: {model: local/smollm2-135m}\n"
        "nodes: [{id: a, agent: typo}, {id: b, agent: house}, {id: c, agent: mine, inputs: [a, b]}]\n"
        "output: c\n"
    )
    assert main(["validate", str(f)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"ok: {f} ")
    unpriced = "is not in litellm's price map, so its calls cost $0 in every record and report"
    assert captured.err.strip().splitlines() == [
        f"{f}: agent `typo`: warning: model `openai/gpt-4o-mnii` {unpriced} (set the agent's `pricing`); "
        "did you mean `openai/gpt-4o-mini`?",
        f"{f}: agent `typo`: warning: model `openai/house-2` {unpriced} (set the agent's `pricing`)",
    ]


def test_validate_does_not_warn_of_agents_that_shorthands_or_cascade_stages_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Agents that a shorthand's nodes or a cascade's inline stage use are not unused: every preset
    and a cascade validate without a warning."""
    f = tmp_path / "casc.yaml"
    f.write_text(
        "name: casc\nkind: cascade\nstages:\n  - {agent: mini, samples: 2, accept: {agree: 2}}\n"
        "  - {agent: big}\nagents:\n  mini: {model: openai/gpt-4o-mini, temperature: 0.7}\n  big: {model: openai/gpt-4o}\n"
    )
    presets = sorted(str(p) for p in (ROOT / "topologies").glob("*.yaml"))
    assert main(["validate", str(f), *presets]) == 0
    assert capsys.readouterr().err == ""


def test_validate_warns_of_an_unused_agent_in_a_cascade_stage_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An agent declared in a cascade stage's own topology file that none of that file's nodes names
    is warned of too, the line naming the stage and its file (only the cascade file was looked at)."""
    (tmp_path / "draft.yaml").write_text(
        "name: draft\nagents:\n  writer: {model: openai/gpt-4o-mini}\n  writter: {model: openai/gpt-4o}\n"
        "nodes: [{id: a, agent: writer}]\noutput: a\n"
    )
    f = tmp_path / "casc.yaml"
    f.write_text(
        "name: casc\nkind: cascade\nstages:\n  - {agent: mini, samples: 2, accept: {agree: 2}}\n"
        "  - {topology: draft.yaml}\nagents:\n  mini: {model: openai/gpt-4o-mini, temperature: 0.7}\n"
    )
    assert main(["validate", str(f)]) == 0
    assert capsys.readouterr().err.strip().splitlines() == [
        f"{f}: stage 2 (`draft.yaml`): warning: agent `writter` is declared but no node uses it"
    ]


def test_run_unknown_preset_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown topology is bad input: exit 2, one line, no traceback."""
    assert main(["run", "nope-preset", "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moa: unknown topology `nope-preset`") and "Traceback" not in err


def _topology(tmp_path: Path, base: str, *, fail: bool = False) -> Path:
    f = tmp_path / "p3.yaml"
    model = "openai/missing" if fail else "openai/sim"
    f.write_text(f"""
name: p3
kind: parallel
workers: [a, b, c]
aggregator: a
agents:
  a: {{model: {model}, api_base: "{base}", api_key_env: MOA_SIM_KEY, transport: litellm, retry: {{max_attempts: 1}},
      pricing: {{input_per_mtok: 1, output_per_mtok: 1}}}}
  b: {{model: openai/sim, api_base: "{base}", api_key_env: MOA_SIM_KEY, transport: litellm}}
  c: {{model: openai/sim, api_base: "{base}", api_key_env: MOA_SIM_KEY, transport: litellm}}
""")
    return f


def test_run_json_has_stable_fields(tmp_path: Path) -> None:
    """`moa run --json` against an OpenAI-compatible endpoint prints the stable RunResult fields."""
    with SimServer(models={"sim": SimModel(latency_s=0.05)}) as srv:
        p = moa_cli(
            "run",
            str(_topology(tmp_path, srv.base_url)),
            "--prompt",
            "hello",
            "--json",
            env={"MOA_SIM_KEY": "k"},
        )
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    for key in ("output", "usage", "cost_usd", "latency_s", "critical_path_s", "calls", "nodes"):
        assert key in data
    assert set(data["usage"]) >= {"prompt_tokens", "completion_tokens"}
    assert len(data["calls"]) == 4
    for c in data["calls"]:
        assert set(c) >= {"node", "model", "usage", "cost_usd", "latency_s", "attempts", "error"}
    assert data["critical_path_s"] >= 0.1 - 0.01
    # the first calls through litellm wait for its import and its worker threads (seconds on a busy
    # machine) before anything is sent: that wait is their queued_s, not latency, so the run's wall
    # time is the critical path plus the longest such wait, and not more
    queued = max(c["queued_s"] for c in data["calls"])
    assert data["critical_path_s"] <= data["latency_s"] < data["critical_path_s"] + queued + 1.0


def test_run_failure_exit_1_keeps_calls(tmp_path: Path) -> None:
    """A failed run exits 1 with one stderr line, and --json still prints the calls made."""
    with SimServer(models={"sim": SimModel()}) as srv:
        p = moa_cli(
            "run",
            str(_topology(tmp_path, srv.base_url, fail=True)),
            "--prompt",
            "hello",
            "--json",
            env={"MOA_SIM_KEY": "k"},
        )
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and "RequestRejected" in p.stderr and "Traceback" not in p.stderr
    data = json.loads(p.stdout)
    assert len(data["calls"]) >= 1 and "error" in data


def test_run_plain_prints_answer_and_summary(tmp_path: Path) -> None:
    """Without --json the answer goes to stdout and a cost/latency line to stderr; --stream streams."""
    with SimServer(models={"sim": SimModel()}) as srv:
        f = _topology(tmp_path, srv.base_url)
        p = moa_cli("run", str(f), "--prompt", "-", stdin="hello from stdin", env={"MOA_SIM_KEY": "k"})
        s = moa_cli("run", str(f), "--prompt", "hello", "--stream", env={"MOA_SIM_KEY": "k"})
    assert p.returncode == 0 and p.stdout.startswith("answer from sim")
    assert "cost $" in p.stderr and "critical path" in p.stderr
    assert s.returncode == 0 and s.stdout.strip() == p.stdout.strip()


def test_a_streamed_answer_cut_by_a_failure_ends_its_line(tmp_path: Path) -> None:
    """`--stream` printed part of the answer, then the run failed (here its deadline): the answer had
    no closing newline, so on a terminal the error line went on after it."""
    slow = SimModel(answer=" ".join(["word"] * 400), stream_chunk_delay_s=0.25)
    with SimServer(models={"sim": slow}) as srv:
        # one call on the direct path: the deadline is spent on the stream, not on importing litellm
        # and three workers first (on a busy machine that took the whole 8 s before any token)
        f = tmp_path / "one.yaml"
        f.write_text(
            f"name: one\nkind: single\nagent: a\nagents:\n  a: {{model: openai/sim, api_base: "
            f'"{srv.base_url}", api_key_env: MOA_SIM_KEY, transport: openai-http}}\n'
        )
        p = moa_cli("run", str(f), "hello", "--stream", "--deadline-s", "8", env={"MOA_SIM_KEY": "k"})
    assert p.returncode == 1, p.stderr
    assert p.stdout.startswith("word") and p.stdout.endswith("\n") and not p.stdout.endswith("\n\n")
    assert p.stdout.count("\n") == 1


def test_run_takes_the_prompt_as_an_argument_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`moa run TOPOLOGY PROMPT` is `--prompt PROMPT` (it was a usage error); none or both is one
    line naming both spellings, before the topology is even read."""
    with SimServer(models={"sim": SimModel()}) as srv:
        f = _topology(tmp_path, srv.base_url)
        p = moa_cli("run", str(f), "hello", env={"MOA_SIM_KEY": "k"})
    assert p.returncode == 0 and p.stdout.startswith("answer from sim"), p.stderr
    for argv, said in (
        (["run", "nope-preset"], "no prompt"),
        (["run", "nope-preset", "x", "--prompt", "y"], "the prompt twice, as PROMPT and as --prompt"),
    ):
        assert main(argv) == 2
        assert capsys.readouterr().err == (
            f"moa: run: {said}: give it once (moa run TOPOLOGY PROMPT, or --prompt PROMPT)\n"
        )


def test_run_says_which_usage_moa_estimated(tmp_path: Path) -> None:
    """A provider that reports zero usage: `moa run` says on its summary line how many calls' tokens
    are moa's estimate, and --json flags each such call and counts them."""
    zeros = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    with SimServer(models={"sim": SimModel(reported_usage=zeros)}) as srv:
        f = _topology(tmp_path, srv.base_url)
        plain = moa_cli("run", str(f), "--prompt", "hello", env={"MOA_SIM_KEY": "k"})
        as_json = moa_cli("run", str(f), "--prompt", "hello", "--json", env={"MOA_SIM_KEY": "k"})
    assert plain.returncode == 0 and as_json.returncode == 0, plain.stderr + as_json.stderr
    assert "tokens (4 call(s) estimated: no usage reported)" in plain.stderr, plain.stderr
    data = json.loads(as_json.stdout)
    assert data["usage_estimated_calls"] == 4 and data["usage_suspect_calls"] == 0
    assert all(c["usage_estimated"] for c in data["calls"]) and data["usage"]["prompt_tokens"] > 0


def test_debug_shows_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """--debug adds the traceback to the error."""
    assert main(["--debug", "run", "nope-preset", "--prompt", "x"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_schema_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`moa schema` prints the topology JSON Schema."""
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "moa topology"


def test_run_json_trace_adds_messages_and_replies(tmp_path: Path) -> None:
    """`moa run --json --trace` adds each call's messages and reply; plain --json does not."""
    with SimServer(models={"sim": SimModel(answer="traced answer")}) as srv:
        topo = str(_topology(tmp_path, srv.base_url))
        args = ("run", topo, "--prompt", "hello trace", "--json")
        plain = moa_cli(*args, env={"MOA_SIM_KEY": "k"})
        traced = moa_cli(*args, "--trace", env={"MOA_SIM_KEY": "k"})
    assert plain.returncode == 0 and traced.returncode == 0, traced.stderr
    assert all("messages" not in c for c in json.loads(plain.stdout)["calls"])
    calls = json.loads(traced.stdout)["calls"]
    assert calls and all(c["reply"] == "traced answer" for c in calls)
    assert any(m["content"] == "hello trace" for c in calls for m in c["messages"])


def test_trace_without_json_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """`moa run --trace` without `--json` is one line and exit 2 before anything loads: the answer
    was printed and the trace asked for silently dropped."""
    assert main(["run", "no-such-topology", "--prompt", "x", "--trace"]) == 2
    assert capsys.readouterr().err.strip() == (
        "moa: --trace is only read with --json (it adds each call's messages and reply to it)"
    )


def test_deadline_on_the_litellm_path_prints_no_never_awaited_warning(tmp_path: Path) -> None:
    """A run cut by --deadline-s while litellm is mid-call ends with exit 1 and one line, without
    the `coroutine ... was never awaited` RuntimeWarning litellm's dropped inner call would print."""
    with SimServer(models={"sim": SimModel(latency_s=5.0)}) as srv:
        p = moa_cli(
            "run",
            str(_topology(tmp_path, srv.base_url)),
            "--prompt",
            "hello",
            "--deadline-s",
            "0.5",
            env={"MOA_SIM_KEY": "k", "PYTHONWARNINGS": "default"},
        )
    assert p.returncode == 1, p.stderr
    assert "never awaited" not in p.stderr and "RuntimeWarning" not in p.stderr, p.stderr
    assert "deadline" in p.stderr.lower() or "TimedOut" in p.stderr


def test_run_reports_cost_and_tokens_per_node_and_per_model(tmp_path: Path) -> None:
    """The RunResult's by_node/by_model in --json, and the same on the summary lines."""
    with SimServer(models={"sim": SimModel(answer="four words right here")}) as srv:
        topo = str(_topology(tmp_path, srv.base_url))
        js = moa_cli("run", topo, "--prompt", "hello", "--json", env={"MOA_SIM_KEY": "k"})
        plain = moa_cli("run", topo, "--prompt", "hello", env={"MOA_SIM_KEY": "k"})
    data = json.loads(js.stdout)
    assert set(data["by_node"]) == {c["node"] for c in data["calls"]}
    assert sum(v["calls"] for v in data["by_model"].values()) == len(data["calls"])
    assert sum(v["cost_usd"] for v in data["by_node"].values()) == pytest.approx(data["cost_usd"])
    assert "  by node: " in plain.stderr and "  by model: openai/sim $" in plain.stderr


def test_run_serve_and_preflight_name_every_stages_missing_key_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of a cascade whose stages each lack a key names every one of them, not stage 1's
    alone, one line each naming the stage and agent, as `moa serve` names them at startup."""
    import moa
    from moa.serve.cli import add_parser

    for var in ("MOA_TEST_CLI_NOPE1", "MOA_TEST_CLI_NOPE2", "MOA_TEST_CLI_NOPE3"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "s2.yaml").write_text(
        "name: s2\nkind: single\nagents:\n  a: {model: openai/x, api_key_env: MOA_TEST_CLI_NOPE2}\n"
    )
    (tmp_path / "rater.yaml").write_text("name: rt\nkind: single\nagents:\n  r: {model: antropic/x}\n")
    f = tmp_path / "c.yaml"
    f.write_text(
        "name: c\nkind: cascade\nstages:\n"
        "  - {agent: mini, samples: 2, accept: {judge: {topology: rater.yaml, threshold: 0.5}}}\n"
        "  - {topology: s2.yaml, accept: {judge: {agent: mini, threshold: 0.5}}}\n"
        "  - {agent: big}\n"
        "agents:\n  mini: {model: openai/m, api_key_env: MOA_TEST_CLI_NOPE1, temperature: 0.7}\n"
        "  big: {model: anthropic/b, api_key_env: MOA_TEST_CLI_NOPE3}\n"
    )
    expected = [
        "stage 1 judge: agent `r`: model `antropic/x`: unknown provider `antropic`; did you mean `anthropic/x`?",
        "`MOA_TEST_CLI_NOPE1` is not set (needed by stage 1 (agent `mini` x2): agent `mini` (openai/m, "
        "api_key_env), stage 2 judge: agent `mini` (openai/m, api_key_env))",
        "`MOA_TEST_CLI_NOPE2` is not set (needed by stage 2 (topology `s2`): agent `a` (openai/x, api_key_env))",
        "`MOA_TEST_CLI_NOPE3` is not set (needed by stage 3 (agent `big` x1): agent `big` (anthropic/b, api_key_env))",
    ]
    with pytest.raises(moa.UserError) as info:
        moa.Runner().preflight(moa.load(f))
    assert str(info.value).splitlines() == [f"c: {line}" for line in expected]

    assert main(["run", str(f), "--prompt", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"moa: c: {expected[0]}", *(f"c: {line}" for line in expected[1:])]

    parser = __import__("argparse").ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", str(f), "--port", "0"])
    assert args.func(args) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"moa serve: c: {line}" for line in expected]


def test_summary_lines_show_each_shares_worst_case_and_a_cascades_stages() -> None:
    """A node or model whose calls were cut off in flight shows "(up to $...)" beside its known
    cost on `moa run`'s summary lines, as the run's total does; a cascade gets a line by stage."""
    from moa.cli import _summary_line
    from moa.results import Attempt, CallRecord, RunResult, Usage

    cut = CallRecord(
        node="s1.worker",
        model="m1",
        cost_usd=0.0,
        error="TimedOut: cut",
        attempt_log=[Attempt("timeout", 1.0, None, "cut", worst_case_usd=0.25)],
    )
    ok = CallRecord(node="s2.answer", model="m2", usage=Usage(3, 4), cost_usd=0.5)
    result = RunResult(
        output="x",
        topology="t",
        usage=Usage(3, 4),
        cost_usd=0.5,
        latency_s=1.0,
        critical_path_s=1.0,
        calls=[cut, ok],
        nodes={},
        stage=2,
    )
    line = _summary_line(result)
    assert "by node: s1.worker $0.000000 (up to $0.250000) 0+0 tok, s2.answer $0.500000 3+4 tok" in line
    assert "by model: m1 $0.000000 (up to $0.250000)" in line
    assert "by stage: 1 $0.000000 (up to $0.250000) 0+0 tok, 2 $0.500000 3+4 tok" in line


def test_validate_warns_of_a_service_tier_nothing_knows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`params: {service_tier: priorty}` (a typo) is sent as is and held and billed at the standard
    tier: one warning per model whose price map entry lists tiers, naming them and the likely tier;
    a tier OpenAI documents (`scale`), a priced one (`flex`), and a model the map lists no tiers for
    get none. Validation still passes."""
    f = tmp_path / "tiers.yaml"
    f.write_text(
        "name: tiers\nagents:\n"
        "  typo: {model: openai/gpt-4o, params: {service_tier: priorty}}\n"
        "  fine: {model: openai/gpt-5, params: {service_tier: flex}}\n"
        "  scaled: {model: openai/gpt-4o, params: {service_tier: scale}}\n"
        "  other: {model: anthropic/claude-sonnet-4-5, params: {service_tier: priorty}}\n"
        "nodes: [{id: a, agent: typo}, {id: b, agent: fine}, {id: c, agent: scaled}, {id: d, agent: other},\n"
        "  {id: e, agent: fine, inputs: [a, b, c, d]}]\n"
        "output: e\n"
    )
    assert main(["validate", str(f)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"ok: {f} ")
    assert captured.err.strip().splitlines() == [
        f"{f}: agent `typo`: warning: model `openai/gpt-4o`: `service_tier: priorty` is no tier the price map "
        "prices the model at (priority) nor one OpenAI documents (auto, default, flex, scale, priority): it is "
        "sent as is, and its calls are held and billed at the standard tier; did you mean `priority`?"
    ]


def _write_one_sim_agent(f: Path, srv: SimServer) -> dict[str, str]:
    """A one-agent topology on the simulated server at ``f``; the environment that keys it."""
    f.write_text(
        "name: one\nkind: single\nagent: a\nagents:\n"
        f'  a: {{model: openai/sim, api_base: "{srv.base_url}", api_key_env: MOA_SIM_KEY}}\n'
    )
    return {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "MOA_SIM_KEY": "k"}


@pytest.mark.parametrize("flags", [[], ["--json"], ["--stream"]])
def test_a_reader_that_leaves_early_loses_the_answer_not_the_account(
    tmp_path: Path, flags: list[str]
) -> None:
    """`moa run ... | head -1`: stdout's reader is gone before the answer is printed. The run
    still exits 0 with its cost line on stderr, and no BrokenPipeError traceback."""
    f = tmp_path / "one.yaml"
    with SimServer(models={"sim": SimModel()}) as srv:
        env = _write_one_sim_agent(f, srv)
        proc = subprocess.Popen(
            [sys.executable, "-m", "moa", "run", str(f), "--prompt", "hello", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader leaves before the run can have answered
        err = proc.stderr.read()
        code = proc.wait(timeout=120)
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert err.startswith("cost $") and ", 1 call, " in err


def test_with_stderr_closed_the_answer_stays_alone_on_stdout(tmp_path: Path) -> None:
    """`moa run ... 2>&-`: Python's stderr is None, and print(file=None) writes to stdout; the cost
    line landed in the answer (and would in `--json`'s JSON)."""
    f = tmp_path / "one.yaml"
    with SimServer(models={"sim": SimModel()}) as srv:
        env = _write_one_sim_agent(f, srv)
        p = subprocess.run(
            ["sh", "-c", 'exec "$0" -m moa run "$1" --prompt hello 2>&-', sys.executable, str(f)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )
    assert p.returncode == 0
    assert p.stdout.startswith("answer from sim") and "cost $" not in p.stdout


def test_main_writes_to_a_stdout_whose_write_returns_nothing() -> None:
    """A host's stdout object (an IDE console, a log adapter) whose write returns None, as
    file-likes may: main's guard against a closed pipe passes the text on and counts it itself."""
    import contextlib

    class _Console:
        def __init__(self) -> None:
            self.text: list[str] = []

        def write(self, text: str) -> None:
            self.text.append(text)

        def flush(self) -> None:
            pass

    console = _Console()
    with contextlib.redirect_stdout(console):
        assert main(["topologies"]) == 0
    assert "parallel-3" in "".join(console.text)


def test_validate_counts_every_stage_of_a_cascade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`moa validate` on a cascade counts its stages and all their nodes, a judge's included, not
    the last stage's graph alone (`1 nodes` for two stages of 3 nodes)."""
    f = tmp_path / "c.yaml"
    f.write_text(
        "name: c\nkind: cascade\nagents:\n  a: {model: openai/gpt-4o-mini, temperature: 0.7}\n"
        "  r: {model: openai/gpt-4o-mini}\n"
        "stages:\n  - {agent: a, samples: 2, accept: {judge: {agent: r, threshold: 0.8}}}\n"
        "  - {agent: a}\n"
    )
    assert main(["validate", str(f)]) == 0
    # s1.sample1, s1.sample2, s1.vote, s1.judge.rate, s2.answer
    assert capsys.readouterr().out.strip() == f"ok: {f} (c: 2 stages, 5 nodes, output `s2.answer`)"


def test_prompt_errors_name_the_positional_prompt_when_that_is_what_was_typed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moa run TOPOLOGY @DIR`, `... @` or `... -` with stdin not UTF-8: the error names PROMPT,
    what the user typed, not a --prompt they never gave; --prompt's errors still name --prompt."""
    for argv, said in (
        (["run", "single", "@"], "moa: PROMPT @ names no file: "),
        (["run", "single", f"@{tmp_path}"], f"moa: {tmp_path}: PROMPT file is a directory"),
        (["run", "single", "--prompt", f"@{tmp_path}"], f"moa: {tmp_path}: --prompt file is a directory"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(said) and err.count("\n") == 1, err
    p = subprocess.run(
        [sys.executable, "-m", "moa", "run", "single", "-"],
        input=b"\xff",
        capture_output=True,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        cwd=ROOT,
        timeout=120,
    )
    assert p.returncode == 2 and p.stderr.startswith(b"moa: PROMPT -: stdin is not UTF-8 text"), p.stderr


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-1", "-inf"])
def test_run_and_compare_refuse_the_same_budgets_naming_the_flag(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--budget-usd inf` ran uncapped under `moa run` and was refused by `moa compare`, which
    refused `nan` in argparse but `inf` in its file's schema (naming the file, not the flag): one
    parser now refuses each value for both, before the topology or experiment is read."""
    said = []
    for argv in (["run", "nope.yaml", "hi"], ["compare", "nope.yaml"]):
        with pytest.raises(SystemExit) as info:
            main([*argv, f"--budget-usd={value}"])
        assert info.value.code == 2
        err = capsys.readouterr().err.splitlines()[-1]
        said.append(err.split(": error: ", 1)[1])
    refusal = f"must be a finite amount in USD >= 0 (leave it out for no cap), got '{value}'"
    assert said == [f"argument --budget-usd: {refusal}"] * 2


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_run_refuses_a_deadline_naming_the_flag(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--deadline-s 0` or `nan` was refused by the Python API's check, naming `deadline_s`, after
    the topology was read: now argparse refuses it naming the flag."""
    with pytest.raises(SystemExit) as info:
        main(["run", "nope.yaml", "hi", f"--deadline-s={value}"])
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.split(": error: ", 1)[1].startswith("argument --deadline-s: ")
    assert repr(value) in err


def test_human_lines_count_one_thing_in_the_singular(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moa validate` of a single said `1 nodes`, a failed run's line `(1 calls made: ...)`."""
    from moa.cli import _spent
    from moa.results import CallRecord, Usage

    f = tmp_path / "one.yaml"
    f.write_text("name: one\nkind: single\nagent: a\nagents:\n  a: {model: openai/gpt-4o-mini}\n")
    assert main(["validate", str(f)]) == 0
    assert capsys.readouterr().out.strip() == f"ok: {f} (one: 1 node, output `answer`)"
    call = CallRecord(node="answer", model="m", usage=Usage(1, 1), cost_usd=0.5)
    assert _spent([call]) == " (1 call made: $0.500000)"
    assert _spent([call, call]) == " (2 calls made: $1.000000)"


def test_debug_prints_each_line_of_a_many_problem_error_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moa --debug run` on a file with several problems printed the message whole, then its
    lines after the first again: each problem twice below the traceback."""
    f = tmp_path / "two.yaml"
    f.write_text("name: two\nkind: single\nagent: a\nagentz: 1\n")
    assert main(["--debug", "run", str(f), "x"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    tail = err[err.index(f"moa: {f}: ") :].splitlines()
    assert len(tail) == 3 and len(set(tail)) == 3, tail


def test_with_log_json_every_stderr_line_of_a_run_is_json(tmp_path: Path) -> None:
    """`moa run --log json`: the cost line was a plain line among the JSON events (a reader of
    JSON lines failed on it); it is a `run.summary` event, as compare's closing line is one."""
    f = tmp_path / "one.yaml"
    with SimServer(models={"sim": SimModel()}) as srv:
        env = _write_one_sim_agent(f, srv)
        p = subprocess.run(
            [sys.executable, "-m", "moa", "run", str(f), "hello", "--log", "json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )
    assert p.returncode == 0 and p.stdout.startswith("answer from sim"), p.stderr
    events = [json.loads(line) for line in p.stderr.splitlines()]
    summary = [e for e in events if e["event"] == "run.summary"]
    assert len(summary) == 1 and summary[0]["summary"].startswith("cost $")


def test_ctrl_c_says_what_the_calls_made_so_far_may_cost(tmp_path: Path) -> None:
    """Ctrl-C during `moa run` said `moa: interrupted` alone, though the calls in flight had been
    sent and may be billed; the line now ends as a failed run's does, and --json prints the calls."""
    import signal
    import time

    f = tmp_path / "slow.yaml"
    f.write_text(
        "name: slow\nkind: single\nagent: a\nagents:\n  a: {model: openai/slow, api_base: BASE, "
        "api_key_env: MOA_SIM_KEY, pricing: {input_per_mtok: 1, output_per_mtok: 1}}\n"
    )
    # the child's own SIGINT handler: one inherited as ignored (a job started with `&`) would stay so
    code = "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    code += "from moa.cli import main; sys.exit(main())"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "MOA_SIM_KEY": "k"}
    with SimServer(models={"slow": SimModel(latency_s=600)}) as srv:
        f.write_text(f.read_text().replace("BASE", f'"{srv.base_url}"'))
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "run", str(f), "hello", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        give_up = time.monotonic() + 60  # a hang guard: the request arrives in well under a second
        while srv.stats.in_flight < 1 and proc.poll() is None and time.monotonic() < give_up:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.startswith("moa: interrupted (1 call made: $0.000000, up to $") and err.count("\n") == 1
    data = json.loads(out)
    assert data["error"] == "interrupted" and [c["node"] for c in data["calls"]] == ["answer"]


def test_output_schema_with_stream_is_refused_before_stdin_is_read(tmp_path: Path) -> None:
    """`moa run T - --output-schema s.json --stream < q.txt` read the prompt from stdin, and the
    topology, before refusing the flags: the piped prompt was gone when the user fixed them."""
    p = moa_cli("run", "nope-preset", "-", "--output-schema", "s.json", "--stream", stdin="q")
    assert p.returncode == 2 and p.stderr == (
        "moa: --output-schema and --stream: a typed answer is checked whole, so it is not streamed\n"
    )


@pytest.mark.parametrize("flags", [[], ["--json"]])
def test_with_stdout_closed_a_finished_run_still_says_its_cost(tmp_path: Path, flags: list[str]) -> None:
    """`moa run ... >&-`: Python's stdout is None, and a paid run ended in a traceback (`None` has no
    `flush`), exit 1, its cost line lost. The answer goes nowhere; the run exits 0 with its account."""
    f = tmp_path / "one.yaml"
    with SimServer(models={"sim": SimModel()}) as srv:
        env = _write_one_sim_agent(f, srv)
        p = subprocess.run(
            [
                "sh",
                "-c",
                'f=$1; shift; exec "$0" -m moa run "$f" --prompt hello "$@" >&-',
                sys.executable,
                str(f),
                *flags,
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith("cost $") and p.stderr.count("\n") == 1, p.stderr


def test_bad_input_found_mid_run_still_says_what_the_run_paid(tmp_path: Path) -> None:
    """A GGUF llama.cpp cannot load is found when its node's turn comes, after the draft was paid
    for: the exit-2 line ends with that spend and --json prints the calls, as for any failed run."""
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip install 'moa-sdk[local]')"
    )
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\xff" * 64)  # the magic, then nothing loadable
    with SimServer(models={"sim": SimModel()}) as srv:
        f = tmp_path / "mixed.yaml"
        f.write_text(
            "name: mixed\nkind: sequential\nsteps: [draft, revise]\nagents:\n"
            f'  draft: {{model: openai/sim, api_base: "{srv.base_url}", api_key_env: MOA_SIM_KEY,\n'
            "    pricing: {input_per_mtok: 1000, output_per_mtok: 1000}}\n"
            f"  revise: {{model: local/{tmp_path / 'bad.gguf'}}}\n"
        )
        plain = moa_cli("run", str(f), "hello", env={"MOA_SIM_KEY": "k"})
        as_json = moa_cli("run", str(f), "hello", "--json", env={"MOA_SIM_KEY": "k"})
    assert plain.returncode == 2 and as_json.returncode == 2, plain.stderr
    assert "cannot load" in plain.stderr and plain.stderr.count("\n") == 1
    assert re.search(r"\(2 calls made: \$0\.0\d+\)\n$", plain.stderr), plain.stderr
    data = json.loads(as_json.stdout)
    assert "cannot load" in data["error"]
    assert [c["node"] for c in data["calls"]] == ["step1_draft", "step2_revise"]
    assert data["calls"][0]["cost_usd"] > 0 and data["calls"][1]["error"]
