"""Default prompt templates and their rendering.

A template is plain text with up to four placeholders: ``{prompt}`` (the user's prompt),
``{references}`` (the outputs of the node's inputs, numbered), ``{instruction}`` (a worker's
instruction from a plan) and ``{workers}`` (a plan's number of workers). Only these are replaced and
no brace is an escape, so templates may hold other braces (JSON examples, code, ``}}`` closing nested
objects) exactly as written. Templates are split once per topology, not per call.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "PLACEHOLDERS",
    "TEMPLATES",
    "Template",
    "boundary_tag",
    "format_references",
    "placeholder_mistakes",
    "quote_instruction",
    "text_problem",
]

# The aggregate-and-synthesize prompt of Together MoA (Wang et al. 2024), adapted to one message.
AGGREGATE = """You have been provided with a set of responses from various models to the latest user query. \
Your task is to synthesize these responses into a single, high-quality response. It is crucial to \
critically evaluate the information provided in these responses, recognizing that some of it may be \
biased or incorrect. Your response should not simply replicate the given answers but should offer a \
refined, accurate, and comprehensive reply to the instruction. Ensure your response is well-structured, \
coherent, and adheres to the highest standards of accuracy and reliability.

Responses from models:
{references}

User query: {prompt}"""

CRITIQUE = """Critique the answer below to the user's query. List its factual errors, gaps and unclear \
parts, most important first. Do not rewrite the answer.

User query: {prompt}

{references}"""

REFINE = """Below are earlier steps of work on the user's query (a draft and critiques of it). Write the \
final, improved answer to the query, fixing every valid point raised. Reply with the answer only.

{references}

User query: {prompt}"""

PLAN = """You are a manager splitting a task among {workers} workers. Write exactly {workers} \
instructions, one per worker, each a self-contained sub-task that helps answer the user's query. \
Reply with JSON only, in this form: {"instructions": ["...", "..."]}

User query: {prompt}"""

WORKER = """You are one worker of a team answering a user's query. Your manager's instruction to you:
{instruction}

User query: {prompt}"""

DEFAULT = "{prompt}"

TEMPLATES: dict[str, str] = {
    "aggregate": AGGREGATE,
    "critique": CRITIQUE,
    "refine": REFINE,
    "plan": PLAN,
    "worker": WORKER,
    "default": DEFAULT,
}

PLACEHOLDERS = ("prompt", "references", "instruction", "workers")
_PLACEHOLDER = re.compile(r"\{(prompt|references|instruction|workers)\}")
# what looks meant as a placeholder but is none: `{{ x }}` (Jinja, Mustache), `{ prompt }`, `{promt}`
_DOUBLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SPACED = re.compile(r"\{\s+([A-Za-z_][A-Za-z0-9_]*)\s*\}|\{\s*([A-Za-z_][A-Za-z0-9_]*)\s+\}")
_SINGLE = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")
_EXACT = frozenset(f"{{{p}}}" for p in PLACEHOLDERS)
#: names people write for a placeholder, from other template tools
_SYNONYMS = {
    "question": "prompt",
    "query": "prompt",
    "input": "prompt",
    "user_prompt": "prompt",
    "user_query": "prompt",
    "task": "prompt",
    "responses": "references",
    "answers": "references",
    "outputs": "references",
    "reference": "references",
    "refs": "references",
}
_TEMPLATE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def looks_like_name(text: str) -> bool:
    """A bare identifier is a template name; anything else is template text."""
    return bool(_TEMPLATE_NAME.match(text))


def _suggest(name: str) -> str | None:
    if name in PLACEHOLDERS:
        return name
    close = difflib.get_close_matches(name.lower(), PLACEHOLDERS, n=1, cutoff=0.7)
    return close[0] if close else _SYNONYMS.get(name.lower())


def placeholder_mistakes(text: str) -> list[str]:
    """What in a written template looks meant as a placeholder but is none, one phrase each:
    ``{{ prompt }}`` and ``{ prompt }`` (only ``{prompt}`` is replaced), ``{promt}``, ``{question}``.
    Other braces (JSON, code, an unrelated ``{name}``) are left alone, as the template says."""
    out: list[str] = []
    doubles = [(m.start(), m.end()) for m in _DOUBLE.finditer(text)]

    def add(written: str, name: str | None) -> None:
        hint = (
            f"write `{{{name}}}`"
            if name is not None
            else "placeholders: " + ", ".join(f"`{{{p}}}`" for p in PLACEHOLDERS)
        )
        line = f"`{written}`, which is not a placeholder ({hint})"
        if line not in out:
            out.append(line)

    for m in _DOUBLE.finditer(text):
        add(m.group(0), _suggest(m.group(1)))
    for m in [*_SPACED.finditer(text), *_SINGLE.finditer(text)]:
        if any(start <= m.start() < end for start, end in doubles):
            continue
        suggestion = _suggest(next(g for g in m.groups() if g is not None))
        if suggestion is not None and m.group(0) not in _EXACT:
            add(m.group(0), suggestion)
    return out


_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be sent on, or None: a lone UTF-16 surrogate (a JSON ``\\ud800`` escape
    puts one in a str) is not text. Found only when a call encodes its request, it failed the run
    as a provider error of whichever node was first to send it, not of the one that wrote it."""
    m = _SURROGATE.search(text)
    if m is None:
        return None
    return f"holds a lone UTF-16 surrogate ({m.group()!r} at character {m.start()}), which is not text"


