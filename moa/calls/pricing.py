"""The cost of a call: the agent's ``pricing`` when set, else litellm's offline price map.

A call is billed as its provider bills it: prompt tokens read from the provider's prompt cache at
the cache-read rate and those written to it at the cache-write rate (when the reply reports them
and the price is known; else as input), and a prompt past a long-context threshold at that tier's
rates for every token.

The price map is the JSON file litellm ships (what ``LITELLM_LOCAL_MODEL_COST_MAP=True`` makes
litellm read), loaded straight from the installed package so pricing never imports litellm (about
3 s) and never fetches anything. It is read once per process, on the first lookup.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from moa.results import Usage
from moa.topology.spec import PricingSpec

__all__ = ["Price", "RateCard", "Rates", "price_for"]

_MAP_FILE = "model_prices_and_context_window_backup.json"
_lock = threading.Lock()
_price_map: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token of each kind; a cache rate of None bills those tokens as input."""

    input: float = 0.0
    output: float = 0.0
    cache_read: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token; ``known`` is False when nothing priced the model (it then costs 0).

    ``tiers`` are the price map's long-context rates, ascending by threshold: a request whose
    prompt passes a threshold (``input_cost_per_token_above_200k_tokens``: Gemini 2.5 Pro, Claude's
    1M context) is billed the highest such tier's rates for all its tokens, as the providers (and
    litellm) bill them."""

    input_per_token: float = 0.0
    output_per_token: float = 0.0
    known: bool = False
    #: the model's own cap on completion tokens, when the price map knows it (a worst case for
    #: calls that send no ``max_tokens``)
    max_output_tokens: int | None = None
    #: USD per prompt token read from / written to the provider's prompt cache (None: as input)
    cache_read_per_token: float | None = None
    cache_write_per_token: float | None = None
    tiers: tuple[tuple[int, Rates], ...] = ()
    #: whether a prompt of exactly a tier's threshold is billed at the tier (xAI's rule)
    inclusive: bool = False
    #: the service tier these rates are (None: standard) and every tier the map prices the model
    #: at, the standard one under ``""``: a request may ask for one and a reply say which it got
    service_tier: str | None = None
    service_tiers: tuple[tuple[str, RateCard], ...] = field(default=(), repr=False)

    def rates(self, prompt_tokens: int) -> Rates:
        """The rates a request of ``prompt_tokens`` is billed at."""
        for threshold, rates in reversed(self.tiers):
            if prompt_tokens > threshold or (self.inclusive and prompt_tokens == threshold):
                return rates
        return Rates(
            self.input_per_token, self.output_per_token, self.cache_read_per_token, self.cache_write_per_token
        )

    def cost(self, usage: Usage) -> float:
        """The bill for ``usage``: its cached and cache-written prompt tokens at their own rates
        (each count kept within the prompt's), the rest of the prompt as input."""
        if not (usage.cached_tokens or usage.cache_write_tokens or self.tiers):
            return (
                usage.prompt_tokens * self.input_per_token + usage.completion_tokens * self.output_per_token
            )
        r = self.rates(usage.prompt_tokens)
        prompt = max(0, usage.prompt_tokens)
        read = min(max(0, usage.cached_tokens), prompt)
        write = min(max(0, usage.cache_write_tokens), prompt - read)
        return (
            (prompt - read - write) * r.input
            + read * (r.input if r.cache_read is None else r.cache_read)
            + write * (r.input if r.cache_write is None else r.cache_write)
            + usage.completion_tokens * r.output
        )

    def worst_case(self, prompt_tokens: int, max_tokens: int) -> float:
        """The most a request of at most ``prompt_tokens`` and ``max_tokens`` can be billed: no
        token read from a cache, each prompt token at the dearer of input and cache write."""
        if self.tiers:
            r = self.rates(prompt_tokens)
            rate_in, write, out = r.input, r.cache_write, r.output
        else:  # every call's budget hold asks: no Rates object made then
            rate_in, write, out = self.input_per_token, self.cache_write_per_token, self.output_per_token
        return prompt_tokens * (rate_in if write is None else max(rate_in, write)) + max_tokens * out

    def for_service_tier(self, name: object) -> Price:
        """These prices at the service tier ``name`` (OpenAI's ``service_tier``: ``flex``,
        ``priority``; ``default``, ``auto`` or None are the standard tier): a tier the map does not
        price the model at is billed standard, as litellm bills it."""
        tier = _SERVICE_TIERS.get(name.lower()) if isinstance(name, str) else None
        if tier == self.service_tier or not self.service_tiers:
            return self
        cards = dict(self.service_tiers)
        card = cards.get(tier or "") or cards[""]
        b = card.base
        return replace(
            self,
            input_per_token=b.input,
            output_per_token=b.output,
            cache_read_per_token=b.cache_read,
            cache_write_per_token=b.cache_write,
            tiers=card.tiers,
            service_tier=tier if tier in cards else None,
        )


@dataclass(frozen=True, slots=True)
class RateCard:
    """One service tier's rates: below every threshold, and the long-context tiers."""

    base: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()


#: a requested or reported service tier -> the suffix of the price map's keys for it (litellm's
#: table: ``fast`` is billed as ``priority``)
_SERVICE_TIERS = {
    "flex": "flex",
    "priority": "priority",
    "fast": "priority",
    "balanced": "balanced",
    "ultrafast": "ultrafast",
}


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
            provider = str(entry.get("litellm_provider"))
            standard = _card(entry, "", provider)
            cards = [("", standard)] + [
                (tier, _card(entry, f"_{tier}", provider, standard))
                for tier in sorted(set(_SERVICE_TIERS.values()))
                if any(k.endswith(f"_{tier}") and "cost" in k for k in entry)
            ]
            b = standard.base
            return Price(
                b.input,
                b.output,
                True,
                int(cap) if isinstance(cap, int | float) and cap > 0 else None,
                b.cache_read,
                b.cache_write,
                standard.tiers,
                provider in _INCLUSIVE_THRESHOLDS,
                None,
                tuple(cards) if len(cards) > 1 else (),
            )
    return None


def _card(entry: dict[str, Any], suffix: str, provider: str, standard: RateCard | None = None) -> RateCard:
    """The rates of one service tier (``suffix`` ``_priority``; ``""`` standard): a rate the tier
    lacks is the standard one."""
    base = _rates(entry, suffix, None if standard is None else standard.base)
    ratio = _DEFAULT_CACHE_READ_RATIO.get(provider)
    if base.cache_read is None and ratio is not None:
        base = Rates(base.input, base.output, base.input * ratio, base.cache_write)
    return RateCard(base, _tiers(entry, base, suffix))


#: a provider's cache-read rate as a share of its input rate, where the price map gives none (as
#: litellm's cost calculator bills it: Fireworks reads cached prompt tokens at half price)
_DEFAULT_CACHE_READ_RATIO = {"fireworks_ai": 0.5}


def _rate(entry: dict[str, Any], key: str) -> float | None:
    value = entry.get(key)
    return (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        else None
    )


def _rates(entry: dict[str, Any], suffix: str, base: Rates | None = None) -> Rates:
    """The rates of the map's keys ending in ``suffix`` (``_above_200k_tokens``, ``_priority``,
    ``_above_272k_tokens_priority``); a rate missing there is ``base``'s."""
    fallback = base or Rates()
    input_rate = _rate(entry, f"input_cost_per_token{suffix}")
    output_rate = _rate(entry, f"output_cost_per_token{suffix}")
    read = _rate(entry, f"cache_read_input_token_cost{suffix}")
    write = _rate(entry, f"cache_creation_input_token_cost{suffix}")
    return Rates(
        fallback.input if input_rate is None else input_rate,
        fallback.output if output_rate is None else output_rate,
        fallback.cache_read if read is None else read,
        fallback.cache_write if write is None else write,
    )


# ``input_cost_per_token_above_200k_tokens``, ``..._above_128k_tokens``, ``..._above_256_tokens``,
# each perhaps with a service tier's suffix (``..._above_272k_tokens_priority``)
_TIER_KEY = re.compile(r"^input_cost_per_token_above_(\d+)(k?)_tokens(_[a-z]+)?$")

#: providers that bill a tier from a prompt of exactly its threshold (litellm's list)
_INCLUSIVE_THRESHOLDS = frozenset({"xai"})


def _tiers(entry: dict[str, Any], base: Rates, service: str = "") -> tuple[tuple[int, Rates], ...]:
    """The long-context tiers of one service tier (``service`` ``_priority``; ``""`` standard):
    a rate missing at a threshold for the service tier is the standard rate at that threshold, then
    the service tier's own rate below every threshold (litellm's order)."""
    found: dict[int, str] = {}
    for key in entry:
        m = _TIER_KEY.match(key)
        if m is not None and (m.group(3) or "") in ("", service) and _rate(entry, key) is not None:
            found[int(m.group(1)) * (1000 if m.group(2) else 1)] = f"_above_{m.group(1)}{m.group(2)}_tokens"
    return tuple(
        (
            threshold,
            _rates(entry, f"{above}{service}", _rates(entry, above, base))
            if service
            else _rates(entry, above, base),
        )
        for threshold, above in sorted(found.items())
    )


def price_for(model: str, pricing: PricingSpec | None = None, *, local: bool = False) -> Price:
    """The price of ``model``: explicit ``pricing`` first, then the price map; local models are 0."""
    if pricing is not None:
        return Price(
            pricing.input_per_mtok / 1e6,
            pricing.output_per_mtok / 1e6,
            True,
            cache_read_per_token=None
            if pricing.cached_input_per_mtok is None
            else pricing.cached_input_per_mtok / 1e6,
            cache_write_per_token=None
            if pricing.cache_write_per_mtok is None
            else pricing.cache_write_per_mtok / 1e6,
        )
    if local:
        return Price(0.0, 0.0, True)
    return _lookup(model) or Price()
