"""A setup carried to a new name: its stored runs, pairwise verdicts, paid judge attempts and people's
votes move to the name, and the cache scope its replies were keyed under goes with it.

A cached reply's key is a hash of its scope (the setup's name and topology hash), so it cannot be
moved: the store keeps, in meta ``cache_scopes``, the scope each renamed setup's replies are keyed
under (``{"new:hash": "old:hash"}``). A later setup that takes the old name back is another setup:
its replies get a scope of their own, since replaying the renamed setup's would make the two
setups' answers one draw (``scope_base``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from moa.experiment.store.schema import has_table

if TYPE_CHECKING:
    from moa.experiment.store.database import Store

__all__ = ["CACHE_SCOPES", "cache_scopes", "rename_setup", "scope_base", "stored_setups"]

#: the meta key of the renamed setups' cache scopes, ``{"name:hash": scope}``
CACHE_SCOPES = "cache_scopes"


def stored_setups(store: Store) -> set[tuple[str, str]]:
    """The (setup name, topology hash) of every setup with a run stored."""
    return {(str(a), str(b)) for a, b in store.conn.execute("SELECT DISTINCT setup, topo_hash FROM runs")}


def cache_scopes(store: Store) -> dict[str, str]:
    """The renamed setups' cache scopes (``name:hash`` -> the scope their replies are keyed under)."""
    try:
        scopes = store.get_meta(CACHE_SCOPES)
    except ValueError:  # edited by hand: no rename is known
        return {}
    if not isinstance(scopes, dict):
        return {}
    return {str(k): v for k, v in scopes.items() if isinstance(v, str)}


def scope_base(scopes: Mapping[str, str], name: str, topo_hash: str) -> str:
    """The cache scope of setup ``name`` (sample 0; ``sample_scope`` adds the others): the scope its
    replies were first keyed under when it was renamed, else ``name:hash`` unless a renamed setup's
    replies hold that one (the name was taken back by another setup), then ``name:hash:N``.
    ``scopes`` is ``cache_scopes(store)``, read once for every setup."""
    own = f"{name}:{topo_hash}"
    if own in scopes:
        return scopes[own]
    claimed = set(scopes.values())
    base, n = own, 1
    while base in claimed:
        base, n = f"{own}:{n}", n + 1
    return base


def rename_setup(store: Store, old: str, new: str, topo_hash: str) -> None:
    """Carry setup ``old``'s stored work (of topology ``topo_hash``) to ``new``, in one transaction.
    Scores and verdicts follow their run ids; the judge's cache is keyed by run ids, not names."""
    with store.conn:
        scopes = cache_scopes(store)
        base = scope_base(scopes, old, topo_hash)
        scopes.pop(f"{old}:{topo_hash}", None)
        scopes[f"{new}:{topo_hash}"] = base
        store.set_meta(CACHE_SCOPES, scopes)
        store.conn.execute("UPDATE runs SET setup=? WHERE setup=? AND topo_hash=?", (new, old, topo_hash))
        if has_table(store.conn, "judge_failures"):
            store.conn.execute(
                "UPDATE judge_failures SET setup=? WHERE setup=? AND topo_hash=?", (new, old, topo_hash)
            )
        # votes name setups without their topology: the old name is in no setup of the experiment now
        for column in ("setup", "other_setup", "left_setup"):
            store.conn.execute(f"UPDATE OR IGNORE votes SET {column}=? WHERE {column}=?", (new, old))
