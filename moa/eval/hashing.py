"""A short stable hash of JSON-able data: what identifies a topology, an evaluator or a judge in
stored results. Here, below both the judge and the experiment, so each computes the same hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_hash"]


def canonical_hash(data: Any) -> str:
    """A short stable hash of JSON-able data (key order does not matter)."""
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]
