"""The experiment file: which dataset, which evaluator, which baseline and setups, and the limits.

Validated like a topology file (pydantic, ``extra="forbid"``), and every problem is one line naming
the file and the field. Paths inside the file (dataset, topology files) are relative to the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moa.errors import TopologyError, UserError
from moa.eval.datasets import DatasetFormat
from moa.eval.hashing import canonical_hash, topology_hash
from moa.eval.registry import normal_config, refuse_boolean
from moa.eval.stats import MAX_BOOTSTRAP_ROUNDS
from moa.experiment.executors.names import check_executor
from moa.safe_read import not_a_mapping, read_document
from moa.topology.loader import format_validation_error, load
from moa.topology.spec import require_printable

if TYPE_CHECKING:
    from moa.topology.definition import Topology

__all__ = [
    "ExperimentSpec",
    "Setup",
    "SetupEntry",
    "TuneSpec",
    "answers_read_tests",
    "canonical_hash",
    "evaluator_config",
    "evaluator_id",
    "load_spec",
    "resolve_setups",
    "validate_spec",
]


class SetupEntry(BaseModel):
    """A setup with an explicit name (the topology's own ``name`` is used otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topology: str = Field(
        ..., min_length=1, description="A topology file (relative to the experiment file) or a preset."
    )
    name: str | None = Field(None, min_length=1, description="The name shown in the report.")

    @field_validator("topology", "name")
    @classmethod
    def _no_control_characters(cls, v: Any) -> Any:
        return require_printable(v, "value")


#: the experiment's number fields, each refusing a boolean
_NUMBERS = (
    "concurrency",
    "samples",
    "limit",
    "seed",
    "bootstrap_rounds",
    "budget_usd",
    "deadline_s",
    "max_text_kb",
)


