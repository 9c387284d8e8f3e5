"""The JSON Schema of topology files, both forms: a topology (nodes or a ``kind:`` shorthand) and a
cascade (``kind: cascade`` with ``stages``). ``moa schema`` prints it and the wheel ships it as
``moa/topology.schema.json``, for editors; the loader stays the judge, and a test holds the two to
the same answer on the presets, the examples, a set of bad files and each of the loader's limits."""

from __future__ import annotations

import copy
from typing import Any

from pydantic.json_schema import models_json_schema

from moa.cascade.definition import NOT_IN_CASCADE, Cascade
from moa.topology.definition import Topology
from moa.topology.spec import MAX_GRAPH, MAX_LAYERS, MAX_LIST

__all__ = ["topology_file_schema"]


def topology_file_schema() -> dict[str, Any]:
    """One schema for every file ``moa.load`` reads: exactly one of a topology or a cascade."""
    _, schema = models_json_schema([(Topology, "validation"), (Cascade, "validation")], title="moa topology")
    defs = schema["$defs"]
    cascade = defs["Cascade"]
    cascade["properties"] = {k: v for k, v in cascade["properties"].items() if k not in NOT_IN_CASCADE}
    # the loader reads a file as a cascade only when it says `kind: cascade`
    cascade["required"] = sorted({*cascade.get("required", []), "kind"})
    # `accept: tests` is the loader's shorthand for `accept: {tests: true}`
    defs["StageSpec"]["properties"]["accept"]["anyOf"].insert(1, {"const": "tests"})
    # a Python rule cannot be written in a file, but a dump holds its absence (`custom: null`)
    defs["AcceptSpec"]["properties"]["custom"] = {"type": "null", "description": "Python only: a function."}
    # a stage's topology written inline is a topology file's content, checked as one
    defs["StageSpec"]["properties"]["topology"]["anyOf"] = [
        {"$ref": "#/$defs/Topology"} if branch.get("type") == "object" else branch
        for branch in defs["StageSpec"]["properties"]["topology"]["anyOf"]
    ]
    _add_limits(defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "moa topology",
        "description": "A moa topology file: agents with explicit `nodes` or a `kind:` shorthand, "
        "or a `kind: cascade` of stages.",
        "oneOf": [{"$ref": "#/$defs/Topology"}, {"$ref": "#/$defs/Cascade"}],
        "$defs": defs,
    }


#: a control character (``require_printable`` refuses them in names, model strings and references);
#: refused with ``not``, as a search: an anchored ``^...$`` lets Python's ``$`` pass a final newline
_CONTROL = r"[\u0000-\u001f\u007f-\u009f]"
_NAME: dict[str, Any] = {"not": {"pattern": _CONTROL}}
_NAMES: dict[str, Any] = {"items": {"type": "string", **_NAME}}
_AGENT_LIST = {**_NAMES, "maxItems": MAX_LIST}
# not blank (the loader strips it)
_NOT_BLANK = {"pattern": r"\S", **_NAME}
# nor a provider alone (`openai/`)
_MODEL = {"pattern": r"\S", "not": {"anyOf": [{"pattern": _CONTROL}, {"pattern": r"/\s*$"}]}}

#: the limits the loader's validators enforce (``moa.topology.spec``, ``moa.cascade.stages``), by
#: definition, property and JSON type of the branch they bound: a file the schema passes must not
#: be one the loader refuses (the count of nodes plus inputs has no JSON Schema form but its bound)
_LIMITS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "Topology": {
        "name": {"string": _NAME},
        "output": {"string": _NAME},
        "agent": {"string": _NAME},
        "aggregator": {"string": _NAME},
        "manager": {"string": _NAME},
        "steps": {"array": _AGENT_LIST},
        "workers": {"array": _AGENT_LIST},
        "proposers": {"array": _AGENT_LIST},
        "layers": {
            "integer": {"minimum": 1, "maximum": MAX_LAYERS},
            "array": {"maxItems": MAX_LAYERS, "items": {"type": "array", **_AGENT_LIST}},
        },
        "nodes": {"array": {"maxItems": MAX_GRAPH}},
        "agents": {"object": {"propertyNames": _NAME}},
        "stages": {"array": {"maxItems": MAX_LIST}},
    },
    "AgentSpec": {
        "model": {"string": _MODEL},
        "fallbacks": {"array": {"items": {"type": "string", **_NOT_BLANK}}},
        "api_base": {"string": _NAME},
    },
    "NodeSpec": {
        "agent": {"string": _NAME},
        "instruction_from": {"string": _NAME},
        "inputs": {"array": _NAMES},
    },
    "StageSpec": {
        "agent": {"string": _NAME},
        "output": {"string": _NAME},
        "topology": {"string": _NAME},
        "nodes": {"array": {"maxItems": MAX_GRAPH}},
    },
}


def _add_limits(defs: dict[str, Any]) -> None:
    defs_of = {**_LIMITS, "Cascade": _LIMITS["Topology"]}
    for name, properties in defs_of.items():
        found = defs[name]["properties"]
        for prop, by_type in properties.items():
            if prop not in found:
                continue  # a topology's field a cascade does not hold, or the reverse
            branches = found[prop].get("anyOf", [found[prop]])
            for typ, extra in by_type.items():
                (branch,) = [b for b in branches if b.get("type") == typ]
                branch.update(copy.deepcopy(extra))
