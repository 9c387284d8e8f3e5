"""Masking secrets in text that leaves moa: provider error messages, log events, error replies.

The rules live here once, used where a provider's text enters moa (the model backends build their
errors with ``scrub``) and by the log redactor, so a key a provider echoes back (``Incorrect API key
provided: sk-...``) reaches no message, record, store, report, log line or reply. Two kinds of rule:

- the keys moa sent (``known``): masked wherever they appear, whatever their shape, also in their
  JSON-, repr-, URL- and HTML-escaped forms (escaped more than once too), reversed, base64 and
  hex; a key of 4 to 7 characters only as a whole token (not inside a longer run of letters and
  digits), as sent or escaped, and not at all when it is letters only (``EMPTY``, ``none``, ``dummy``: the
  placeholders self-hosted servers are given, which are words, not secrets); a shorter value is
  left alone (masking ``abc`` everywhere would garble every message, and it protects nothing);
- key shapes: ``Bearer``/``Basic`` credentials, ``sk-...`` (OpenAI, Anthropic ``sk-ant-``...),
  Google ``AIza...``, AWS ``AKIA...``, prefixed keys (``gsk_``, ``xai-``, ``hf_``, ``ghp_``...),
  JWTs, runs of 40+ hex digits (a commit hash in prose is masked too), and a long token holding a
  digit right after a word such as "key", "token" or "secret".

A net against accidents, not a proof: a secret of no known shape that moa did not send (another of
the user's keys, one a provider re-encodes or cuts in pieces) passes through.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

__all__ = [
    "MASK",
    "StreamMask",
    "mask_sent",
    "param_secrets",
    "remember_secret",
    "scrub",
    "scrub_clip",
    "scrubbed_failure",
    "secret_name",
    "url_secrets",
]

MASK = "***"

#: known values this long are masked in every form, anywhere (see the module docstring)
_MIN_KNOWN = 8
#: known values from this long (and shorter than ``_MIN_KNOWN``) are masked as whole tokens
_MIN_SHORT = 4


def _maskable(key: str) -> bool:
    return len(key) >= _MIN_KNOWN or (len(key) >= _MIN_SHORT and not key.isalpha())


def _keys(known: Iterable[str | None]) -> tuple[str, ...]:
    """The ``known`` values that are masked, stripped, sorted, each once."""
    return tuple(sorted({k.strip() for k in known if k and _maskable(k.strip())}))


def _reversed(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The keys written back reversed that are masked too (as sent, escaped, wrapped, any case): a
    long key's reverse is as random as the key, so no ordinary text holds it; a short key's may be
    a word or a number of the text (``4321``), and is left alone."""
    return tuple(k[::-1] for k in keys if len(k) >= _MIN_KNOWN)


# (pattern, replacement); the replacement keeps the words around a key so the message still reads
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # "=" inside too: base64 padding ends a token, but a hand-made key may hold one anywhere
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._\-~+/=]{8,}"), rf"\g<1>{MASK}"),
    # "basic" is also an English word: the credential must hold a digit to count
    (re.compile(r"(?i)\b(basic\s+)(?=[A-Za-z0-9+/]{0,400}\d)[A-Za-z0-9+/]{12,}=*"), rf"\g<1>{MASK}"),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"), MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"), MASK),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), MASK),
    # one short infix allowed (sk_live_, tgp_v1_, github_pat_11AB..._); the body must be one long
    # alphanumeric run, so identifiers such as pk_user_account_id are not keys
    (
        re.compile(
            r"\b(?:gsk|xai|hf|gh[pousr]|r8|fw|pk|rk|sk|tgp|github_pat)_(?:[A-Za-z0-9]{1,8}_)?[A-Za-z0-9]{16,}\w*"
        ),
        MASK,
    ),
    (re.compile(r"\b(?:xai|pplx|nvapi|csk|glpat|gsk)-[A-Za-z0-9_\-]{16,}"), MASK),
    (re.compile(r"\b[A-Fa-f0-9]{40,}\b"), MASK),
    # a token after a key-ish word; the digit and length rules keep prose ("key provided: none",
    # "tokens": 12, max_tokens) readable
    (
        re.compile(
            r"(?i)(?P<head>\b(?:api[ _-]?key|access[ _-]?key|key|token|secret|password|passwd|credentials?)s?\b"
            r"[\s\"':=]{0,4}(?:(?:provided|given|is|was|used|value)[\s\"':=]{1,4})?)"
            r"(?=[A-Za-z0-9._\-+/=~]{0,400}\d)[A-Za-z0-9][A-Za-z0-9._\-+/=~]{19,}"
        ),
        rf"\g<head>{MASK}",
    ),
)

