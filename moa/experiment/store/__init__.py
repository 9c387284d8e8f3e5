"""The experiment's store: one SQLite file per output folder holding every run, call, score, judge
verdict and cached reply as soon as it exists.

``database`` (the ``Store`` and its queries), ``rows`` (``RunRow``), ``failures`` (the line for a store
that fails), ``schema`` (tables, migrations, the version check),
``calls`` (``CallRecord`` rows), ``cache`` (the call cache a resumed run reads), ``lock`` (one run
per folder).
"""

from __future__ import annotations

from moa.experiment.store.cache import StoreCache, sample_scope
from moa.experiment.store.database import STORE_NAME, RunRow, Store, input_hash, item_hash
from moa.experiment.store.lock import LOCK_NAME, FolderLock
from moa.experiment.store.schema import SCHEMA_VERSION

__all__ = [
    "LOCK_NAME",
    "SCHEMA_VERSION",
    "STORE_NAME",
    "FolderLock",
    "RunRow",
    "Store",
    "StoreCache",
    "input_hash",
    "item_hash",
    "sample_scope",
]
