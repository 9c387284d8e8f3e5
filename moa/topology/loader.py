"""Reading topology files and presets, and turning every problem into one line naming its place."""

from __future__ import annotations

import contextlib
import difflib
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from moa import safe_read
from moa.cascade.definition import Cascade
from moa.errors import TopologyError, UserError
from moa.topology.definition import Topology
from moa.topology.graph import check_nodes
from moa.topology.spec import KINDS, MAX_GRAPH, NodeSpec, raw_graph_size

__all__ = [
    "format_validation_error",
    "load",
    "load_data",
    "preset_dir",
    "presets",
    "read_document",
    "validate_topology",
]

_SUFFIXES = (".yaml", ".yml", ".json")


def preset_dir() -> Path:
    """The preset folder: inside the wheel (``moa/_presets``) or the source checkout's ``topologies/``."""
    package = Path(__file__).resolve().parents[1]  # moa/
    for candidate in (package / "_presets", package.parent / "topologies"):
        if candidate.is_dir():
            return candidate
    return package / "_presets"


def presets() -> dict[str, Path]:
    """Preset name -> file, sorted by name."""
    d = preset_dir()
    if not d.is_dir():
        return {}
    found = {p.stem: p for p in d.iterdir() if p.suffix in _SUFFIXES and not p.name.startswith("_")}
    return dict(sorted(found.items()))


def read_document(path: Path) -> Any:
    """Parse a YAML or JSON topology file; every problem (syntax, size, type, nesting, aliases) is one
    line naming the file."""
    return safe_read.read_document(path, what="topology file")


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in _SUFFIXES or p.exists():
        if not p.exists():
            # a preset's file name (`topologies/parallel-3.yaml` outside a checkout): the name runs it
            hint = f"; did you mean the preset `{p.stem}`?" if p.stem in presets() else ""
            raise UserError(f"{p}: no such file{hint}")
        if p.suffix.lower() in (".jsonl", ".csv") and p.is_file():
            # read as YAML, its rows said "expected '<document start>'" and nothing of what it is for
            raise UserError(
                f"{p}: a dataset, not a topology file: run a topology on one prompt, or compare "
                "topologies over the dataset with `moa compare` and an experiment file naming it as `dataset:`"
            )
        return p
    found = presets().get(str(name_or_path))
    if found is None:
        names = ", ".join(presets()) or "none installed"
        close = difflib.get_close_matches(str(name_or_path), list(presets()), n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        raise UserError(
            f"unknown topology `{name_or_path}`: not a file and not a preset{hint} (presets: {names})"
        )
    return found


def load(name_or_path: str | Path, *, relative_to: str | Path | None = None) -> Topology:
    """Load a topology from a YAML/JSON file or a preset name, validated before any call.

    ``relative_to`` is the folder a relative file path is read from (an experiment file's folder);
    a bare name that is no file there is still looked up among the presets."""
    return _load(name_or_path, relative_to, stage=False)


def _load(name_or_path: str | Path, relative_to: str | Path | None, *, stage: bool) -> Topology:
    """``load``; with ``stage``, as a cascade's stage (or judge), which runs one topology: a cascade
    is refused as soon as it is read, before its own stages are, so files cannot name each other
    in a loop (a cascade naming itself had recursed until Python's limit)."""
    shown = str(name_or_path)
    if relative_to is not None and not Path(name_or_path).is_absolute():
        candidate = Path(relative_to) / name_or_path
        if candidate.suffix in _SUFFIXES or candidate.exists():
            name_or_path = candidate
    path = _resolve(name_or_path)
    data = read_document(path)
    if stage and isinstance(data, Mapping) and data.get("kind") == "cascade":
        raise UserError(f"topology `{shown}` is itself a cascade; a stage runs one topology")
    return load_data(data, source=str(path), base_dir=path.parent)


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            if isinstance(node, list) and 0 <= part < len(node):
                node = node[part]
                if isinstance(node, Mapping) and isinstance(node.get("id"), str):
                    out += f" (`{node['id']}`)"
            else:
                node = None
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, Mapping) else None
    return out or "topology"