# field names whose whole value is a secret (log event keys, header names); *_tokens are counts
_SECRET_NAME = re.compile(r"(?i)(api[_-]?key|authorization|token|secret|password)")


def secret_name(name: str) -> bool:
    """Whether a field called ``name`` holds a secret as its whole value (``api_key``,
    ``Authorization``...), not a count such as ``prompt_tokens``."""
    return bool(name) and bool(_SECRET_NAME.search(name)) and not name.lower().endswith("tokens")


# environment variable names holding a secret: a KEY/TOKEN/SECRET/... word (``TOGETHER_KEY``,
# ``MY_LLM_KEY``, ``HF_TOKEN``), as agents' ``api_key_env`` may name any variable
_ENV_SECRET = re.compile(r"(?i)(?:^|_)(?:API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH)(?:_|$)")


# the keys moa read from a variable an agent named (``api_key_env: LLM_CRED``), whatever its name:
# filled as agents are resolved, never at import; the texts that are scrubbed without the request
# at hand (``--debug`` tracebacks with a provider library's raw exception, the store) consult it.
# Bounded, least recently remembered out first: a service that builds agents with each tenant's
# header would otherwise grow it forever, and every scrub over it with it (2,000 keys: 50 ms a
# scrub). A key dropped from it is still masked where its request is at hand (the backends'
# errors, the answer), which is where a provider can echo it.
_REMEMBER_MAX = 256
_remembered: dict[str, None] = {}
_remembered_lock = threading.Lock()


def remember_secret(value: str | None) -> None:
    """Mask ``value`` wherever ``environment_secrets()`` is consulted, while it is among the last
    ``_REMEMBER_MAX`` values remembered (remembering it again renews it): moa calls this for every
    key an agent reads through ``api_key_env``, writes into its ``api_base`` or sends in a header
    of its ``params``."""
    if value and _maskable(value.strip()):
        with _remembered_lock:
            _remembered.pop(value, None)
            _remembered[value] = None
            while len(_remembered) > _REMEMBER_MAX:
                del _remembered[next(iter(_remembered))]


def environment_secrets(*, remembered: bool = True) -> list[str]:
    """Values of environment variables named like secrets (``OPENAI_API_KEY``, ``AWS_SECRET_ACCESS_KEY``,
    ``TOGETHER_KEY``): the keys a provider library may send on its own when moa passes none, and
    the keys agents read through ``api_key_env``; with ``remembered``, plus the keys
    ``remember_secret`` was given last (those of other agents: for texts scrubbed without their
    request at hand, not for an answer, which holds only what its own request carried)."""
    # a short value is no key by its variable's name alone (TOKEN_LIMIT=4096 would mask every 4096):
    # only a key moa knows it sends is masked short (``remember_secret``, the request's own)
    named = [v for k, v in os.environ.items() if _secret_variable(k) and len(v.strip()) >= _MIN_KNOWN]
    if not remembered:
        return named
    with _remembered_lock:
        others = [k for k in _remembered if k not in named]
    return [*named, *sorted(others)]