#: hex digits of a references block's boundary tag: 64 bits, so no text can be made to hold the tag
#: its own hash gives (a fixed point), nor guess it without the other references
_TAG_CHARS = 16


def boundary_tag(texts: Sequence[str]) -> str:
    """A tag that none of ``texts`` holds, drawn from a hash of them all: the same texts give the
    same tag (so a prompt, and the call cache keyed on it, is the same from run to run), and a text
    cannot foretell it, as it depends on the text itself and on the others."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big") + data)
    for n in itertools.count():
        d = digest.copy()
        d.update(n.to_bytes(8, "big"))
        tag = d.hexdigest()[:_TAG_CHARS]
        if not any(tag in text for text in texts):
            return tag
    raise AssertionError("unreachable")  # pragma: no cover


def format_references(outputs: Sequence[tuple[str, str]]) -> str:
    """Number the references, in input order: ``1. [node] <<tag>>`` over each output, and
    ``<<end tag>>`` under it. A proposer's output may echo hostile input, and ``2. [other]`` inside
    one would otherwise read as a reference of its own or as another node's words: the tag (see
    ``boundary_tag``) is in no output, so no output can open or close a block. No line explains
    it: every aggregator call would pay for one, and the blocks read as what they are."""
    if not outputs:  # a node reading nothing (every proposer): no block, so no tag to hash for
        return ""
    tag = boundary_tag([t for pair in outputs for t in pair])
    return "\n\n".join(
        f"{i}. [{node}] <<{tag}>>\n{text}\n<<end {tag}>>" for i, (node, text) in enumerate(outputs, 1)
    )


# A line of a manager's instruction that could pass for the ``worker`` template's own headings: a
# plan (model output, which may echo hostile input from the query) holding "User query: ..." would
# show the worker a second query, before the real one. A Markdown backslash before it leaves the
# line readable as what it is, and every other instruction exactly as written.
_WORKER_HEADING = re.compile(r"(?im)^([ \t]*)(?=user\s+query[ \t]*:|your\s+manager's\s+instruction\b)")


def quote_instruction(text: str) -> str:
    """A manager's instruction as its worker is shown it: lines that start like the ``worker``
    template's headings (``User query:``) escaped, the rest as written."""
    return _WORKER_HEADING.sub(r"\1\\", text)


#: the literal parts of a template that is one placeholder and nothing else
_BARE = ("", "")


@dataclass(frozen=True, slots=True)
class Template:
    """A template split once into literal parts and placeholder names."""

    parts: tuple[str, ...]
    names: tuple[str, ...]

    @classmethod
    def compile(cls, text: str) -> Template:
        parts: list[str] = []
        names: list[str] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            parts.append(text[pos : m.start()])
            names.append(m.group(1))
            pos = m.end()
        parts.append(text[pos:])
        return cls(tuple(parts), tuple(names))

    def render(self, values: dict[str, str]) -> str:
        if self.parts == _BARE:  # the whole template is one placeholder (the default, `{prompt}`)
            return values.get(self.names[0], "")  # 7.3k instructions a call through the loop, 1k so
        out = [self.parts[0]]
        for name, part in zip(self.names, self.parts[1:], strict=True):
            out.append(values.get(name, ""))
            out.append(part)
        return "".join(out)
