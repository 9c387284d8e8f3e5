"""The cost of a call: the agent's ``pricing`` when set, else litellm's offline price map.

The price map is the JSON file litellm ships (what ``LITELLM_LOCAL_MODEL_COST_MAP=True`` makes
litellm read), loaded straight from the installed package so pricing never imports litellm (about
3 s) and never fetches anything. It is read once per process, on the first lookup.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moa.results import Usage
from moa.topology.spec import PricingSpec

__all__ = ["Price", "price_for"]

_MAP_FILE = "model_prices_and_context_window_backup.json"
_lock = threading.Lock()
_price_map: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token; ``known`` is False when nothing priced the model (it then costs 0)."""

    input_per_token: float = 0.0
    output_per_token: float = 0.0
    known: bool = False
    #: the model's own cap on completion tokens, when the price map knows it (a worst case for
    #: calls that send no ``max_tokens``)
    max_output_tokens: int | None = None

    def cost(self, usage: Usage) -> float:
        return usage.prompt_tokens * self.input_per_token + usage.completion_tokens * self.output_per_token

    def worst_case(self, prompt_tokens: int, max_tokens: int) -> float:
        return prompt_tokens * self.input_per_token + max_tokens * self.output_per_token


def _load_map() -> dict[str, Any]:
    global _price_map
    if _price_map is None:
        with _lock:
            if _price_map is None:
                data: dict[str, Any] = {}
                spec = importlib.util.find_spec("litellm")
                for loc in (spec.submodule_search_locations or []) if spec else []:
                    f = Path(loc) / _MAP_FILE
                    if f.is_file():
                        data = json.loads(f.read_text(encoding="utf-8"))
                        break
                _price_map = data
    return _price_map


def _lookup(model: str) -> Price | None:
    table = _load_map()
    candidates = [model]
    if "/" in model:
        provider, rest = model.split("/", 1)
        candidates += [rest, f"{provider}/{rest.split('/')[-1]}", rest.split("/")[-1]]
    for key in candidates:
        entry = table.get(key)
        if isinstance(entry, dict) and "input_cost_per_token" in entry:
            cap = entry.get("max_output_tokens") or entry.get("max_tokens")
            return Price(
                float(entry.get("input_cost_per_token") or 0.0),
                float(entry.get("output_cost_per_token") or 0.0),
                True,
                int(cap) if isinstance(cap, int | float) and cap > 0 else None,
            )
    return None


def price_for(model: str, pricing: PricingSpec | None = None, *, local: bool = False) -> Price:
    """The price of ``model``: explicit ``pricing`` first, then the price map; local models are 0."""
    if pricing is not None:
        return Price(pricing.input_per_mtok / 1e6, pricing.output_per_mtok / 1e6, True)
    if local:
        return Price(0.0, 0.0, True)
    return _lookup(model) or Price()
