"""The ``moa`` command. Top-level imports stay light so ``moa --help`` and ``moa validate`` start
fast; each command imports what it needs.

Exit codes: 0 success, 1 a run that failed, 2 bad input (file, flag, dataset). Errors are one line on
stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

# light modules only: the topology loader, the runner and the web stack load per command
from moa._argtypes import seconds, usd
from moa._wording import counted
from moa.errors import MoAError, TopologyError, UserError
from moa.results import Done, Token
from moa.scrub import environment_secrets, scrub

if TYPE_CHECKING:
    from moa.topology.spec import AgentSpec

__all__ = ["main"]


def _cmd_topologies(args: argparse.Namespace) -> int:
    from moa.topology.loader import load, presets

    rows: list[tuple[str, str, str]] = []
    for name, path in presets().items():
        try:
            t = load(path)
            rows.append((name, t.kind or "dag", t.description))
        except Exception as e:  # a broken preset is reported, the rest still listed
            rows.append((name, "invalid", str(e).splitlines()[0]))
    width = max((len(r[0]) for r in rows), default=0)
    for name, kind, desc in rows:
        print(f"{name:<{width}}  {kind:<12}  {desc}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from moa.topology.loader import load

    bad = False
    for f in args.files:
        try:
            t = load(f)
        except TopologyError as e:
            bad = True
            for line in e.lines():
                print(line, file=sys.stderr)
        except UserError as e:
            bad = True
            print(str(e), file=sys.stderr)
        else:
            from moa._run import every_agent
            from moa.calls.keys import unknown_local_models, unknown_providers

            # what a run would call, a cascade's stage files and judges included: a typo there
            # fails a run as surely
            agents = every_agent(t)
            unknown = unknown_providers(agents) + unknown_local_models(agents)
            for line in unknown:
                print(f"{f}: {line}", file=sys.stderr)
            if unknown:
                bad = True
                continue
            for where, name in _unused_agents(t):
                print(f"{f}: {where}warning: agent `{name}` is declared but no node uses it", file=sys.stderr)
            for line in [*_unpriced(agents), *_unknown_tiers(agents)]:
                print(f"{f}: {line}", file=sys.stderr)
            print(f"ok: {f} ({t.name}: {_shape(t)}, output `{t.graph.output}`)")
    return 2 if bad else 0


def _shape(t: Any) -> str:
    """``4 nodes``; for a cascade, whose ``graph`` is its last stage's, the nodes of every stage
    and judge (it printed ``1 nodes`` for two stages of 3)."""
    parts = getattr(t, "parts", None)
    if parts is None:
        return counted(len(t.graph.order), "node")
    nodes = sum(len(g.order) for _, g in parts())
    return f"{counted(len(t.stage_list), 'stage')}, {counted(nodes, 'node')}"


def _unpriced(agents: Sequence[tuple[str, AgentSpec]]) -> list[str]:
    """A warning for each model a run may call that nothing prices (not litellm's price map, not
    the agent's ``pricing``): its calls cost $0 in every record and report, so a setup using it
    looks free; a typo of a priced model is named. A warning, as a model served by one's own
    OpenAI-compatible server is often unpriced on purpose."""
    from moa.calls.pricing import near_priced_model, price_for

    lines: list[str] = []
    seen: set[str] = set()
    for label, agent in agents:
        # the agent's `pricing` prices its model; its fallbacks are priced from the map
        priced_here = {agent.model} if agent.pricing is not None else set()
        for model in [agent.model, *agent.fallbacks]:
            if model in priced_here:
                continue
            if model in seen or model.startswith("local/") or price_for(model).known:
                continue
            seen.add(model)
            near = near_priced_model(model)
            hint = f"; did you mean `{near}`?" if near else ""
            lines.append(
                f"{label}: warning: model `{model}` is not in litellm's price map, so its calls cost $0 "
                f"in every record and report (set the agent's `pricing`){hint}"
            )
    return lines


def _unknown_tiers(agents: Sequence[tuple[str, AgentSpec]]) -> list[str]:
    """A warning for each model an agent asks a ``service_tier`` of that its price map entry and
    OpenAI do not know (``priorty``): sent as is, held and billed at the standard tier. A warning,
    not a refusal: a provider may add a tier before the price map knows it."""
    from moa.calls.pricing import price_for, unknown_service_tier

    lines: list[str] = []
    for label, agent in agents:
        if "service_tier" not in agent.params:
            continue
        tier = agent.params["service_tier"]
        for i, model in enumerate([agent.model, *agent.fallbacks]):
            why = unknown_service_tier(price_for(model, agent.pricing if i == 0 else None), tier)
            if why is not None:
                lines.append(f"{label}: warning: model `{model}`: {why}")
    return lines


def _unused_agents(t: Any) -> list[tuple[str, str]]:
    """The agents declared in ``agents:`` that no node of any graph a run of ``t`` may run names
    (a cascade's stages and judges included), each with where it is declared (``""`` for the file
    itself, ``stage 2 (`draft.yaml`): `` for a cascade stage's own topology file): a reference
    typed wrong, or dead configuration. A run never calls them, so nothing else checks them
    (their provider, their key)."""
    parts = getattr(t, "parts", None)  # a composite (a cascade) runs several graphs
    graphs = [g for _, g in parts()] if parts is not None else [t.graph]
    used = {n.spec.agent for g in graphs for n in g.nodes.values() if n.spec.agent is not None}
    found = [("", name) for name in getattr(t, "agents", None) or {} if name not in used]
    # a stage read from a file declares its own agents, which its own nodes name
    for stage in getattr(t, "stage_list", ()):
        if stage.loaded is not None:
            where = f"stage {stage.number} (`{stage.ref or stage.loaded.name}`): "
            found += [(where + w, name) for w, name in _unused_agents(stage.loaded)]
    return found


def _cmd_schema(args: argparse.Namespace) -> int:
    from moa.topology.schema import topology_file_schema

    text = json.dumps(topology_file_schema(), indent=2) + "\n"
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as e:  # a missing folder, a directory, no permission: a bad --out, exit 2
            raise UserError(f"{args.out}: cannot write the schema: {e.strerror or e}") from None
    else:
        sys.stdout.write(text)
    return 0


def _summary_line(result: Any) -> str:
    u = result.usage
    cost = f"cost ${result.cost_usd:.6f}"
    if result.unknown_usage_attempts:
        # attempts the provider may bill although no usage came back (timeouts, cancellations)
        cost += (
            f" (up to ${result.cost_usd_max:.6f}: {result.unknown_usage_attempts} attempt(s) "
            "sent with unknown usage)"
        )
    elif result.cost_usd_max > result.cost_usd:  # estimated replies, which may be billed more
        cost += f" (up to ${result.cost_usd_max:.6f})"
    tokens = f"{u.prompt_tokens}+{u.completion_tokens} tokens"
    # tokens moa counted itself, or clamped from an impossible report, are not the provider's bill
    doubts = [
        f"{n} call(s) {what}"
        for n, what in (
            (result.usage_estimated_calls, "estimated: no usage reported"),
            (result.usage_suspect_calls, "suspect: charged the worst case"),
        )
        if n
    ]
    if doubts:
        tokens += f" ({'; '.join(doubts)})"
    parts = [
        cost,
        counted(len(result.calls), "call"),
        tokens,
        f"latency {result.latency_s:.2f}s (critical path {result.critical_path_s:.2f}s)",
    ]
    line = ", ".join(parts)
    if result.unpriced_models:
        line += f"; unpriced (counted at $0): {', '.join(result.unpriced_models)}"
    if result.cost_note:
        line += f"; {result.cost_note}"
    if len(result.calls) > 1:
        groups = [("by node", result.by_node), ("by model", result.by_model)]
        if result.by_stage:
            groups.append(("by stage", {str(k): v for k, v in result.by_stage.items()}))
        for what, shares in groups:
            line += f"\n  {what}: " + ", ".join(_share(k, v) for k, v in shares.items())
    return line


def _share(name: str, share: Any) -> str:
    # a share whose calls were cut off in flight may be billed more than its known cost, as the run
    cost = f"${share.cost_usd:.6f}"
    if share.cost_usd_max > share.cost_usd:
        cost += f" (up to ${share.cost_usd_max:.6f})"
    return f"{name} {cost} {share.prompt_tokens}+{share.completion_tokens} tok"


def _cmd_run(args: argparse.Namespace) -> int:
    from moa._run import Runner
    from moa._run.engine import watch_run
    from moa.topology.loader import load

    if (args.prompt is None) == (args.prompt_arg is None):
        given = "the prompt twice, as PROMPT and as --prompt" if args.prompt is not None else "no prompt"
        raise UserError(f"run: {given}: give it once (moa run TOPOLOGY PROMPT, or --prompt PROMPT)")
    if args.trace and not args.json:  # the trace the user asked for would go nowhere, unsaid
        raise UserError("--trace is only read with --json (it adds each call's messages and reply to it)")
    if args.output_schema and args.stream:  # before the topology is loaded and stdin is read
        raise UserError(
            "--output-schema and --stream: a typed answer is checked whole, so it is not streamed"
        )
    topology = load(args.topology)
    _check_local_models(topology, args.topology)
    # errors name what was typed: the positional PROMPT, or --prompt
    if args.prompt is not None:
        prompt = _read_prompt(args.prompt, "--prompt")
    else:
        prompt = _read_prompt(args.prompt_arg, "PROMPT")
    if not prompt.strip():
        raise UserError("run: the prompt is empty")
    kw: dict[str, Any] = {"budget_usd": args.budget_usd, "deadline_s": args.deadline_s}
    if args.output_schema:
        from moa.safe_read import read_document

        schema = read_document(args.output_schema, what="--output-schema file")
        if not isinstance(schema, dict):
            raise UserError(f"{args.output_schema}: a JSON Schema must be an object")
        kw["output_type"] = schema

    async def go() -> Any:
        async with Runner() as runner:
            return await run(runner)

    async def run(runner: Any) -> Any:
        if not args.stream:
            return await topology.run(prompt, runner=runner, **kw)
        result = None
        streamed = False
        try:
            async for ev in topology.stream(prompt, runner=runner, **kw):
                if isinstance(ev, Token) and not args.json:
                    sys.stdout.write(ev.text)
                    sys.stdout.flush()
                    streamed = streamed or bool(ev.text)
                elif isinstance(ev, Done):
                    result = ev.result
        except BaseException:
            if streamed:  # the error line would go on after the half-printed answer on a terminal
                sys.stdout.write("\n")
                sys.stdout.flush()
            raise
        if not args.json:
            sys.stdout.write("\n")
        return result

    # Ctrl-C raises no error of moa's to carry the calls already paid for: the watch holds them
    with watch_run() as watch:
        try:
            result = asyncio.run(go())
        except MoAError as e:
            # bad input found mid-run (a GGUF llama.cpp cannot load) may follow paid calls
            if args.json and (e.calls or not isinstance(e, UserError)):
                _print_failure(f"{type(e).__name__}: {e}", e.calls, e.nodes, trace=args.trace)
            if isinstance(e, UserError) and e.calls:
                raise _with_spent(e) from e
            raise
        except KeyboardInterrupt:
            if args.json:
                _print_failure("interrupted", watch.calls, {}, trace=args.trace)
            print(f"moa: interrupted{_spent(watch.calls)}", file=sys.stderr)
            return 130
    if args.json:
        print(json.dumps(result.to_dict(trace=args.trace), indent=2))
        sys.stdout.flush()
        if getattr(sys.stdout, "gone", False):  # the record went nowhere: its account to stderr
            _account(result)
    else:
        if args.output_schema:
            print(json.dumps(result.parsed, indent=2, ensure_ascii=False))
        elif not args.stream:
            print(result.output)
        sys.stdout.flush()  # the answer first, then the account, even when stdout is a pipe
        _account(result)
    return 0


def _account(result: Any) -> None:
    """The run's cost line on stderr, or with ``--log`` a ``run.summary`` event in the log's format:
    a plain line among ``--log json``'s events breaks every reader of JSON lines."""
    from moa import log

    lg = log.info_logger()
    if lg is None:
        print(_summary_line(result), file=sys.stderr)
    else:
        lg.info("run.summary", summary=_summary_line(result))


def _print_failure(error: str, calls: Sequence[Any], nodes: dict[str, Any], *, trace: bool) -> None:
    """``--json``'s record of a run that did not finish: what went wrong and every call it paid for."""
    out = {
        "error": error,
        "calls": [c.to_dict(trace=trace) for c in calls],
        "nodes": {k: v.to_dict() for k, v in nodes.items()},
    }
    print(json.dumps(out, indent=2))


def _check_local_models(topology: Any, source: str) -> None:
    """The embedded models run here: no extra or no weights is found before the hosted nodes of a
    mixed topology are paid for."""
    from moa._run import every_agent
    from moa.calls.keys import unavailable_local_models

    problems = unavailable_local_models(every_agent(topology))
    if problems:
        raise UserError("\n".join(f"{source}: {p}" for p in problems))


def _read_prompt(value: str, given_as: str) -> str:
    """``-`` reads stdin, ``@FILE`` reads a file (``@@...`` is a prompt starting with ``@``);
    ``given_as`` (``--prompt`` or ``PROMPT``) is how the user gave it, for the errors."""
    if value == "-":
        from moa.safe_read import read_text_stream

        if sys.stdin is not None and not hasattr(sys.stdin, "buffer"):
            return sys.stdin.read()  # a text stream put in its place (a notebook, a test)
        # the bytes, not the text stream: its decoding follows the locale (a traceback on bytes
        # that are not UTF-8, or a "lone surrogate" naming no input) and it reads without a bound
        stdin = None if sys.stdin is None else sys.stdin.buffer  # None: stdin closed (`<&-`)
        return read_text_stream(stdin, source=f"{given_as} -", what="stdin")
    if value.startswith("@@"):
        return value[1:]
    if value.startswith("@"):
        from moa.safe_read import read_text_file

        if not value[1:].strip():
            raise UserError(
                f"{given_as} @ names no file: write @FILE to read the prompt from a file, or @@ for a literal @"
            )
        return read_text_file(value[1:], what=f"{given_as} file")
    return value


def _version() -> str:
    from moa import __version__

    return f"moa {__version__} (Python {sys.version.split()[0]})"


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--debug`` and ``--log`` before or after the sub-command: the sub-command's copies default to
    "not given", so they never reset what was given before it."""
    default: Any = argparse.SUPPRESS
    parser.add_argument(
        "--debug", action="store_true", default=False if top else default, help="show tracebacks"
    )
    parser.add_argument(
        "--log", choices=["console", "json"], default=None if top else default, help="log events to stderr"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moa",
        description="Mixture-of-Agents orchestration: run topologies of LLMs and compare them with a single model.",
    )
    p.add_argument("--version", action="version", version=_version())
    _common_options(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("topologies", help="list the presets with one line each")
    s.set_defaults(func=_cmd_topologies)

    s = sub.add_parser("validate", help="check topology files; exit 2 and one line per problem if invalid")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.set_defaults(func=_cmd_validate)

    s = sub.add_parser("run", help="run a topology (file or preset name) on one prompt")
    s.add_argument("topology", metavar="TOPOLOGY")
    s.add_argument("prompt_arg", nargs="?", metavar="PROMPT", help="the prompt, as --prompt takes it")
    s.add_argument(
        "--prompt",
        help="the prompt; - reads it from stdin, @FILE from a file (@@ for a literal @)",
    )
    s.add_argument("--json", action="store_true", help="print the RunResult as JSON")
    s.add_argument(
        "--trace", action="store_true", help="with --json: each call's messages sent and reply text too"
    )
    s.add_argument("--stream", action="store_true", help="print the answer's tokens as they arrive")
    s.add_argument("--budget-usd", type=usd, default=None, metavar="X", help="hard cap on the run's spend")
    s.add_argument("--deadline-s", type=seconds, default=None, help="hard cap on the run's time")
    s.add_argument(
        "--output-schema",
        default=None,
        metavar="FILE",
        help="a JSON Schema (JSON or YAML) the answer must match; it is printed as JSON, and --json adds `parsed`",
    )
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("schema", help="print the JSON Schema of topology files (for editors)")
    s.add_argument("--out", default=None, help="write it to this file")
    s.set_defaults(func=_cmd_schema)

    for register in _plugins():
        register(sub)
    for command in sub.choices.values():
        _common_options(command, top=False)
    return p


def _plugins() -> list[Callable[[Any], None]]:
    """Sub-commands that live with their feature (compare/report, serve, view)."""
    found: list[Callable[[Any], None]] = []
    try:
        from moa.experiment.cli import add_parsers

        found.append(add_parsers)
    except ImportError:
        pass
    try:
        from moa.serve.cli import add_parser

        found.append(add_parser)
    except ImportError:
        pass
    try:
        from moa.view.cli import add_parser as add_view

        found.append(add_view)
    except ImportError:
        pass
    return found


def _print_traceback() -> None:
    """The traceback for ``--debug``, scrubbed: chained provider exceptions keep their raw text."""
    print(scrub(traceback.format_exc(), environment_secrets()), file=sys.stderr, end="")


def _with_spent(e: UserError) -> UserError:
    """``e``, a run's bad input found after calls were made, with what they cost on its line."""
    first, sep, rest = str(e).partition("\n")
    said = UserError(f"{first}{_spent(e.calls)}{sep}{rest}")
    said.calls, said.nodes = e.calls, e.nodes
    return said


def _spent(calls: Sequence[Any]) -> str:
    """What a failed run paid before it failed, for its error line: a success's summary line says
    it, and a failure may have paid for every node but the last."""
    if not calls:
        return ""
    cost, most = sum(c.cost_usd for c in calls), sum(c.cost_usd_max for c in calls)
    upto = f", up to ${most:.6f}" if most > cost else ""
    return f" ({counted(len(calls), 'call')} made: ${cost:.6f}{upto})"


class _Pipe:
    """stdout or stderr for a command: once its reader has gone (``moa run ... | head -1``), the
    rest of what is written there is dropped instead of raising ``BrokenPipeError`` through a
    finished run, so the run's account still reaches stderr and the exit code says how it went."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self.stream.write(text)  # some streams return None, not a count
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.gone = True
        # the interpreter flushes the stream's buffer at exit: with the descriptor on /dev/null that
        # flush has nowhere to fail ("Exception ignored ... BrokenPipeError", exit code 120)
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    out, err = sys.stdout, sys.stderr
    # with stderr closed (``2>&-``) Python's stderr is None, and ``print(file=None)`` writes to
    # stdout: the cost line and the errors would land in the answer or the JSON
    # stdout closed (``>&-``) is None too: a finished run's answer went to ``None.flush()``, a
    # traceback, and its cost line was lost
    devnull = open(os.devnull, "w") if out is None or err is None else None  # noqa: SIM115 (closed below)
    for stream in (out, err):
        # a terminal or file whose encoding lacks `×` or `Δ` (the table's) or an answer's letters
        # shows them escaped, rather than ending a finished run or experiment in a traceback
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")
    sys.stdout = _Pipe(out or devnull)
    sys.stdout.gone = out is None  # nothing reaches a reader: --json's account goes to stderr
    sys.stderr = _Pipe(err or devnull)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = out, err
        if devnull is not None:
            devnull.close()


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2

    try:
        if args.log:
            from moa.log import configure_logging

            configure_logging(args.log)
        code: int = args.func(args)
        return code
    except UserError as e:
        if args.debug:
            _print_traceback()
        # each line once: with --debug the whole message was printed, then its lines after the first again
        first, *rest = str(e).splitlines() or [""]
        print(f"moa: {first}", file=sys.stderr)
        for line in rest:
            print(line.strip(), file=sys.stderr)
        return 2
    except MoAError as e:
        if args.debug:
            _print_traceback()
        print(f"moa: run failed: {type(e).__name__}: {e}{_spent(e.calls)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("moa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
