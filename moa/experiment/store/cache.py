"""The experiment's call cache: model replies stored in the experiment's SQLite file, keyed by the
exact request, the node and a scope, so a re-run (or a resumed pair) sends nothing it already sent.

In the answer phase the key holds the item too: two items with the same prompt are two requests, as
they would be without a cache (sharing one reply made k rows of a repeated question one sample, and
counted its cost k times). A second table (``cache_items``) notes which item each reply belongs to: a
pair run on a Dask worker, which cannot read this file, takes its item's replies along
(``StoreCache.replies``) and sends back the ones it added. Replies cached before keys held the item
are still found under their old key, by the item that made them; one noted for no item (made before
``cache_items``, or by the judge before its pairs had keys) goes to the first item that finds it,
and is then noted as that item's: one call paid once serves one item.

The judge's cache (scope ``judge:<evaluator>``) holds one judged pair per "item": the item, the
sample and the ids of both runs (``score_answers``), so each pair's verdicts are its own calls."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from moa.calls.call import CachedReply
from moa.errors import StoreError, UserError
from moa.experiment.store.checks import CACHE_TYPES, edited, parsed_call_row
from moa.experiment.store.database import damaged
from moa.models.base import ModelReply, ModelRequest
from moa.results import Attempt, Usage

if TYPE_CHECKING:
    from moa.experiment.store.database import Store

__all__ = ["StoreCache", "cache_key", "sample_scope"]

_COLUMNS = ", ".join(name for name, _ in CACHE_TYPES)


def sample_scope(setup: str, topo_hash: str, sample: int, *, base: str | None = None) -> str:
    """The cache scope of one sample of a setup: samples must not share replies, or pass@k would
    score k copies of one answer. Sample 0 keeps the scope stores had before samples existed.
    ``base``: the setup's own scope where it is not ``setup:hash`` (a renamed setup's)."""
    base = base or f"{setup}:{topo_hash}"
    return base if sample == 0 else f"{base}:sample{sample}"


def cache_key(scope: str, node: str, request: ModelRequest, item_id: str | None = None) -> str:
    """The key of ``request`` sent by ``node`` in ``scope`` for ``item_id`` (None: the key replies
    had before it held the item): the same on the driver and on a worker."""
    fields: dict[str, Any] = {"scope": scope, "node": node, "request": request.cache_key_fields()}
    if item_id is not None:
        fields["item"] = item_id
    raw = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()


def _reply(row: Sequence[Any]) -> CachedReply:
    (text, model, reply_model, finish, prompt, completion, cost, latency, queued, estimated, read, write, write_1h,
     suspect, tier, log, answer_only) = row  # fmt: skip
    usage = Usage(prompt, completion, read, write, write_1h)
    reply = ModelReply(text, usage, reply_model, finish, usage_estimated=bool(estimated), service_tier=tier)
    # NULL: cached before schema 6 kept times, so the replay cannot say how long the call took (nor
    # whether its usage was estimated: moa did not tell then)
    # NULL too before schema 8, whose replies may still begin with their reasoning (taken out on replay)
    return CachedReply(
        reply,
        model,
        cost,
        latency or 0.0,
        queued or 0.0,
        bool(estimated),
        bool(suspect),
        _attempts(log),
        answer_only=bool(answer_only),
    )


def _attempts(entries: list[dict[str, Any]] | None) -> tuple[Attempt, ...]:
    """The first call's attempts as cached, parsed when checked (none for a reply cached before
    schema 7)."""
    entries = entries or []
    return tuple(Attempt.from_dict(e, float(e.get("worst_case_usd", 0.0))) for e in entries)


class StoreCache:
    """The ``CallCache`` of one setup sample (or one judge): replies keyed by the exact request and node.

    The key also holds a scope (the setup's name, hash and sample) so two setups that happen to send
    the same request to a node of the same id still get independent samples, as they would without a
    cache. With ``item_id`` (the answer phase: one cache per pair), the key holds the item and every
    reply put is noted as that item's. Each reply is committed as it is put: a kill mid-pair must not lose the calls
    that already answered (committed with the next finished pair, they were re-sent and paid again
    when no other pair finished first). In WAL with ``synchronous=NORMAL`` a commit is no fsync."""

    def __init__(self, store: Store, scope: str, item_id: str | None = None) -> None:
        self.store = store
        self.scope = scope
        self.item_id = item_id
        #: key -> the key the same request had before keys held the item
        self._legacy: dict[str, str] = {}

    def key(self, node: str, request: ModelRequest) -> str:
        key = cache_key(self.scope, node, request, self.item_id)
        if self.item_id is not None:
            self._legacy[key] = cache_key(self.scope, node, request)
        return key

    def get(self, key: str) -> CachedReply | None:
        try:
            return self._get(key)
        except sqlite3.Error as e:
            raise self._failed(e, f"reading cached reply {key[:16]}") from e

    def _get(self, key: str) -> CachedReply | None:
        row = self._row(key)
        legacy = self._legacy.get(key)
        if row is None and legacy is not None and self._legacy_is_mine(legacy):
            row = self._row(legacy)
            if row is not None:
                # claimed, and committed at once: an unowned old reply found by every item with the
                # same request was counted in each item's cost; left uncommitted, the claim would
                # hold the store's write lock across the pair's next model call
                self._note(legacy)
                self.store.commit()
        return None if row is None else _reply(row)

    def _row(self, key: str) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self.store.conn.execute(
            f"SELECT {_COLUMNS} FROM cache WHERE key=?", (key,)
        ).fetchone()
        return None if row is None else self._checked(key, row)

    def _checked(self, key: str, row: Sequence[Any]) -> Sequence[Any]:
        """``row`` with its attempt log parsed, or ``UserError`` naming the store, the reply and the
        field when a field is not of its type or shape: replayed, a text cost or an unreadable
        attempt log crashed the run or silently became another cost (an unreadable log was read as
        no attempts, dropping the worst case of those whose usage is unknown)."""
        problem, values = parsed_call_row(CACHE_TYPES, row)
        if problem is None:
            return values
        raise UserError(edited(self.store.path, f"cached reply {key[:16]} (scope `{self.scope}`): {problem}"))

    def _legacy_is_mine(self, key: str) -> bool:
        """An old-key reply is this item's when noted as its own, or noted for no item at all
        (cached before ``cache_items`` existed): the first item that finds such a reply claims it."""
        owners = {
            str(r[0])
            for r in self.store.conn.execute(
                "SELECT item_id FROM cache_items WHERE scope=? AND key=?", (self.scope, key)
            )
        }
        return not owners or self.item_id in owners

    def put(self, key: str, value: CachedReply) -> None:
        try:
            self._put(key, value)
        except sqlite3.Error as e:
            # the store's failure, not the call's: as a model's failure it was retried or fallen back
            # from, absorbed by a quorum or stored as the pair's error, and the experiment went on
            # paying for replies it could not keep
            raise self._failed(e, f"caching a reply of model `{value.model}`") from e

    def _failed(self, error: sqlite3.Error, what: str) -> StoreError:
        item = f", item `{self.item_id}`" if self.item_id is not None else ""
        return StoreError(damaged(self.store.path, str(error), f"while {what} (scope `{self.scope}`{item})"))

    def _put(self, key: str, value: CachedReply) -> None:
        r = value.reply
        self.store.conn.execute(
            f"INSERT OR REPLACE INTO cache(key, {_COLUMNS}) VALUES (?{',?' * len(CACHE_TYPES)})",
            (
                key,
                r.text,
                value.model,
                r.model,
                r.finish_reason,
                r.usage.prompt_tokens,
                r.usage.completion_tokens,
                value.cost_usd,
                value.latency_s,
                value.queued_s,
                int(value.usage_estimated),
                r.usage.cached_tokens,
                r.usage.cache_write_tokens,
                r.usage.cache_write_1h_tokens,
                int(value.usage_suspect),
                r.service_tier,
                json.dumps(
                    [{**a.to_dict(), "worst_case_usd": a.worst_case_usd} for a in value.attempt_log],
                    separators=(",", ":"),
                ),
                int(value.answer_only),
            ),
        )
        # committed with the reply: a reply kept is a call paid, whether or not its run is stored
        # (and of the replies whose usage was moa's estimate, as the live budget kept them)
        unknown = sum(a.worst_above_cost_usd for a in value.attempt_log)
        self.store.book_paid(value.cost_usd, unknown)
        self._note(key)
        self.store.commit()

    def has_replies(self) -> bool:
        """Whether this scope holds a reply made for its item (what a stopped experiment can still
        replay); always False without ``item_id``."""
        if self.item_id is None:
            return False
        row = self.store.conn.execute(
            "SELECT 1 FROM cache_items WHERE scope=? AND item_id=? LIMIT 1", (self.scope, self.item_id)
        ).fetchone()
        return row is not None

    def replies(self) -> dict[str, CachedReply]:
        """Every reply this scope cached for its item, by key: what a worker running the pair needs."""
        if self.item_id is None:
            return {}
        rows = self.store.conn.execute(
            f"SELECT c.key, {', '.join('c.' + c for c in _COLUMNS.split(', '))} FROM cache_items i "
            "JOIN cache c ON c.key = i.key WHERE i.scope=? AND i.item_id=?",
            (self.scope, self.item_id),
        )
        return {str(row[0]): _reply(self._checked(str(row[0]), row[1:])) for row in rows}

    def _note(self, key: str) -> None:
        if self.item_id is not None:
            self.store.conn.execute(
                "INSERT OR IGNORE INTO cache_items(scope, item_id, key) VALUES (?,?,?)",
                (self.scope, self.item_id, key),
            )
