"""A short stable hash of JSON-able data: what identifies a topology, an evaluator or a judge in
stored results. Here, below both the judge and the experiment, so each computes the same hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_hash", "topology_hash"]


def canonical_hash(data: Any) -> str:
    """A short stable hash of JSON-able data (key order does not matter)."""
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


#: spec fields added after stores existed, by the key that holds them: at their default they leave
#: a topology's hash as it was, or every stored experiment would read as changed after an upgrade
#: (refused on resume, its call cache out of reach). A field added with a default goes here.
_ADDED_DEFAULTS: dict[str, dict[str, Any]] = {
    "retry": {"max_retry_after_s": 120.0},
    "pricing": {"cache_write_1h_per_mtok": None},
}


#: a cascade's dump held the topology fields it does not use, at these values, until it left them
#: out to be a valid cascade file: they are put back to hash, so stored cascades keep their hash
_CASCADE_DROPPED: dict[str, Any] = {
    **dict.fromkeys(("nodes", "output", "agent", "steps", "workers", "aggregator", "reduce", "quorum"), None),
    **dict.fromkeys(("manager", "layers", "proposers", "samples"), None),
    "vote_on": "text",
    "on_quorum": "cancel",
}


def topology_hash(dump: Any) -> str:
    """The hash identifying a topology (or a cascade) in stored results, from its
    ``model_dump(mode="json")``."""
    if isinstance(dump, dict) and dump.get("kind") == "cascade":
        dump = {**_CASCADE_DROPPED, **dump}
    return canonical_hash(_without_added_defaults(dump))


def _without_added_defaults(value: Any) -> Any:
    if isinstance(value, list):
        return [_without_added_defaults(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, v in value.items():
        added = _ADDED_DEFAULTS.get(key)
        if added is not None and isinstance(v, dict):
            v = {k: x for k, x in v.items() if k not in added or x != added[k]}
        out[key] = _without_added_defaults(v)
    return out
