"""A topology's hash is its identity in stored results (the resume check, the call cache's scope,
the judge's identity, the viewer's graph): it must not move when moa adds a spec field with a
default, or every stored experiment reads as changed after an upgrade, refused on resume with its
paid-for replies out of reach."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from moa.eval.hashing import canonical_hash, topology_hash
from moa.topology.loader import load, presets

#: each preset's hash as moa stored it before `retry.max_retry_after_s` and
#: `pricing.cache_write_1h_per_mtok` existed (commit 71baadb). A preset whose content is edited
#: gets a new hash here; a spec field added with a default goes in `moa.eval.hashing._ADDED_DEFAULTS`
STORED = {
    "cascade-agree": "eee1dbfdc8fe2a8c",
    "hierarchical": "2e869b71d21c0023",
    "local-cascade": "388a9d1ca4c5f78a",
    "local-self-moa": "fb3fa35e165a94cf",
    "local-single": "28abc9ea0357b382",
    "moa-2x3": "5869d1d8c9c1541b",
    "parallel-3": "ebf42ecd5a72b79e",
    "self-moa-4": "90e718aa4b3a617e",
    "sequential-refine": "c23afdfa45eb5494",
    "single": "950d18a1437ad1c0",
}


@pytest.mark.parametrize("name", sorted(STORED))
def test_a_presets_hash_is_what_stores_hold(name: str) -> None:
    assert topology_hash(load(presets()[name]).model_dump(mode="json")) == STORED[name]


def _without(dump: Any, parent: str, key: str) -> Any:
    if isinstance(dump, list):
        return [_without(v, parent, key) for v in dump]
    if not isinstance(dump, dict):
        return dump
    return {
        k: _without(
            {x: y for x, y in v.items() if x != key} if k == parent and isinstance(v, dict) else v,
            parent,
            key,
        )
        for k, v in dump.items()
    }


def test_a_new_field_at_its_default_leaves_the_hash_but_set_it_moves() -> None:
    dump = load(presets()["parallel-3"]).model_dump(mode="json")
    assert topology_hash(dump) == canonical_hash(_without(dump, "retry", "max_retry_after_s"))
    changed = copy.deepcopy(dump)
    next(iter(changed["agents"].values()))["retry"]["max_retry_after_s"] = 300.0
    assert topology_hash(changed) != topology_hash(dump)
    priced = copy.deepcopy(dump)
    agent = next(iter(priced["agents"].values()))
    agent["pricing"] = {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "cache_write_1h_per_mtok": None}
    before = _without(priced, "pricing", "cache_write_1h_per_mtok")
    assert topology_hash(priced) == canonical_hash(_without(before, "retry", "max_retry_after_s"))
    agent["pricing"]["cache_write_1h_per_mtok"] = 6.0
    assert topology_hash(priced) != topology_hash(before)
