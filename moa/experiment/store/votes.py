"""People's blind A/B votes in the experiment store (``moa view --vote``): one row per voter and pair
(a setup's answer against another setup's, usually the baseline's, on the same item and sample).

A pair is kept in one canonical direction, ``setup`` against ``other_setup``, whichever side the
voter saw it on: ``left_setup`` says which was shown first (A), and ``verdict`` is the judge's
five-point token seen from A. Voting again on a pair replaces the voter's earlier vote.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

from moa.errors import UserError
from moa.experiment.store.database import Store

__all__ = [
    "VERDICTS",
    "Vote",
    "add_vote",
    "delete_vote",
    "iter_votes",
    "left_score",
    "vote_count",
    "voted_pairs",
]

#: A's share of the win for each five-point token (the pairwise judge's scale and spelling)
VERDICTS: dict[str, float] = {"A>>B": 1.0, "A>B": 0.75, "A=B": 0.5, "B>A": 0.25, "B>>A": 0.0}

_COLUMNS = "vote_id, item_id, sample, setup, other_setup, left_setup, verdict, voter, voted_at"

#: (item id, sample, setup, other setup): one pair, whoever voted on it
PairKey = tuple[str, int, str, str]


@dataclass(frozen=True, slots=True)
class Vote:
    """One stored vote."""

    vote_id: int
    item_id: str
    sample: int
    setup: str
    other_setup: str
    left_setup: str
    verdict: str
    voter: str
    voted_at: float

    @property
    def value(self) -> float:
        """``setup``'s score against ``other_setup``: 1 much better, 0.5 a tie, 0 much worse."""
        a = left_score(self.verdict)
        return a if self.left_setup == self.setup else 1.0 - a

    @property
    def pair(self) -> PairKey:
        return (self.item_id, self.sample, self.setup, self.other_setup)


def left_score(verdict: str) -> float:
    """A's score for a five-point token; ``UserError`` naming it when it is not one."""
    try:
        return VERDICTS[verdict]
    except KeyError:
        raise UserError(
            f"vote verdict {verdict[:20]!r} is not one of {', '.join(VERDICTS)} (A = the side shown first)"
        ) from None


def _conn(store: Store | sqlite3.Connection) -> sqlite3.Connection:
    return store.conn if isinstance(store, Store) else store


def add_vote(
    store: Store | sqlite3.Connection,
    *,
    item_id: str,
    sample: int,
    setup: str,
    other_setup: str,
    left_setup: str,
    verdict: str,
    voter: str,
    voted_at: float | None = None,
) -> int:
    """Store (or replace) ``voter``'s vote on a pair and commit; returns its id."""
    left_score(verdict)
    if setup == other_setup:
        raise UserError(f"a vote compares two setups, got `{setup}` against itself")
    if left_setup not in (setup, other_setup):
        raise UserError(f"left_setup `{left_setup}` is neither `{setup}` nor `{other_setup}`")
    if not voter.strip():
        raise UserError("a vote needs a voter name")
    conn = _conn(store)
    with conn:
        cur = conn.execute(
            "INSERT OR REPLACE INTO votes(item_id, sample, setup, other_setup, left_setup, verdict, voter, "
            "voted_at) VALUES (?,?,?,?,?,?,?,?)",
            (
                item_id,
                sample,
                setup,
                other_setup,
                left_setup,
                verdict,
                voter,
                time.time() if voted_at is None else voted_at,
            ),
        )
    return int(cur.lastrowid or 0)


def delete_vote(store: Store | sqlite3.Connection, vote_id: int, *, voter: str) -> Vote | None:
    """Delete one of ``voter``'s votes (an undo); returns it, or None when there was none."""
    conn = _conn(store)
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM votes WHERE vote_id=? AND voter=?", (vote_id, voter)
    ).fetchone()
    if row is None:
        return None
    with conn:
        conn.execute("DELETE FROM votes WHERE vote_id=?", (vote_id,))
    return Vote(*row)


def iter_votes(store: Store | sqlite3.Connection, *, voter: str | None = None) -> Iterator[Vote]:
    """Every vote (or one voter's) in the order cast."""
    sql = f"SELECT {_COLUMNS} FROM votes"
    args: tuple[str, ...] = ()
    if voter is not None:
        sql, args = sql + " WHERE voter=?", (voter,)
    for row in _conn(store).execute(sql + " ORDER BY vote_id", args):
        yield Vote(*row)


def voted_pairs(store: Store | sqlite3.Connection, voter: str) -> set[PairKey]:
    """The pairs ``voter`` has voted on."""
    rows = _conn(store).execute(
        "SELECT item_id, sample, setup, other_setup FROM votes WHERE voter=?", (voter,)
    )
    return {(i, int(s), a, b) for i, s, a, b in rows}


def vote_count(store: Store | sqlite3.Connection) -> tuple[int, int]:
    """(votes, voters)."""
    row = _conn(store).execute("SELECT COUNT(*), COUNT(DISTINCT voter) FROM votes").fetchone()
    return int(row[0]), int(row[1])
