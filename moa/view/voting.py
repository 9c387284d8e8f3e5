"""Blind A/B voting (``moa view --vote --voter NAME``): the pairs a voter is shown, in an order of their
own, each with its sides drawn once and for all, and what the page sees of a pair before and after
the vote.

A pair is one item's answers from a setup and from the baseline (``--pairs all``: from any two
setups), sample 0, both runs successful. Which answer is A is a hash of the voter, the pair and a
secret kept in the store, so a reload, a restart or a second look shows the same sides, different
voters see different ones, and nobody works the sides out from the setup names.
Before the vote the page gets the pair's opaque token and the two answers, never the setup names.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from moa.experiment.store.database import Store
from moa.experiment.store.votes import VERDICTS, PairKey
from moa.view.queries import stored_item

__all__ = [
    "Pair",
    "PairMode",
    "VoteQueue",
    "build_pairs",
    "left_side",
    "pair_view",
    "reveal",
    "side_secret",
    "unreadable_items",
]

PairMode = Literal["baseline", "all"]

#: the meta key of the store's secret that the sides are drawn with
SIDE_SECRET_KEY = "vote_side_secret"

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Pair:
    """``setup`` against ``other_setup`` (the baseline, or the setup listed earlier) on one item."""

    item_id: str
    sample: int
    setup: str
    other_setup: str

    @property
    def key(self) -> PairKey:
        return (self.item_id, self.sample, self.setup, self.other_setup)


def side_secret(store: Store) -> str:
    """The store's secret for drawing sides, made on first use. Kept in the store so sides stay put
    across restarts; secret because a hash of public names alone lets a voter compute them."""
    with store.conn:
        store.conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
            (SIDE_SECRET_KEY, json.dumps(secrets.token_hex(16))),
        )
    return str(store.get_meta(SIDE_SECRET_KEY))


def left_side(voter: str, pair: Pair, secret: str) -> str:
    """The setup shown first (A) to ``voter``: fixed per voter, pair and store secret."""
    digest = hashlib.sha256("\x00".join([secret, voter, *map(str, pair.key)]).encode()).digest()
    return pair.setup if digest[0] & 1 else pair.other_setup


def unreadable_items(store: Store) -> set[str]:
    """Items whose stored data is not a JSON object (a broken store): no question to show."""
    return {
        item_id
        for (item_id,) in store.conn.execute(
            "SELECT item_id FROM items WHERE NOT (json_valid(data) AND json_type(data) = 'object')"
        )
    }


def build_pairs(store: Store, manifest: Mapping[str, Any], mode: PairMode) -> list[Pair]:
    """Every pair with two successful answers, in the manifest's item order (items that cannot be
    read are left out: ``unreadable_items``)."""
    setups = list(manifest["setups"])
    broken = unreadable_items(store)
    answered: dict[str, set[str]] = {}
    for s in setups:
        answered[s["name"]] = {
            item_id
            for (item_id,) in store.conn.execute(
                "SELECT item_id FROM runs WHERE setup = ? AND topo_hash = ? AND sample = 0 "
                "AND error IS NULL AND answer IS NOT NULL",
                (s["name"], s["hash"]),
            )
        }
    base = next(s["name"] for s in setups if s["is_baseline"])
    others = [s["name"] for s in setups if not s["is_baseline"]]
    combos = [(s, base) for s in others]
    if mode == "all":
        combos += [(others[j], others[i]) for j in range(len(others)) for i in range(j)]
    return [
        Pair(item_id, 0, a, b)
        for item_id in manifest["item_ids"]
        if item_id not in broken
        for a, b in combos
        if item_id in answered[a] and item_id in answered[b]
    ]


class VoteQueue:
    """One voter's pairs in their own shuffled order; skipped pairs come back at the end."""

    def __init__(self, voter: str, pairs: list[Pair], *, seed: str, secret: str) -> None:
        self.voter = voter
        self.secret = secret
        self._seed = f"{seed}\x00{voter}"
        self._source = pairs
        self.order = self._shuffled(pairs)
        self.skipped: list[Pair] = []
        self._tokens: dict[str, Pair] = {}
        self._by_pair: dict[Pair, str] = {}
        #: this session's votes (vote id, pair), newest last: what undo takes back
        self.cast: list[tuple[int, Pair]] = []

    def _shuffled(self, pairs: list[Pair]) -> list[Pair]:
        # a voter-specific order: two people voting at once cover different items first
        out = list(pairs)
        random.Random(hashlib.sha256(self._seed.encode()).digest()).shuffle(out)
        return out

    def refresh(self, pairs: list[Pair]) -> None:
        """Follow the store: pairs answered since (a run still going) join the end in the voter's
        own order; pairs whose answers are gone (a run redone) leave."""
        if pairs is self._source:
            return
        self._source = pairs
        now = set(pairs)
        known = set(self.order)
        self.order = [p for p in self.order if p in now] + self._shuffled(
            [p for p in pairs if p not in known]
        )
        self.skipped = [p for p in self.skipped if p in now]

    def next(self, voted: set[PairKey]) -> Pair | None:
        skipped = set(self.skipped)
        for p in self.order:
            if p.key not in voted and p not in skipped:
                return p
        return next((p for p in self.skipped if p.key not in voted), None)

    def skip(self, pair: Pair) -> None:
        if pair in self.skipped:
            self.skipped.remove(pair)
        self.skipped.append(pair)

    def left(self, pair: Pair) -> str:
        """The setup this voter sees as A on ``pair``."""
        return left_side(self.voter, pair, self.secret)

    def token(self, pair: Pair) -> str:
        """An opaque name for the pair (the page must not learn the setups before the vote)."""
        t = self._by_pair.get(pair)
        if t is None:
            t = secrets.token_urlsafe(9)
            self._tokens[t], self._by_pair[pair] = pair, t
        return t

    def pair(self, token: str) -> Pair | None:
        return self._tokens.get(token)


