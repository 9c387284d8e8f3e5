"""``CallRecord`` <-> rows of the store's ``calls`` table, for runs and judge verdicts alike.

The trace (the messages sent and the reply's text) is stored when the experiment keeps text
(``store_text``): each text scrubbed of secrets (``moa.scrub``: keys moa sent, key-shaped strings,
secret environment values) and cut at ``text_limit`` bytes with the cut marked."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from moa.results import CallRecord
from moa.scrub import scrub, scrub_clip

__all__ = ["INSERT_CALL", "TEXT_LIMIT", "call_rows", "cut_text"]

INSERT_CALL = (
    "INSERT INTO calls(run_id, judgment_id, seq, node, model, requested_model, prompt_tokens, "
    "completion_tokens, cost_usd, latency_s, attempts, error, started_s, priced, local, cached, "
    "attempt_log, cost_usd_max, usage_suspect, usage_estimated, cached_tokens, cache_write_tokens, "
    "cache_write_1h_tokens, service_tier, messages, reply) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)

#: the default cap of one stored text (a message's content or a reply), in bytes
TEXT_LIMIT = 64 * 1024


def cut_text(text: str, limit: int, secrets: Sequence[str] = ()) -> str:
    """``text`` scrubbed, then cut to about ``limit`` bytes of UTF-8 with the cut marked."""
    clean = scrub(text, secrets) if len(text) <= 4 * limit else scrub_clip(text, 4 * limit, secrets)
    try:
        data = clean.encode()
    except UnicodeEncodeError:
        # a reply refused for a lone surrogate stays on its call's record: SQLite cannot take it
        clean = clean.encode(errors="backslashreplace").decode()
        data = clean.encode()
    if len(data) <= limit:
        return clean
    kept = data[:limit].decode(errors="ignore")
    full = len(text.encode(errors="backslashreplace"))
    return f"{kept}\n[... cut by moa: {full - len(kept.encode()):,} more bytes]"


def _trace(c: CallRecord, limit: int | None, secrets: Sequence[str]) -> tuple[str | None, str | None]:
    if limit is None:
        return None, None
    messages = None
    if c.messages is not None:
        shown = [
            {k: cut_text(str(v), limit, secrets) if k == "content" else str(v) for k, v in m.items()}
            for m in c.messages
        ]
        messages = json.dumps(shown, ensure_ascii=False, separators=(",", ":"))
    return messages, None if c.reply is None else cut_text(c.reply, limit, secrets)


def call_rows(
    calls: Iterable[CallRecord],
    run_id: int | None,
    judgment_id: int | None,
    *,
    text_limit: int | None = None,
    secrets: Sequence[str] = (),
) -> Iterator[tuple[Any, ...]]:
    """One row per call; the trace only with a ``text_limit`` (None: numbers only)."""
    for seq, c in enumerate(calls):
        yield (
            run_id,
            judgment_id,
            seq,
            c.node,
            c.model,
            c.requested_model or c.model,
            c.usage.prompt_tokens,
            c.usage.completion_tokens,
            c.cost_usd,
            c.latency_s,
            c.attempts,
            c.error,
            c.started_s,
            int(c.priced),
            int(c.local),
            int(c.cached),
            json.dumps([a.to_dict() for a in c.attempt_log], separators=(",", ":")),
            c.cost_usd_max,
            int(c.usage_suspect),
            int(c.usage_estimated),
            c.usage.cached_tokens,
            c.usage.cache_write_tokens,
            c.usage.cache_write_1h_tokens,
            c.service_tier,
            *_trace(c, text_limit, secrets),
        )
