"""The counters a SimServer keeps: what it served, what it refused, and who hung up."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace


@dataclass
class SimStats:
    """Counters of a SimServer; `SimServer.stats` hands out a consistent copy."""

    served: int = 0
    """200 completions (plain or streamed) written in full."""
    served_by_model: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    """Every completion request, including faults and rejected ones."""
    faults: Counter[str] = field(default_factory=Counter)
    request_log: list[tuple[float, str, str]] = field(default_factory=list)
    """(time.monotonic(), model, fault kind or "ok" / "not_found" / "bad_request")."""
    in_flight: int = 0
    max_in_flight: int = 0
    disconnects: int = 0
    """Requests whose client went away before the reply was complete."""

    def copy(self) -> SimStats:
        by_model, faults, log = Counter(self.served_by_model), Counter(self.faults), list(self.request_log)
        return replace(self, served_by_model=by_model, faults=faults, request_log=log)
