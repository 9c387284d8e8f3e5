"""Setups renamed in the experiment file: found before the answer phase, and their stored work carried
to the new name, so a rename costs nothing.

A setup is taken for a renamed one when it has nothing stored under its name and exactly one stored
setup of the same topology hash (and the same stage judges' files, for a cascade) is gone from the
experiment. Two setups of one topology in one experiment are never merged: each is its own sample
(sharing replies would make their paired comparison a comparison of one draw with itself). When the
match is not one to one (two stored setups of the topology gone, or two new ones), which one was
renamed is not known: the new setups run, and a note says why."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from moa.experiment.config import Setup
from moa.experiment.store.database import Store
from moa.experiment.store.renames import cache_scopes, rename_setup, scope_base, stored_setups
from moa.experiment.tune import TUNE_PAID, TUNE_TRACES, TUNE_UNKNOWN

__all__ = ["Renames", "carry_renames", "find_renames", "with_scopes"]


@dataclass(slots=True)
class Renames:
    """The setups renamed, new name -> old name, and a note per rename that could not be told."""

    renamed: dict[str, str] = field(default_factory=dict)
    unclear: list[str] = field(default_factory=list)

    def stored_name(self, name: str) -> str:
        """The name ``name``'s runs are stored under before the renames are carried."""
        return self.renamed.get(name, name)


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in sorted(names))


def find_renames(store: Store, setups: Sequence[Setup], named: Mapping[str, object]) -> Renames:
    """The renames ``setups`` make of the setups stored in ``store`` (read only: ``--dry-run`` uses
    it); ``named`` is the stored hashes of cascades' stage judges, by ``name:hash``."""
    stored = stored_setups(store)
    now = {s.name for s in setups}
    gone: dict[str, list[str]] = {}
    for name, topo_hash in stored:
        if name not in now:
            gone.setdefault(topo_hash, []).append(name)
    fresh: dict[str, list[Setup]] = {}
    for s in setups:
        if (s.name, s.hash) not in stored:
            fresh.setdefault(s.hash, []).append(s)
    out = Renames()
    for topo_hash, new in fresh.items():
        old = gone.get(topo_hash, [])
        if not old:
            continue
        if len(old) == 1 and len(new) == 1:
            s = new[0]
            # a stage judge's file edited since is another setup (a store of an older moa kept none)
            if s.named is None or named.get(f"{old[0]}:{topo_hash}", s.named) == s.named:
                out.renamed[s.name] = old[0]
            continue
        them = "setup" if len(new) == 1 else "setups"
        out.unclear.append(
            f"{them} {_names([s.name for s in new])} of the same topology as stored setups {_names(old)}, "
            f"which are not in this experiment, ran anew: which was renamed to which is not known "
            "(rename one at a time to carry its runs over)"
            if len(old) > 1
            else f"{them} {_names([s.name for s in new])} of the same topology as stored setup "
            f"{_names(old)}, which is not in this experiment, ran anew: which one it was renamed to is "
            "not known (rename one at a time to carry its runs over)"
        )
    return out


def carry_renames(store: Store, setups: Sequence[Setup], found: Renames, named_key: str) -> list[str]:
    """Carry each rename's stored work to its new name (runs, verdicts, votes, the cache scope, the
    stage judges' hashes under ``named_key``, what its tuning paid and traced); returns the notes."""
    notes = []
    for s in setups:
        old = found.renamed.get(s.name)
        if old is None:
            continue
        rename_setup(store, old, s.name, s.hash)
        # what tuning it paid, and its raters' hashes, are kept by ``name:hash``
        for key in (named_key, TUNE_PAID, TUNE_UNKNOWN):
            _move_meta(store, key, f"{old}:{s.hash}", f"{s.name}:{s.hash}")
        traces = store.get_meta(TUNE_TRACES)
        if isinstance(traces, dict):
            prefix = f"{old}:{s.hash}:"
            moved = {
                (f"{s.name}:{s.hash}:" + k[len(prefix) :] if k.startswith(prefix) else k): v
                for k, v in traces.items()
            }
            store.set_meta(TUNE_TRACES, moved)
        store.commit()
        notes.append(
            f"setup `{old}` is now `{s.name}` (the same topology): its stored runs, scores and cached "
            "replies were carried over, nothing was run again"
        )
    return notes + found.unclear


def _move_meta(store: Store, key: str, old: str, new: str) -> None:
    try:
        book = store.get_meta(key)
    except ValueError:
        return
    if isinstance(book, dict) and old in book:
        book[new] = book.pop(old)
        store.set_meta(key, book)


def with_scopes(store: Store, setups: Sequence[Setup]) -> list[Setup]:
    """``setups`` with the cache scope each one's replies are keyed under (``scope_base``)."""
    scopes = cache_scopes(store)
    return [dataclasses.replace(s, cache_scope=scope_base(scopes, s.name, s.hash)) for s in setups]
