"""Resume and the call cache: what a replayed call reports, what a resumed experiment counts, and
the store's schema for them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from moa.experiment import Store
from moa.experiment.store.schema import SCHEMA_VERSION


def test_a_version_5_store_gains_the_cache_times_as_unknown(tmp_path: Path) -> None:
    """Upgrading a v5 store: the cache gains `latency_s` and `queued_s`, NULL (unknown) for the
    replies cached before, which are kept."""
    out = tmp_path / "out"
    Store.open(out).close()
    conn = sqlite3.connect(out / "experiment.sqlite")
    conn.executescript(
        """
        ALTER TABLE cache DROP COLUMN latency_s;
        ALTER TABLE cache DROP COLUMN queued_s;
        UPDATE meta SET value = '5' WHERE key = 'schema_version';
        INSERT INTO cache(key, text, model, reply_model, finish_reason, prompt_tokens, completion_tokens,
          cost_usd) VALUES ('k', 'hello', 'm', 'm', 'stop', 3, 2, 0.5);
        """
    )
    conn.commit()
    conn.close()
    store = Store.open(out)
    try:
        assert store.get_meta("schema_version") == SCHEMA_VERSION == 6
        row = store.conn.execute("SELECT text, cost_usd, latency_s, queued_s FROM cache").fetchone()
        assert row == ("hello", 0.5, None, None)
    finally:
        store.close()
