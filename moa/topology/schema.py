"""The JSON Schema of topology files, both forms: a topology (nodes or a ``kind:`` shorthand) and a
cascade (``kind: cascade`` with ``stages``). ``moa schema`` prints it and the wheel ships it as
``moa/topology.schema.json``, for editors; the loader stays the judge, and a test holds the two to
the same answer on the presets, the examples and a set of bad files."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from moa.cascade.definition import NOT_IN_CASCADE, Cascade
from moa.topology.definition import Topology

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
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "moa topology",
        "description": "A moa topology file: agents with explicit `nodes` or a `kind:` shorthand, "
        "or a `kind: cascade` of stages.",
        "oneOf": [{"$ref": "#/$defs/Topology"}, {"$ref": "#/$defs/Cascade"}],
        "$defs": defs,
    }