class TuneSpec(BaseModel):
    """Tune a cascade setup's first accept threshold (``moa compare --tune-cascade``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    setup: str = Field(..., min_length=1, description="The cascade setup whose threshold is swept.")
    dev_fraction: float = Field(
        0.3, gt=0, lt=1, description="The share of items the threshold is chosen on; the rest judge it."
    )
    seed: int = Field(0, description="Seed of the dev/held-out split (and of its bootstrap).")

    @field_validator("setup")
    @classmethod
    def _no_control_characters(cls, v: Any) -> Any:
        return require_printable(v, "value")

    @field_validator("dev_fraction", "seed", mode="before")
    @classmethod
    def _not_a_boolean(cls, v: Any) -> Any:
        return refuse_boolean(v)


class ExperimentSpec(BaseModel):
    """An experiment file: setups compared with a baseline over one dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="moa experiment")

    name: str = Field(..., min_length=1, description="The experiment's name, shown in the report.")
    description: str = ""
    dataset: str = Field(
        ..., min_length=1, description="JSONL, CSV or JSON file, relative to the experiment file."
    )
    dataset_format: DatasetFormat = Field(
        "auto",
        description="auto, jsonl, csv, humaneval, mbpp, gsm8k, math, mtbench, multiple (MultiPL-E), "
        "choice, instruction, qa (NQ-open, TriviaQA, SQuAD).",
    )
    on_bad_row: Literal["skip", "fail"] = Field(
        "fail", description="A bad dataset row stops the experiment or is skipped (and reported)."
    )
    evaluator: str | dict[str, Any] | None = Field(
        None,
        description="`exact`, or a mapping such as `{name: numeric, abs_tol: 0.01}` or "
        "`{name: judge, topology: judge.yaml}` (paths relative to the experiment file); "
        "omitted, the dataset layout's own: `choice` for multiple-choice datasets, "
        "`{name: exact, squad: true}` for QA ones.",
    )
    baseline: str | SetupEntry = Field(..., description="The reference setup, normally a single model.")
    setups: list[str | SetupEntry] = Field(..., min_length=1, description="Topology files or preset names.")
    concurrency: int = Field(
        8, ge=1, le=4096, description="Runs (and scorings) in flight at once, all setups together."
    )
    samples: int = Field(
        1,
        ge=1,
        le=100,
        description="Independent runs of every (setup, item) pair (pass@1..k for binary evaluators); "
        "sampling needs temperature > 0 to give different answers.",
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N items.")
    seed: int = Field(0, description="Seed of the bootstrap resampling.")
    bootstrap_rounds: int = Field(
        2000, ge=100, le=MAX_BOOTSTRAP_ROUNDS, description="Bootstrap resamples per interval."
    )
    budget_usd: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="A hard cap on the whole experiment's spend (resumes count what was spent).",
    )
    categories: list[str] | None = Field(
        None, min_length=1, description="Use only items of these categories."
    )
    deadline_s: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Time limit of one run (one setup on one item)."
    )
    retry_errors: bool = Field(
        True,
        description="On re-run, run again the pairs that ended in an error (successful calls come from the cache).",
    )
    store_text: bool = Field(
        True,
        description="Keep every call's messages and reply text in the store (the trace `moa view` shows); "
        "false keeps numbers only, for privacy.",
    )
    max_text_kb: int = Field(
        64,
        ge=1,
        le=16_384,
        description="Per stored text (a message or a reply): longer ones are cut, marked.",
    )
    tune: TuneSpec | None = Field(
        None,
        description="Sweep a cascade setup's accept threshold on a dev split and report, on the rest, "
        "the cheapest setting reaching 50/80/95% of the mixture's gain (`tune.json`).",
    )
    executor: str = Field(
        "local",
        description="Where runs of local models and execution scoring run: `local`, `dask` (a cluster on "
        "this machine, one worker per core) or a Dask scheduler's address `tcp://HOST:PORT`; API calls "
        "stay here.",
    )

    @field_validator("name", "dataset", "baseline", "setups", "categories")
    @classmethod
    def _no_control_characters(cls, v: Any) -> Any:
        # names become folder names and paths; a NUL or newline would surface as a broken error line
        return require_printable(v, "value")

    @field_validator(*_NUMBERS, mode="before")
    @classmethod
    def _not_a_boolean(cls, v: Any) -> Any:
        return refuse_boolean(v)

    @field_validator("name")
    @classmethod
    def _stays_in_results(cls, v: str) -> str:
        # the default output folder is moa-results/<name>: `../..` or `/etc` put the store and the
        # reports (summary.json, report.md, ...) wherever an experiment file someone shared says
        parts = v.replace("\\", "/").split("/")
        if v.startswith(("/", "\\")) or ".." in parts or (len(v) > 1 and v[1] == ":"):
            raise ValueError(
                f"{v!r} would put the default output folder (moa-results/<name>) elsewhere: "
                "use a name without `..` or a leading `/` (--out chooses the folder)"
            )
        return v

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, v: str) -> str:
        return check_executor(v)

    @field_validator("evaluator")
    @classmethod
    def _evaluator_named(cls, v: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(v, dict) and not isinstance(v.get("name"), str):
            raise ValueError("an evaluator mapping needs a `name` (e.g. `{name: numeric, abs_tol: 0.01}`)")
        return v


def evaluator_config(spec: ExperimentSpec) -> dict[str, Any]:
    """The evaluator as a mapping with its ``name`` (``{"name": None}`` when the file names none)."""
    if isinstance(spec.evaluator, dict):
        return dict(spec.evaluator)
    return {"name": spec.evaluator}


def evaluator_key(config: Mapping[str, Any], identity: Mapping[str, Any]) -> dict[str, Any]:
    """What the evaluator id hashes: the normalised configuration (``normal_config``) and what,
    beyond it, makes two evaluators differ (a judge's topology content)."""
    return {**normal_config(config), **identity}


def evaluator_id(key: Mapping[str, Any]) -> str:
    """Scores are stored per evaluator id: a changed evaluator re-scores, the same one does not."""
    return f"{key.get('name')}:{canonical_hash(dict(key))}"


def stored_evaluator_id(
    manifest: Any, key: Mapping[str, Any], identity: Mapping[str, Any], new_id: str
) -> str:
    """The id the store's verdicts are kept under when they are the same evaluator's as ``key``'s,
    else ``new_id``. The manifest's ``evaluator_key`` is the hash of the key its id was kept for (a
    custom evaluator's identity need not be JSON). A store of an older moa has none: its id hashed
    the raw ``evaluator:`` mapping, which is kept when it reproduces (same judge content) and
    normalises to ``key``; re-judging every pair because the recipe changed would pay the judge
    again."""
    if not isinstance(manifest, Mapping) or not isinstance(old := manifest.get("evaluator_id"), str):
        return new_id
    if "evaluator_key" in manifest:
        return old if manifest["evaluator_key"] == canonical_hash(dict(key)) else new_id
    raw = manifest.get("evaluator")
    if (
        isinstance(raw, Mapping)
        and evaluator_id({**raw, **identity}) == old
        and evaluator_key(raw, identity) == key
    ):
        return old
    return new_id


#: suffixes of datasets only (a `.json` file may be either)
_DATASET_SUFFIXES = (".jsonl", ".csv", ".gz", ".parquet")


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment file; one line per problem, naming the file."""
    p = Path(path)
    if p.suffix.lower() in _DATASET_SUFFIXES and p.is_file():
        # read as YAML, rows gave "expected '<document start>'" with no word of what to give instead
        raise UserError(
            f"{p}: a dataset, not an experiment file: give `moa compare` an experiment file (YAML) "
            f"naming it as `dataset: {p.name}`, with `evaluator`, `baseline` and `setups`"
        )
    data = read_document(p, what="experiment file", missing="no such experiment file")
    if not isinstance(data, Mapping):
        raise TopologyError([not_a_mapping(data)], source=str(p))
    return validate_spec(data, source=str(p))


def validate_spec(data: Mapping[str, Any], *, source: str) -> ExperimentSpec:
    """``data`` as an experiment; ``TopologyError`` with one line per problem, naming ``source``."""
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as err:
        lines = [
            "experiment:" + line.removeprefix("topology:") if line.startswith("topology:") else line
            for line in format_validation_error(err, data, model=ExperimentSpec)
        ]
        if "dataset" not in data and ("agents" in data or "kind" in data):
            lines.insert(
                0,
                "experiment: this is a topology file (`kind`, `agents`): run it with `moa run`, or "
                "name it under `setups` or `baseline` of an experiment file",
            )
        raise TopologyError(lines, source=source) from None


@dataclass(frozen=True, slots=True)
class Setup:
    """A setup resolved to a validated topology, with the hash that keys its stored runs."""

    name: str
    topology: Topology
    source: str
    hash: str
    is_baseline: bool
    #: the hash of what the topology reads from files its dump only names (a cascade's stage judge
    #: named by file or preset), None when it names none: ``hash`` misses an edit of that file, so
    #: the store keeps this beside it (meta ``named_raters``) and a resume compares them
    named: str | None = None
    #: the cache scope its replies are keyed under (sample 0): its name's, unless it was renamed
    #: (``moa.experiment.renames``); None: ``name:hash``
    cache_scope: str | None = None


def _named_hash(topo: Any) -> str | None:
    """The hash of the raters a cascade's stages name by file or preset (their dump holds the name,
    not the rater), or None when it names none. An edited rater file left the setup's hash as it
    was, so a resume kept the runs the old rater accepted and ran the rest under the new one."""
    from moa.cascade.definition import Cascade
    from moa.cascade.rules import Judge

    if not isinstance(topo, Cascade):
        return None
    named = {
        # topology_hash: a field a newer moa adds, at its default, leaves the hash as it was
        str(k): topology_hash(stage.rule.topology.model_dump(mode="json"))
        for k, (spec, stage) in enumerate(zip(topo.stages, topo.stage_list, strict=True))
        if isinstance(stage.rule, Judge)
        and spec.accept is not None
        and spec.accept.judge is not None
        and isinstance(spec.accept.judge.topology, str)
    }
    return canonical_hash(named) if named else None


def answers_read_tests(topo: Any) -> bool:
    """Whether the topology's answers depend on the item's tests, not only its input: a cascade
    with a ``tests`` rule answers with the first stage whose answer passes them."""
    from moa.cascade.definition import Cascade
    from moa.cascade.rules import Tests

    return isinstance(topo, Cascade) and any(isinstance(s.rule, Tests) for s in topo.stage_list)


def _one(entry: str | SetupEntry, base_dir: Path | None, is_baseline: bool, field: str) -> Setup:
    ref = entry if isinstance(entry, str) else entry.topology
    try:
        topo = load(ref, relative_to=base_dir)
    except TopologyError:
        raise  # already one line per problem, naming the topology file
    except UserError as e:
        raise UserError(f"{field}: {e}") from None
    name = entry.name if isinstance(entry, SetupEntry) and entry.name else topo.name
    dump_hash = topology_hash(topo.model_dump(mode="json"))
    return Setup(name, topo, str(ref), dump_hash, is_baseline, _named_hash(topo))


def resolve_setups(spec: ExperimentSpec, base_dir: Path | None, *, source: str = "experiment") -> list[Setup]:
    """The baseline first, then the setups; every topology is validated before any call."""
    out = [_one(spec.baseline, base_dir, True, f"{source}: baseline")]
    for i, entry in enumerate(spec.setups):
        s = _one(entry, base_dir, False, f"{source}: setups[{i}]")
        clash = next((o for o in out if o.name == s.name), None)
        if clash is not None:
            if clash.hash == s.hash:
                continue  # the baseline listed among the setups too: it runs once
            raise UserError(
                f"{source}: setups[{i}]: two setups are named `{s.name}`; give one a name with "
                "`{topology: ..., name: ...}`"
            )
        out.append(s)
    if len(out) == 1:  # every setup was the baseline: a table of one row, and no Δ, no p, no ×
        raise UserError(
            f"{source}: setups: every setup is the baseline `{out[0].name}`, so nothing is compared with "
            "it; add a setup that differs"
        )
    return out


def describe_evaluator(config: Mapping[str, Any]) -> str:
    """An evaluator's configuration as one short text: ``exact {extract_final: true, numbers: true}``
    (its name alone when it has no options), as the table's footer and ``--dry-run`` show it."""
    rest = {k: v for k, v in config.items() if k != "name"}
    if not rest:
        return str(config.get("name"))
    shown = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in rest.items())
    return f"{config.get('name')} {{{shown}}}"
