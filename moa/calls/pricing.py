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

import contextlib
import difflib
import importlib.util
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from moa.results import Usage
from moa.topology.spec import PricingSpec

__all__ = [
    "OPENAI_SERVICE_TIERS",
    "OffPeak",
    "Price",
    "RateCard",
    "Rates",
    "near_priced_model",
    "price_for",
    "served_prices",
    "unknown_service_tier",
]

_MAP_FILE = "model_prices_and_context_window_backup.json"
_lock = threading.Lock()
_price_map: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token of each kind; a cache rate of None bills those tokens as input, and an hour's
    cache write rate of None as any other cache write."""

    input: float = 0.0
    output: float = 0.0
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None


@dataclass(frozen=True, slots=True)
class RateCard:
    """One service tier's rates: below every long-context threshold, and the tiers past them,
    ascending by threshold. A request whose prompt passes a threshold
    (``input_cost_per_token_above_200k_tokens``: Gemini 2.5 Pro, Claude's 1M context) is billed the
    highest such tier's rates for all its tokens, as the providers (and litellm) bill them."""

    base: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()


_FREE = RateCard(Rates())

#: a window of the day in minutes since midnight UTC, start inclusive, end exclusive (an end at or
#: before the start wraps past midnight; start == end is the whole day)
_Window = tuple[int, int]


@dataclass(frozen=True, slots=True)
class OffPeak:
    """The hours a model's calls are billed ``rates`` instead of its standard ones (the price
    map's ``off_peak_pricing``: DeepSeek V4 bills half its peak rates outside Beijing's busy
    hours). ``every_day`` windows hold on any day, each of ``by_weekday``'s on its ISO weekdays
    (1 = Monday), read on ``weekday_zone``'s calendar."""

    rates: Rates
    every_day: tuple[_Window, ...] = ()
    by_weekday: tuple[tuple[frozenset[int], tuple[_Window, ...]], ...] = ()
    weekday_zone: tzinfo = UTC

    def covers(self, when: float) -> bool:
        """Whether a request sent at ``when`` (seconds since the epoch) is billed off-peak."""
        moment = datetime.fromtimestamp(when, UTC)
        minute = moment.hour * 60 + moment.minute
        if _within(minute, self.every_day):
            return True
        if not self.by_weekday:
            return False
        weekday = moment.astimezone(self.weekday_zone).isoweekday()
        return any(weekday in days and _within(minute, windows) for days, windows in self.by_weekday)


def _within(minute: int, windows: tuple[_Window, ...]) -> bool:
    for start, end in windows:
        if start < end:
            if start <= minute < end:
                return True
        elif minute >= start or minute < end:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Price:
    """What a model's calls cost: ``card``, the rates of the service tier in force; ``known`` is
    False when nothing priced the model (it then costs 0)."""

    card: RateCard = _FREE
    known: bool = False
    #: the model's own cap on completion tokens, when the price map knows it (a worst case for
    #: calls that send no ``max_tokens``)
    max_output_tokens: int | None = None
    #: whether a prompt of exactly a tier's threshold is billed at the tier (xAI's rule)
    inclusive: bool = False
    #: the service tier ``card`` is (None: standard) and every tier the map prices the model at,
    #: the standard one under ``""``: a request may ask for one and a reply say which it got
    service_tier: str | None = None
    service_tiers: tuple[tuple[str, RateCard], ...] = field(default=(), repr=False)
    #: the hours the model is billed cheaper rates, if any (see ``at``)
    off_peak: OffPeak | None = None

    @classmethod
    def per_token(
        cls,
        input: float,
        output: float,
        *,
        cache_read: float | None = None,
        cache_write: float | None = None,
        cache_write_1h: float | None = None,
    ) -> Price:
        """A known price of flat rates (USD per token)."""
        return cls(RateCard(Rates(input, output, cache_read, cache_write, cache_write_1h)), True)

    def rates(self, prompt_tokens: int) -> Rates:
        """The rates a request of ``prompt_tokens`` is billed at."""
        card = self.card
        for threshold, rates in reversed(card.tiers):
            if prompt_tokens > threshold or (self.inclusive and prompt_tokens == threshold):
                return rates
        return card.base

    def cost(self, usage: Usage) -> float:
        """The bill for ``usage``: its cached and cache-written prompt tokens at their own rates
        (each count kept within the prompt's, an hour's writes within the writes), the rest of the
        prompt as input."""
        card = self.card
        if not (usage.cached_tokens or usage.cache_write_tokens or card.tiers):
            b = card.base
            return usage.prompt_tokens * b.input + usage.completion_tokens * b.output
        r = self.rates(usage.prompt_tokens)
        prompt = max(0, usage.prompt_tokens)
        read = min(max(0, usage.cached_tokens), prompt)
        write = min(max(0, usage.cache_write_tokens), prompt - read)
        hour = min(max(0, usage.cache_write_1h_tokens), write)
        write_rate = r.input if r.cache_write is None else r.cache_write
        return (
            (prompt - read - write) * r.input
            + read * (r.input if r.cache_read is None else r.cache_read)
            + (write - hour) * write_rate
            + hour * (write_rate if r.cache_write_1h is None else r.cache_write_1h)
            + usage.completion_tokens * r.output
        )

    def worst_case(self, prompt_tokens: int, max_tokens: int) -> float:
        """The most a request of at most ``prompt_tokens`` and ``max_tokens`` can be billed: no
        token read from a cache, each prompt token at the dearest of input and the cache writes."""
        r = self.rates(prompt_tokens) if self.card.tiers else self.card.base
        rate = r.input
        # inline, not a Rates method: every call's budget hold asks
        if r.cache_write is not None and r.cache_write > rate:
            rate = r.cache_write
        if r.cache_write_1h is not None and r.cache_write_1h > rate:
            rate = r.cache_write_1h
        return prompt_tokens * rate + max_tokens * r.output

    def at(self, when: float) -> Price:
        """These prices for a request sent at ``when`` (seconds since the epoch): the off-peak
        rates in the model's off-peak hours, else these. A budget's worst case never counts on the
        discount (it is taken before the request is sent)."""
        off = self.off_peak
        if off is None or not off.covers(when):
            return self
        return replace(self, card=RateCard(off.rates, self.card.tiers), off_peak=None)

    def for_service_tier(self, name: object) -> Price:
        """These prices at the service tier ``name`` (OpenAI's ``service_tier``: ``flex``,
        ``priority``; ``default``, ``auto`` or None are the standard tier): a tier the map does not
        price the model at is billed standard, as litellm bills it."""
        tier = _SERVICE_TIERS.get(name.lower()) if isinstance(name, str) else None
        if tier == self.service_tier or not self.service_tiers:
            return self
        cards = dict(self.service_tiers)
        return replace(
            self, card=cards.get(tier or "") or cards[""], service_tier=tier if tier in cards else None
        )


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
            return Price(
                standard,
                True,
                int(cap) if isinstance(cap, int | float) and cap > 0 else None,
                provider in _INCLUSIVE_THRESHOLDS,
                None,
                tuple(cards) if len(cards) > 1 else (),
                _off_peak(entry.get("off_peak_pricing"), standard.base),
            )
    return None


def _card(entry: dict[str, Any], suffix: str, provider: str, standard: RateCard | None = None) -> RateCard:
    """The rates of one service tier (``suffix`` ``_priority``; ``""`` standard): a rate the tier
    lacks is the standard one."""
    base = _rates(entry, suffix, None if standard is None else standard.base)
    ratio = _DEFAULT_CACHE_READ_RATIO.get(provider)
    if base.cache_read is None and ratio is not None:
        base = replace(base, cache_read=base.input * ratio)
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
    hour = _rate(entry, f"cache_creation_input_token_cost_above_1hr{suffix}")
    return Rates(
        fallback.input if input_rate is None else input_rate,
        fallback.output if output_rate is None else output_rate,
        fallback.cache_read if read is None else read,
        fallback.cache_write if write is None else write,
        fallback.cache_write_1h if hour is None else hour,
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


def _off_peak(block: object, standard: Rates) -> OffPeak | None:
    """The map's ``off_peak_pricing`` block (litellm's rules: flat ``hours_utc`` windows every
    day, ``windows`` entries on their ``weekdays``; a rate the block lacks is the standard one;
    malformed windows are ignored), or None when it has no window."""
    if not isinstance(block, dict):
        return None
    rules = []
    for rule in block.get("windows") or ():
        if isinstance(rule, dict) and isinstance(rule.get("weekdays"), list):
            days = frozenset(d for d in map(_weekday, rule["weekdays"]) if d is not None)
            windows = _windows(rule.get("hours_utc"))
            if days and windows:
                rules.append((days, windows))
        elif (
            isinstance(rule, dict) and "weekdays" not in rule and (windows := _windows(rule.get("hours_utc")))
        ):
            rules.append((frozenset(range(1, 8)), windows))
    every_day = _windows(block.get("hours_utc"))
    if not (every_day or rules):
        return None
    zone: tzinfo = UTC
    if isinstance(block.get("weekday_timezone"), str):
        with contextlib.suppress(ValueError, ZoneInfoNotFoundError):
            zone = ZoneInfo(block["weekday_timezone"].strip())
    return OffPeak(_rates(block, "", standard), every_day, tuple(rules), zone)


_WEEKDAYS = {
    name: day
    for day, names in enumerate(
        (
            ("mon", "monday"),
            ("tue", "tues", "tuesday"),
            ("wed", "wednesday"),
            ("thu", "thur", "thurs", "thursday"),
            ("fri", "friday"),
            ("sat", "saturday"),
            ("sun", "sunday"),
        ),
        start=1,
    )
    for name in names
}


def _weekday(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 1 <= value <= 7 else None
    return _WEEKDAYS.get(value.strip().lower()) if isinstance(value, str) else None


_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _windows(value: object) -> tuple[_Window, ...]:
    found = []
    for text in (value,) if isinstance(value, str) else value if isinstance(value, Sequence) else ():
        m = _WINDOW.match(text) if isinstance(text, str) else None
        if m is not None:
            h1, m1, h2, m2 = map(int, m.groups())
            if h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60:
                found.append((h1 * 60 + m1, h2 * 60 + m2))
    return tuple(found)


def price_for(model: str, pricing: PricingSpec | None = None, *, local: bool = False) -> Price:
    """The price of ``model``: explicit ``pricing`` first, then the price map; local models are 0."""
    if pricing is not None:
        return Price.per_token(
            pricing.input_per_mtok / 1e6,
            pricing.output_per_mtok / 1e6,
            cache_read=_per_token(pricing.cached_input_per_mtok),
            cache_write=_per_token(pricing.cache_write_per_mtok),
            cache_write_1h=_per_token(pricing.cache_write_1h_per_mtok),
        )
    if local:
        return Price(known=True)
    return _lookup(model) or Price()


def served_prices(listed: Price, tier: object) -> tuple[Price, tuple[Price, ...]]:
    """The price of a request for ``listed``'s model asking for the service tier ``tier`` (an
    agent's ``params.service_tier``), and the other prices its reply may be billed at: asking for
    none (or ``auto``), the project's default serves, which may be priority at ~1.7x; asking for
    one, the standard tier may serve instead. A worst case takes the dearest of them all."""
    price = listed.for_service_tier(tier)
    unpinned = tier is None or (isinstance(tier, str) and tier.lower() == "auto")
    served = [name for name, _ in listed.service_tiers if unpinned or not name]
    return price, tuple(p for n in served if (p := listed.for_service_tier(n or None)) is not price)


def _per_token(per_mtok: float | None) -> float | None:
    return None if per_mtok is None else per_mtok / 1e6


def near_priced_model(model: str) -> str | None:
    """A model the price map prices whose name is close to ``model`` (one the map lacks): a typo's
    likely meaning, as ``model`` would be written (``openai/gpt-4o-mini`` for ``openai/gpt-4o-mnii``)."""
    provider, _, rest = model.rpartition("/")
    names = {
        key.rsplit("/", 1)[-1]
        for key, entry in _load_map().items()
        if isinstance(entry, dict)
        and "input_cost_per_token" in entry
        and (not provider or entry.get("litellm_provider") == provider.split("/")[0])
    }
    close = difflib.get_close_matches(rest, sorted(names), n=1, cutoff=0.85)
    if not close:
        return None
    return f"{provider}/{close[0]}" if provider else close[0]


#: the ``service_tier`` values OpenAI's API documents for a request
OPENAI_SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")
_KNOWN_TIERS = frozenset({*OPENAI_SERVICE_TIERS, *_SERVICE_TIERS, "standard"})


def service_tier_name(tier: str) -> str | None:
    """``tier`` as a record keeps it: a tier moa knows (OpenAI's, or one the price map bills), else
    None. A reply's ``service_tier`` is the provider's text, kept in records and the store: a
    hostile or echoing endpoint could put a key or megabytes there, and a tier moa does not know is
    billed at the standard rates anyway, which None says."""
    name = tier.lower()
    return name if name in _KNOWN_TIERS else None


def unknown_service_tier(price: Price, tier: object) -> str | None:
    """Why ``tier`` (an agent's ``params.service_tier``) looks like a mistake, or None: a tier that
    is neither one the price map prices the model at nor one OpenAI documents is sent as is and its
    calls are held and billed at the standard tier (a typo, ``priorty``, passed silently). Only for
    a model the map lists tiers for: elsewhere nothing says which tiers exist."""
    priced = sorted(name for name, _ in price.service_tiers if name)
    if not priced:
        return None
    if not isinstance(tier, str):
        return f"`service_tier` is {tier!r}, not a tier's name"
    known = {*OPENAI_SERVICE_TIERS, *priced, *(k for k, v in _SERVICE_TIERS.items() if v in priced)}
    if tier.lower() in known:
        return None
    names = sorted(known)
    close = difflib.get_close_matches(tier.lower(), names, n=1, cutoff=0.6)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    return (
        f"`service_tier: {tier}` is no tier the price map prices the model at ({', '.join(priced)}) nor one "
        f"OpenAI documents ({', '.join(OPENAI_SERVICE_TIERS)}): it is sent as is, and its calls are held "
        f"and billed at the standard tier{hint}"
    )
