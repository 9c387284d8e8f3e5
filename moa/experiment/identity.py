"""A stored experiment against the one about to run: refused when mixing them would mix results (another
experiment, a setup whose topology or stage judges changed, an item whose input changed), else the
differences noted (setups added, left out or renamed, items rescored)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moa.errors import UserError
from moa.eval.datasets import Dataset
from moa.experiment.config import ExperimentSpec, Setup, answers_read_tests
from moa.experiment.renames import carry_renames, find_renames
from moa.experiment.store.database import Store, item_hash

__all__ = ["check_identity", "first_ids", "keep_named", "refuse_mixing", "shown_id", "stored_raters"]


def check_identity(
    store: Store, spec: ExperimentSpec, setups: Sequence[Setup], dataset: Dataset, out: Path
) -> list[str]:
    """Refuse to mix a changed experiment into stored results; note harmless differences."""
    old = refuse_mixing(store, spec, setups, dataset, out)
    if old is None:
        return []
    stored = {s["name"]: s for s in old["setups"]}
    found = find_renames(store, setups, stored_raters(store))
    notes = carry_renames(store, setups, found, _NAMED)
    rescored = store.rescored_items(dataset.items)
    if rescored:
        notes.append(
            f"{len(rescored)} items changed what they are scored against since their answers were "
            f"scored (first: {first_ids(rescored)}): their stored answers were scored again"
        )
        # a `tests` rule chose which stage answered by the old tests: re-scored only, an answer the
        # new tests would have escalated stayed (the cache replays what the new run asks again)
        tested = [s for s in setups if answers_read_tests(s.topology)]
        for s in tested:
            store.forget_runs(s.name, s.hash, rescored)
        if tested:
            names = ", ".join(f"`{s.name}`" for s in tested)
            notes[-1] += f"; {names} ran them again (a `tests` rule chose their answers)"
    now = {s.name for s in setups}
    dropped = sorted(set(stored) - now - set(found.renamed.values()))
    added = sorted(now - set(stored) - set(found.renamed))
    if dropped:
        notes.append(f"stored setups not in this experiment are left out of the report: {', '.join(dropped)}")
    if added:
        notes.append(f"setups added since the last run: {', '.join(added)}")
    n_old, n_new = len(old["item_ids"]), len(dataset.items)
    if n_old != n_new:
        notes.append(f"the experiment now has {n_new} items (the stored run had {n_old})")
    return notes


def refuse_mixing(
    store: Store, spec: ExperimentSpec, setups: Sequence[Setup], dataset: Dataset, out: Path
) -> dict[str, Any] | None:
    """``UserError`` when the stored results are of another experiment, a setup whose topology
    changed or an item whose input did; else the stored manifest (None before the first run)."""
    old = store.manifest()
    if old is None:
        return None
    where = f"{out}"
    fix = "use another --out, or delete the folder to start over"
    if old["experiment"] != spec.name:
        raise UserError(f"{where}: holds experiment `{old['experiment']}`, not `{spec.name}`; {fix}")
    stored = {s["name"]: s for s in old["setups"]}
    named = stored_raters(store)
    for s in setups:
        prev = stored.get(s.name)
        if prev is not None and prev["hash"] != s.hash:
            raise UserError(
                f"{where}: setup `{s.name}` changed since its runs were stored (topology hash "
                f"{prev['hash']} -> {s.hash}); {fix}"
            )
        # a store of an older moa kept no hash of the named raters: what they were is unknown
        if s.named is not None and named.get(f"{s.name}:{s.hash}", s.named) != s.named:
            raise UserError(
                f"{where}: setup `{s.name}` changed since its runs were stored (a stage judge's "
                f"topology file or preset); {fix}"
            )
    changed = list(store.changed_items((i.id, item_hash(i)) for i in dataset.items))
    if changed:
        if any(i in dataset.numbered for i in changed):
            fix = (
                "rows without an `id` are numbered by their place in the file, so inserting or removing "
                f"one renumbers the rows after it: give each row an `id`, and {fix}"
            )
        raise UserError(
            f"{where}: the dataset changed: item {shown_id(changed[0])} (and {len(changed) - 1} more) has a different "
            f"input than the stored runs; {fix}"
        )
    return old


#: the meta key of the hashes of the raters each cascade setup names by file (``Setup.named``), by
#: ``name:hash``: kept for every setup ever run, so one left out of a run and added back is checked
_NAMED = "named_raters"


def stored_raters(store: Store) -> dict[str, Any]:
    try:
        named = store.get_meta(_NAMED)
    except ValueError:  # edited by hand: nothing is known of the raters
        return {}
    return named if isinstance(named, dict) else {}


def keep_named(store: Store, setups: Sequence[Setup]) -> None:
    now = {f"{s.name}:{s.hash}": s.named for s in setups if s.named is not None}
    if now:
        store.set_meta(_NAMED, {**stored_raters(store), **now})


def first_ids(ids: Sequence[str]) -> str:
    return ", ".join(shown_id(i) for i in ids[:3])


def shown_id(item_id: str, width: int = 60) -> str:
    """An item id as a one-line message shows it: the dataset's ids are not checked for newlines,
    escape sequences or length, and one of them must not break or flood the line."""
    if item_id.isprintable() and len(item_id) <= width:
        return f"`{item_id}`"
    text = repr(item_id)
    return text if len(text) <= width else text[: width - 4] + "...'"