def _side(store: Store, manifest: Mapping[str, Any], setup: str, pair: Pair, code: bool) -> dict[str, Any]:
    s = next(x for x in manifest["setups"] if x["name"] == setup)
    r = store.run_for(s["name"], s["hash"], pair.item_id, pair.sample)
    out: dict[str, Any] = {
        "answer": None if r is None else r.answer,
        "turns": None if r is None else r.turn_answers,
    }
    if code and r is not None and not manifest.get("pairwise"):
        # programming items: people see what running each answer gave, as BigCodeArena shows
        row = store.conn.execute(
            "SELECT value, detail FROM scores WHERE run_id = ? AND evaluator_id = ?",
            (r.run_id, manifest["evaluator_id"]),
        ).fetchone()
        if row is not None:
            out["execution"] = {"passed": row[0] >= 1.0 - _EPS, "score": row[0], "detail": row[1]}
    return out


def pair_view(
    store: Store, manifest: Mapping[str, Any], pair: Pair, left: str, token: str, *, code: bool
) -> dict[str, Any]:
    """What the page shows before the vote: the item and the answers as A (``left``'s) and B, no
    setup names."""
    right = pair.other_setup if left == pair.setup else pair.setup
    item = stored_item(store, pair.item_id) or {}
    return {
        "token": token,
        "item": {k: item.get(k) for k in ("id", "input", "turns", "target", "category")},
        "code": code,
        "a": _side(store, manifest, left, pair, code),
        "b": _side(store, manifest, right, pair, code),
    }


def _evaluator_view(store: Store, manifest: Mapping[str, Any], pair: Pair) -> float | None:
    """The evaluator's score of ``setup`` against ``other_setup`` on the pair (0.5 a tie)."""

    def score(name: str) -> float | None:
        s = next(x for x in manifest["setups"] if x["name"] == name)
        r = store.run_for(s["name"], s["hash"], pair.item_id, pair.sample)
        if r is None:
            return None
        row = store.conn.execute(
            "SELECT value FROM scores WHERE run_id = ? AND evaluator_id = ?",
            (r.run_id, manifest["evaluator_id"]),
        ).fetchone()
        return None if row is None else float(row[0])

    base = next(x["name"] for x in manifest["setups"] if x["is_baseline"])
    if manifest.get("pairwise"):
        # the judge compared each setup with the baseline only
        return score(pair.setup) if pair.other_setup == base else None
    mine, theirs = score(pair.setup), score(pair.other_setup)
    if mine is None or theirs is None:
        return None
    d = mine - theirs
    return 1.0 if d > _EPS else 0.0 if d < -_EPS else 0.5


def reveal(store: Store, manifest: Mapping[str, Any], pair: Pair, left: str, verdict: str) -> dict[str, Any]:
    """What the page shows after the vote: who A (``left``) and B were, and what the evaluator said."""
    right = pair.other_setup if left == pair.setup else pair.setup
    machine = _evaluator_view(store, manifest, pair)
    said = None
    if machine is not None:
        # the evaluator's score is the setup's; turned to A's view to compare with the vote
        a_score = machine if left == pair.setup else 1.0 - machine
        said = "A" if a_score > 0.5 + _EPS else "B" if a_score < 0.5 - _EPS else "tie"
    mine = VERDICTS[verdict]
    person = "A" if mine > 0.5 else "B" if mine < 0.5 else "tie"
    return {
        "a": left,
        "b": right,
        "verdict": verdict,
        "evaluator": manifest["evaluator"].get("name"),
        "evaluator_says": said,
        "agree": None if said is None else said == person,
    }
