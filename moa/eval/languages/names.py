"""Language names: the canonical spelling of each language the execution evaluator runs, and the
names datasets use for them (MultiPL-E writes ``js``, ``rs``, ``go_test.go``; people write ``c++``)."""

from __future__ import annotations

__all__ = ["COMPILED", "LANGUAGES", "canonical_language"]

#: every language the execution evaluator runs, in its canonical spelling
LANGUAGES = ("c", "cpp", "go", "html", "java", "javascript", "python", "rust", "typescript")

#: the languages with a compile step (TypeScript's is type checking and transpiling)
COMPILED = frozenset({"c", "cpp", "go", "java", "rust", "typescript"})

_ALIASES = {
    "c": "c",
    "cpp": "cpp",
    "c++": "cpp",
    "cc": "cpp",
    "cxx": "cpp",
    "go": "go",
    "golang": "go",
    "go_test.go": "go",
    "html": "html",
    "htm": "html",
    "java": "java",
    "javascript": "javascript",
    "js": "javascript",
    "node": "javascript",
    "nodejs": "javascript",
    "python": "python",
    "py": "python",
    "python3": "python",
    "py3": "python",
    "rust": "rust",
    "rs": "rust",
    "typescript": "typescript",
    "ts": "typescript",
}


def canonical_language(name: str) -> str | None:
    """``name`` in its canonical spelling (``"rs"`` -> ``"rust"``), ``None`` when moa does not run it."""
    return _ALIASES.get(name.strip().lower())