# the environment is read afresh on every call (a key set mid-run counts at once), but whether a
# name is a secret's is decided once per name: the two regexes per variable were most of the cost,
# paid on every litellm call whose agent names no key
@functools.lru_cache(maxsize=4096)
def _secret_variable(name: str) -> bool:
    return secret_name(name) or bool(_ENV_SECRET.search(name))


def param_secrets(params: Mapping[str, Any]) -> list[str]:
    """The values of secret-named fields anywhere in an agent's ``params`` (``extra_headers:
    {X-Api-Key: ...}``, ``{Authorization: Bearer ...}``): a provider that echoes its request's
    headers quotes them, and nothing else tells moa they are keys."""
    found: list[str] = []
    for name, value in params.items():
        if isinstance(value, Mapping):
            found += param_secrets(value)
        elif isinstance(value, str) and secret_name(str(name)):
            found.append(value)
            scheme, _, credential = value.partition(" ")
            if credential and scheme.lower() in ("bearer", "basic", "token"):
                found.append(credential)
    return found


# a query parameter whose value is a credential (``?key=``, ``?api_key=``, ``?sig=``, ``?code=``)
_SECRET_PARAM = re.compile(r"(?i)key|token|secret|passw|sig|auth|cred|code")


def url_secrets(url: str | None) -> list[str]:
    """The credentials written into an endpoint URL (see ``_url_secrets``)."""
    return list(_url_secrets(url)) if url else []


@functools.lru_cache(maxsize=256)
def _url_secrets(url: str | None) -> tuple[str, ...]:
    """The credentials written into an endpoint URL (``api_base``): the userinfo's password and the
    values of credential-named query parameters, each also cut at the URL's delimiters. A key left
    unescaped in the userinfo (``https://user:ab/cd@host``) makes the URL unparseable, and the
    parser's error then quotes the piece it took for a port or a host."""
    if not url or "://" not in url:
        return ()
    rest = url.split("://", 1)[1]
    found: list[str] = []
    if "@" in rest:
        userinfo = rest.rsplit("@", 1)[0]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    for param in re.split(r"[?&#;]", rest)[1:]:
        name, _, value = param.partition("=")
        if value and _SECRET_PARAM.search(name):
            found.append(value)
    found += [unquote(f) for f in found]  # as written and as sent
    pieces = [p for f in found for p in re.split(r"[/?#@:&]", f)]
    return tuple(s for s in dict.fromkeys([*found, *pieces]) if len(s.strip()) >= _MIN_KNOWN)


def _char(c: str) -> str:
    """One character of a known key as a provider may write it back: itself (any case; the
    pattern is case-insensitive), JSON/repr-escaped (``\\u0073``, ``\\x73``, ``\\/``), URL-encoded
    (``%2F``) or an HTML character reference (``&#115;``, ``&#x73;``), whichever characters of the
    key it chose to escape."""
    o = ord(c)
    # an escape may be escaped again (JSON inside JSON: ``\\\\u0073``, a URL inside a URL: ``%252F``),
    # a few times: a bounded repeat, as an unbounded one made a run of backslashes quadratic
    alts = [re.escape(c), f"&#0{{0,6}}{o};", f"&#x0{{0,6}}{o:x};"]
    if o < 0x10000:
        alts.append(rf"\\{{1,4}}u{o:04x}")
    if o < 0x100:
        alts += [rf"%(?:25){{0,3}}{o:02x}", rf"\\{{1,4}}x{o:02x}"]
    if not c.isalnum():
        alts.append(r"\\{1,4}" + re.escape(c))
    return "(?:" + "|".join(alts) + ")"


# between two characters of a known key: a line break or spaces a provider wrapped it with, raw or
# JSON-escaped
_GAP = r"(?:\s|\\[nrt])*"
# around a short key: it is masked only where it is a token of its own, not inside a longer one
_NOT_WORD_BEFORE = r"(?<![A-Za-z0-9])"
_NOT_WORD_AFTER = r"(?![A-Za-z0-9])"