#: how a message names an object of the formats read here, by its schema name
_NOUNS = {
    "AgentSpec": "an agent",
    "NodeSpec": "a node",
    "RetrySpec": "`retry`",
    "RateLimitSpec": "`rate_limit`",
    "PricingSpec": "`pricing`",
    "Topology": "the topology",
    "Cascade": "a cascade",
    "StageSpec": "a stage",
    "AcceptSpec": "an `accept` rule",
    "JudgeSpec": "a judge",
    "ExperimentSpec": "the experiment",
    "SetupEntry": "a setup",
    "TuneSpec": "`tune`",
}


def _noun(name: str) -> str:
    return _NOUNS.get(name, f"`{name.removesuffix('Spec').lower()}`")


@functools.cache
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _branches(node: Any, defs: Mapping[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """The schema objects ``node`` may be (``$ref`` followed, unions opened), each with its def name."""
    out: list[tuple[str | None, dict[str, Any]]] = []
    stack: list[tuple[str | None, Any]] = [(None, node)]
    while stack:
        name, n = stack.pop(0)
        if not isinstance(n, dict):
            continue
        ref = n.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            stack.append((name, defs.get(name)))
            continue
        out.append((name, n))
        stack += [(name, b) for key in ("anyOf", "oneOf", "allOf") for b in n.get(key, [])]
    return out


def _object_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, dict[str, Any]] | None:
    """The schema object (def name, schema) holding the field at ``loc``, walking properties, list
    items and mapping values; a step no branch knows is a pydantic union tag and is skipped."""
    schema = _schema(model)
    defs = schema.get("$defs", {})
    current: list[tuple[str | None, dict[str, Any]]] = [(model.__name__, schema)]
    for part in loc:
        nxt: list[tuple[str | None, dict[str, Any]]] = []
        for _, n in current:
            for _, b in _branches(n, defs):
                if isinstance(part, int) and "items" in b:
                    nxt += _branches(b["items"], defs)
                elif isinstance(part, str) and part in b.get("properties", {}):
                    nxt += _branches(b["properties"][part], defs)
                elif isinstance(part, str) and isinstance(b.get("additionalProperties"), dict):
                    nxt += _branches(b["additionalProperties"], defs)
        if nxt:
            current = nxt
    for name, n in current:
        for bname, b in _branches(n, defs):
            if "properties" in b:
                return bname or name or model.__name__, b
    return None


def _unknown_field(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The message for a field the object at ``loc`` does not have: the closest field of that
    object (never the field itself), else the object the field belongs to."""
    field = str(loc[-1]) if loc else "?"
    found = _object_at(model, loc[:-1])
    if found is None:
        return "unknown field"
    here, obj = found
    own = [f for f in obj.get("properties", {}) if f != field]
    close = difflib.get_close_matches(field, own, n=1, cutoff=0.75)
    if not close:
        # a field written short (`input` for `input_per_mtok`) is too far for difflib's ratio
        close = [f for f in own if f.startswith(f"{field}_")][:2]
        close = close if len(close) == 1 else []
    if close:
        return f"unknown field; did you mean `{close[0]}`?"
    schema = _schema(model)
    owners = [model.__name__] if field in schema.get("properties", {}) else []
    owners += [name for name, d in schema.get("$defs", {}).items() if field in d.get("properties", {})]
    owners = [o for o in owners if o != here]
    if owners:
        return f"unknown field: `{field}` belongs to {_noun(owners[0])}, not {_noun(here)}"
    return "unknown field"


def _union_tag_at(loc: tuple[int | str, ...], typ: str, data: Any) -> int | None:
    """The index of the first part of ``loc`` that names a union branch (``int``,
    ``list[list[str]]``), not a key of ``data`` or an index into it; ``None`` when there is none.
    The last part of a missing or unknown field's ``loc`` is that field."""
    node = data
    for i, part in enumerate(loc[:-1] if typ in ("missing", "extra_forbidden") else loc):
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        elif part != "[key]":
            return i
    return None


def _one_error_per_union(errors: list[Any], data: Any) -> list[Any]:
    """A value matching no branch of a union (``layers: "2"``: not an int, not a list) gave one
    error per branch, each its own line. The branch the value entered (its errors lie deeper)
    keeps its errors; else the branches' messages become one error at the field."""
    groups: dict[tuple[int | str, ...], list[tuple[int, Any]]] = {}
    out: list[Any] = []
    for e in errors:
        tag = _union_tag_at(e["loc"], e["type"], data)
        if tag is None:
            out.append(e)
        else:
            groups.setdefault(tuple(e["loc"][:tag]), []).append((tag, e))
    for base, members in groups.items():
        entered = [e for tag, e in members if len(e["loc"]) > tag + 1]
        if entered:
            out += [{**e, "loc": base + tuple(e["loc"][len(base) + 1 :])} for e in entered]
            continue
        msgs = [str(e["msg"]) for _, e in members]
        merged = msgs[0] + "".join(f" or {m.removeprefix('Input should be ')}" for m in msgs[1:])
        out.append({**members[0][1], "loc": base, "msg": merged})
    return out


def format_validation_error(
    err: ValidationError, data: Any, *, model: type[BaseModel] = Topology
) -> list[str]:
    """One line per pydantic error: ``agents.a.temperature: must be >= 0 (got -1)``; an unknown
    field gets the closest field name of ``model``'s format."""
    lines = []
    for e in _one_error_per_union(err.errors(include_url=False), data):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        where = _where(loc, data)
        typ = e["type"]
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if typ == "extra_forbidden":
            field = loc[-1] if loc else "?"
            if field == "api_key":
                msg = "inline `api_key` is refused: put the key in an environment variable and name it with `api_key_env`"
            else:
                msg = _unknown_field(model, loc)
        elif typ == "literal_error" and loc and loc[-1] == "kind":
            kinds = [*KINDS, "cascade"]  # a cascade is read by its own model, but is a kind all the same
            close = difflib.get_close_matches(str(e["input"]), kinds, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            msg = f"unknown kind `{e['input']}`{hint} (kinds: {', '.join(kinds)})"
        elif typ == "missing":
            msg = "required field is missing"
        elif typ == "model_type":
            # pydantic names its class ("instance of AgentSpec"), which no file holds
            msg = "expected a mapping of fields"
            given = e.get("input")
            if len(loc) == 2 and loc[0] == "agents" and isinstance(given, str):
                msg += f": write `{loc[1]}: {{model: {given}}}`"
            elif not isinstance(given, list):
                msg += f" (got {given!r})"
        elif typ == "string_pattern_mismatch" and loc and loc[-1] == "id":
            msg = (
                f"a node id holds only ASCII letters, digits, `_`, `.` and `-` (got {e['input']!r}): "
                "it names the node in logs, CSV files and reports"
            )
        elif (
            "input" in e
            and typ not in ("value_error", "assertion_error")
            and not isinstance(e["input"], (dict, list))
        ):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{where}: {msg}")
    return lines


#: what places a node in the graph: kept from a node whose other fields failed the schema
_PLACE = ("id", "agent", "reduce", "inputs")


def _raw_graph_problems(data: Mapping[str, Any]) -> list[str]:
    """Best-effort structural checks on a file whose schema failed, so every problem shows at once."""
    if "kind" in data or not isinstance(data.get("nodes"), list):
        return []
    if sum(raw_graph_size(data["nodes"])) > MAX_GRAPH:
        return []  # already refused as too large: checking it would cost what the cap saves
    nodes = []
    for raw in data["nodes"]:
        try:
            nodes.append(NodeSpec.model_validate(raw))
        except ValidationError:
            # already reported by the schema pass; its place in the graph still counts, or a node
            # with one bad field was also reported as missing (`output `x` is not a node`)
            if isinstance(raw, Mapping):
                with contextlib.suppress(ValidationError):
                    nodes.append(NodeSpec.model_validate({k: v for k, v in raw.items() if k in _PLACE}))
    agents = data.get("agents")
    agent_names = list(agents) if isinstance(agents, Mapping) else []
    output = data.get("output") if isinstance(data.get("output"), str) else None
    _, problems = check_nodes(nodes, output, agent_names, build=False)
    return problems


# a node's `prompt:` that names a file rather than holding a template: read it, never send the path
_PROMPT_FILE = re.compile(
    r"^(?:(?:\.{1,2}/|/|~/)\S+|[\w.\-/]+\.(?:txt|md|markdown|prompt|tmpl|tpl|j2|jinja|jinja2))$"
)


def _prompt_files(data: Mapping[str, Any], base_dir: Path | None) -> tuple[Mapping[str, Any], list[str]]:
    """``data`` with every node ``prompt:`` that names a file replaced by the file's text (relative to
    the topology file's folder, else the working directory, and inside it, symbolic links followed);
    problems for files that cannot be read or lie outside."""
    nodes = data.get("nodes")
    if not isinstance(nodes, list):
        return data, []
    problems: list[str] = []
    out = []
    root: Path | None = None
    for i, node in enumerate(nodes):
        prompt = node.get("prompt") if isinstance(node, Mapping) else None
        if not isinstance(prompt, str) or "{" in prompt or not _PROMPT_FILE.match(prompt.strip()):
            out.append(node)
            continue
        where = f"nodes[{i}]" + (f" (`{node['id']}`)" if isinstance(node.get("id"), str) else "")
        file = Path(prompt.strip()).expanduser()
        if not file.is_absolute() and base_dir is not None:
            file = base_dir / file
        # a prompt file's text is sent to the agent's model: a shared topology naming
        # `../../.env` or `~/.aws/credentials` would send it to whatever endpoint it names
        root = root or (base_dir if base_dir is not None else Path.cwd()).resolve()
        if not file.resolve().is_relative_to(root):
            problems.append(
                f"{where}: prompt file `{prompt.strip()}` is outside the topology's folder {root}: "
                "a prompt file must be inside it (its text is sent to the model)"
            )
            out.append(node)
            continue
        try:
            text = safe_read.read_text_file(file, what="prompt file")
        except UserError as e:
            problems.append(f"{where}: prompt names a file that cannot be read: {e}")
            out.append(node)
            continue
        out.append({**node, "prompt": text})
    return {**data, "nodes": out}, problems


def load_data(data: Any, *, source: str = "<topology>", base_dir: str | Path | None = None) -> Topology:
    """Validate plain data (parsed YAML/JSON) into a ``Topology``; every problem in one TopologyError.

    A node's ``prompt:`` naming a file (``prompts/aggregate.txt``, ``./p.md``) is read, relative to
    ``base_dir`` (the topology file's folder) or the working directory, or refused: a path is never
    sent as the prompt's text."""
    if not isinstance(data, Mapping):
        raise TopologyError([safe_read.not_a_mapping(data)], source=source)
    if data.get("kind") == "cascade":
        return _cascade(data, source, base_dir)
    data, file_problems = _prompt_files(data, Path(base_dir) if base_dir is not None else None)
    if file_problems:
        raise TopologyError(file_problems, source=source)
    return validate_topology(data, source=source)


def validate_topology(data: Mapping[str, Any], *, source: str) -> Topology:
    """``data`` (read from a file, or made by ``moa.build``) validated into a ``Topology``, every
    problem in one ``TopologyError``, one line each: what a file is told, code is told alike."""
    try:
        return Topology.model_validate(data)
    except ValidationError as err:
        problems = format_validation_error(err, data) + _raw_graph_problems(data)
        if "setups" in data or "dataset" in data:
            # its every field is "unknown" to a topology: say first what the file is
            problems.insert(
                0, "topology: this is an experiment file (`dataset`, `setups`): run it with `moa compare`"
            )
        raise TopologyError(problems, source=source) from None
    except TopologyError as err:
        raise TopologyError(err.problems, source=source) from None


def _cascade(data: Mapping[str, Any], source: str, base_dir: str | Path | None) -> Cascade:
    """A ``kind: cascade`` file; its stages' topology files are read relative to its folder."""

    def load_stage(ref: str | Mapping[str, Any]) -> Topology:
        if isinstance(ref, str):
            return _load(ref, base_dir, stage=True)
        # a topology written in the stage (what a cascade's dump holds): its prompt files are
        # read from the cascade's folder
        if ref.get("kind") == "cascade":
            raise UserError("a topology written inline is itself a cascade; a stage runs one topology")
        return load_data(ref, source=source, base_dir=base_dir)

    try:
        return Cascade.model_validate(data, context={"load": load_stage})
    except ValidationError as err:
        raise TopologyError(format_validation_error(err, data, model=Cascade), source=source) from None
    except TopologyError as err:
        raise TopologyError(err.problems, source=source) from None
