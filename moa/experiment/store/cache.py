"""The experiment's call cache: model replies stored in the experiment's SQLite file, keyed by the
exact request, the node and a scope, so a re-run (or a resumed pair) sends nothing it already sent."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from moa.calls.call import CachedReply
from moa.models.base import ModelReply, ModelRequest
from moa.results import Usage

if TYPE_CHECKING:
    from moa.experiment.store.database import Store

__all__ = ["StoreCache", "sample_scope"]


def sample_scope(setup: str, topo_hash: str, sample: int) -> str:
    """The cache scope of one sample of a setup: samples must not share replies, or pass@k would
    score k copies of one answer. Sample 0 keeps the scope stores had before samples existed."""
    base = f"{setup}:{topo_hash}"
    return base if sample == 0 else f"{base}:sample{sample}"


class StoreCache:
    """The ``CallCache`` of one setup sample (or one judge): replies keyed by the exact request and node.

    The key also holds a scope (the setup's name, hash and sample) so two setups that happen to send
    the same request to a node of the same id still get independent samples, as they would without a
    cache. Writes are committed with the next finished pair (one fsync per pair, not per call)."""

    def __init__(self, store: Store, scope: str) -> None:
        self.store = store
        self.scope = scope

    def key(self, node: str, request: ModelRequest) -> str:
        fields = {"scope": self.scope, "node": node, "request": request.cache_key_fields()}
        raw = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()
        return hashlib.sha256(raw).hexdigest()

    def get(self, key: str) -> CachedReply | None:
        row = self.store.conn.execute(
            "SELECT text, model, reply_model, finish_reason, prompt_tokens, completion_tokens, cost_usd "
            "FROM cache WHERE key=?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        reply = ModelReply(row[0], Usage(row[4], row[5]), row[2], row[3])
        return CachedReply(reply, row[1], row[6])

    def put(self, key: str, value: CachedReply) -> None:
        r = value.reply
        self.store.conn.execute(
            "INSERT OR REPLACE INTO cache(key, text, model, reply_model, finish_reason, prompt_tokens, "
            "completion_tokens, cost_usd) VALUES (?,?,?,?,?,?,?,?)",
            (
                key,
                r.text,
                value.model,
                r.model,
                r.finish_reason,
                r.usage.prompt_tokens,
                r.usage.completion_tokens,
                value.cost_usd,
            ),
        )