# more than the remembered keys and the environment's: ``_may_hold`` asks for every key's forms on
# every scrub, and a cache smaller than that set would recompute them all each time
@functools.lru_cache(maxsize=1024)
def _base64_forms(secret: str) -> frozenset[str]:
    """The key base64-encoded (standard and URL-safe, as in a ``Basic`` credential or a token that
    embeds it), at each of the three alignments it may have inside a longer encoded text: only the
    characters that depend on the key's bytes alone; and hex-encoded. None for a short key (a
    few base64 characters turn up in any encoded text)."""
    raw = secret.encode()
    if len(secret) < _MIN_KNOWN:
        return frozenset()
    forms: set[str] = {raw.hex()}
    for shift in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(b"\0" * shift + raw).decode().rstrip("=")
            # the first characters mix in the bytes before the key, the last one those after it
            head = (0, 2, 3)[shift]
            tail = 1 if (len(raw) + shift) % 3 else 0
            form = text[head : len(text) - tail]
            if len(form) >= _MIN_KNOWN:
                forms.add(form)
    return frozenset(forms)


@functools.lru_cache(maxsize=64)
def _known_pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern for every form of every known key; longest first, so a key that contains
    another is masked whole."""
    alternatives: list[str] = []
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) < _MIN_KNOWN:  # a whole token, as sent or escaped, never wrapped
            alternatives.append(_NOT_WORD_BEFORE + "".join(_char(c) for c in secret) + _NOT_WORD_AFTER)
            continue
        alternatives.append(_GAP.join(_char(c) for c in secret))
        alternatives.append(_GAP.join(_char(c) for c in reversed(secret)))
        # base64 is wrapped too (at 76 columns in MIME, 64 in PEM), and may be right inside the key
        forms = sorted(_base64_forms(secret), key=len, reverse=True)
        alternatives += [_GAP.join(re.escape(ch) for ch in f) for f in forms]
    return re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None


# an escape a provider may write a key's character as (escaped again too, as ``_char`` reads it),
# and the line breaks it may wrap it with
_CHAR_ESCAPES = (
    r"\\{1,4}u([0-9A-Fa-f]{4})|\\{1,4}x([0-9A-Fa-f]{2})|%(?:25){0,3}([0-9A-Fa-f]{2})|&#[xX]0{0,6}([0-9A-Fa-f]{1,6});"
    r"|&#0{0,6}([0-9]{1,7});"
)
_ESCAPE = re.compile(_CHAR_ESCAPES + r"|\\{1,4}[nrt]|\\{1,4}(.)")


def _unescaped(m: re.Match[str]) -> str:
    code = m.group(1) or m.group(2) or m.group(3) or m.group(4)
    if code:
        return chr(min(int(code, 16), 0x10FFFF))
    if m.group(5):
        return chr(min(int(m.group(5)), 0x10FFFF))
    return m.group(6) or ""


def _may_hold(text: str, keys: tuple[str, ...]) -> bool:
    """Whether ``text`` may hold one of ``keys`` in a form the known-key pattern masks: a look with
    plain string searches (the text lower-cased, without whitespace, with and without its escapes
    decoded), as every stored message and reply is scrubbed and the pattern is slower by far."""
    flat = "".join(text.lower().split())
    decoded = (
        "".join(_ESCAPE.sub(_unescaped, text).lower().split())
        if ("\\" in text or "%" in text or "&#" in text)
        else flat
    )
    for key in keys:
        k = "".join(key.lower().split())
        if k in flat or k in decoded or any(f.lower() in decoded for f in _base64_forms(key)):
            return True
    backwards = ("".join(key.lower().split()) for key in _reversed(keys))
    return any(k in flat or k in decoded for k in backwards)


def scrub(text: str, known: Iterable[str | None] = ()) -> str:
    """``text`` with every ``known`` value (the keys moa sent) and every key shape masked."""
    keys = _keys(known)
    pattern = _known_pattern(keys) if keys and _may_hold(text, keys) else None
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for shape, replacement in _SHAPES:
        text = shape.sub(replacement, text)
    return text


def mask_sent(text: str, known: Iterable[str | None]) -> str:
    """``text`` (a model's answer) with the ``known`` keys masked, but no key shape: an answer may
    rightly hold ``sk-...`` or a commit hash, never the key its request carried, which a hostile
    or debugging endpoint may echo, as sent or in another form (``\\/`` for ``/`` as PHP's JSON
    writes it, ``%2F`` from a query string, wrapped over lines). A cheap look first, as every
    answer passes here (``_may_hold``); only then the full pattern."""
    keys = _keys(known)
    if not keys or not _may_hold(text, keys):
        return text
    pattern = _known_pattern(keys)
    return pattern.sub(MASK, text) if pattern is not None else text


# one escape a key's character may be written as (``_char``): ``\uXXXX``, ``\xXX``, ``%XX``, an
# HTML character reference, or backslashes before the character itself; groups as ``_ESCAPE``'s
_ONE_ESCAPE = re.compile(_CHAR_ESCAPES + r"|\\{1,4}(.)", re.DOTALL)
# the end of a text the next token may complete into an escape
_OPEN_ESCAPE = re.compile(
    r"(?:\\{1,4}(?:u[0-9A-Fa-f]{0,3}|x[0-9A-Fa-f]?)?|%(?:25){0,3}(?:2|[0-9A-Fa-f])?|&(?:#(?:[xX][0-9A-Fa-f]{0,6}|[0-9]{0,7}))?)\Z"
)


# the line breaks and spaces an encoded key may be wrapped with, raw or JSON-escaped (``_GAP``)
_UNWRAP = re.compile(r"\s+|\\[nrt]")


def _same(a: str, b: str) -> bool:
    return a == b or a.lower() == b.lower() or a.upper() == b.upper()


def _could_begin(text: str, start: int, key: str) -> bool:
    """Whether ``text[start:]``, to its end, may be the beginning of ``key`` in a form the known-key
    pattern masks (any case, each character as itself or escaped, line breaks and spaces between
    two characters), short of the whole key, so the next token may complete it; a short key (a
    whole token only) also when whole at the end, as the next token may extend the token. A walk
    over (position in the text, characters of the key matched), each visited once: a ``\\n`` may
    be a line break between two characters or an escaped ``n``."""
    short = len(key) < _MIN_KNOWN
    end, todo, seen = len(text), [(start, 0)], set()
    while todo:
        state = todo.pop()
        i, j = state
        if short and j == len(key) and i == end:
            return True
        if state in seen or j == len(key):
            continue
        seen.add(state)
        if i == end:
            if j:
                return True
            continue
        c = text[i]
        if _same(c, key[j]):
            todo.append((i + 1, j + 1))
        if j and c.isspace() and not short:
            todo.append((i + 1, j))
        if c in "\\%&":
            if _OPEN_ESCAPE.match(text, i):
                return True
            m = _ONE_ESCAPE.match(text, i)
            if m is not None:
                ch = _unescaped(m)
                if _same(ch, key[j]):
                    todo.append((m.end(), j + 1))
                if j and m.group(6) is not None and ch in "nrt" and not short:
                    todo.append((m.end(), j))
    return False


class StreamMask:
    """``mask_sent`` over a stream of tokens, for ``emit`` (the caller's token callback): a key an
    endpoint echoes may be cut over any number of deltas, each harmless alone. The tail of what
    arrived that may begin a key, in any form ``mask_sent`` masks (as sent in any case, escaped,
    wrapped, base64-encoded), is held back until the next token shows it does not; everything
    before it is passed on at once, masked. ``flush`` passes on the rest once the reply is
    complete. Without keys, tokens pass straight through.

    A tail longer than ``_HOLD_PER_KEY_CHAR`` characters per character of the key plus
    ``_HOLD_SLACK`` is let go whatever it may become: a key spread over more spaces than that is
    masked in the final answer, not in its tokens, so a stream of blanks cannot stall the reply."""

    __slots__ = ("_b64", "_before", "_emit", "_forms", "_hold", "_keys", "_pending", "_starts")

    _HOLD_PER_KEY_CHAR = 8
    _HOLD_SLACK = 256

    def __init__(self, emit: Callable[[str], None], known: Iterable[str | None]) -> None:
        self._emit = emit
        self._keys = _keys(known)
        self._b64 = tuple({f.lower() for k in self._keys for f in _base64_forms(k)})
        #: what a tail may begin as written: each key, forwards and reversed
        self._forms = (*self._keys, *_reversed(self._keys))
        # where a form may start: a key's or an encoding's first character, or an escape
        firsts = {k[0] for k in self._forms} | {f[0] for f in self._b64}
        self._starts = re.compile(
            "[" + "".join(re.escape(c) for c in sorted(firsts)) + r"\\%&]", re.IGNORECASE
        )
        longest = max((len(k) for k in self._keys), default=0)
        self._hold = self._HOLD_PER_KEY_CHAR * longest + self._HOLD_SLACK
        self._pending = ""
        # the last character passed on: whether a short key right after it is a token of its own
        self._before = ""

    def feed(self, piece: str) -> None:
        if not self._keys:
            self._emit(piece)
            return
        text = self._pending + piece
        cut = self._safe_end(text)
        self._pending = text[cut:]
        if cut:
            self._emit(self._masked(text[:cut]))

    def flush(self) -> None:
        """Pass on what was held back: the reply ended, so it starts no key."""
        text, self._pending = self._pending, ""
        if text:
            self._emit(self._masked(text))

    def _masked(self, text: str) -> str:
        """``text`` masked as in the whole answer: read after the character passed on before it."""
        before, self._before = self._before, text[-1:]
        masked = mask_sent(before + text, self._keys)
        return masked[len(before) :] if masked.startswith(before) else mask_sent(text, self._keys)

    def _safe_end(self, text: str) -> int:
        """Where the part of ``text`` that cannot grow into a key with the next token ends: before
        the earliest tail that may begin one, and never inside a whole key."""
        cut = len(text)
        for m in self._starts.finditer(text, max(0, len(text) - self._hold)):
            i = m.start()
            tail = _UNWRAP.sub("", text[i:].lower())
            # only a key whose first character this is (or an escape's) may begin here: the walk
            # for every key at every start was most of a streamed token's cost
            c = text[i]
            escape = c in "\\%&"
            if any(len(tail) < len(f) and f.startswith(tail) for f in self._b64) or any(
                _could_begin(text, i, k) for k in self._forms if escape or _same(c, k[0])
            ):
                cut = i
                break
        if cut < len(text):
            pattern = _known_pattern(self._keys)
            for m in pattern.finditer(text) if pattern is not None else ():
                if m.start() < cut < m.end():
                    return m.start()
        return cut


def scrub_clip(text: str, limit: int, known: Iterable[str | None] = ()) -> str:
    """The first ``limit`` characters of ``text``, scrubbed before the cut so no key is cut in half
    (half a key matches no rule); only a bounded head of a huge text is scanned."""
    return scrub(text[: limit + 1024], known)[:limit]


def scrubbed_failure(e: BaseException, keys: Sequence[str | None] = ()) -> str:
    """An exception from outside moa's tree (a user's backend, cache or callback) as one error text,
    ``Type: message``, with ``keys`` and the environment's secrets masked: its text never went
    through a backend's scrubbing, and a user's code may quote a key."""
    return scrub(f"{type(e).__name__}: {e}", (*keys, *environment_secrets()))
