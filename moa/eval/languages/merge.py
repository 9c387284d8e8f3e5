"""Joining an answer with a prompt or tests where the language allows one of a thing per file: Go's
package clause and imports (a package imported twice does not compile), Java's imports and its one
file-named public class.

Every cut keeps the answer's line breaks, so its remaining lines keep their numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from moa.eval.languages.program import cut
from moa.eval.languages.source import Span, defines_function, mask, top_level_types

__all__ = ["GoFile", "JavaFile", "go_imports_block", "java_host", "split_go", "split_java", "unpublic"]

_GO_PACKAGE = re.compile(r"^[ \t]*package[ \t]+(\w+)[ \t]*;?[ \t]*$", re.MULTILINE)
_GO_IMPORT_BLOCK = re.compile(r"^[ \t]*import[ \t]*\((.*?)\)[ \t]*;?", re.MULTILINE | re.DOTALL)
_GO_IMPORT_LINE = re.compile(r'^[ \t]*import[ \t]+(?:[\w.]+[ \t]+)?"[^"\n]*"[ \t]*;?[ \t]*$', re.MULTILINE)
_GO_SPEC = re.compile(r'(?:([\w.]+)[ \t]+)?"([^"\n]*)"')


@dataclass(frozen=True, slots=True)
class GoFile:
    """A Go source split into its package name, its import specs (``alias "path"``) and the rest."""

    package: str | None
    imports: tuple[str, ...]
    body: str


def split_go(source: str) -> GoFile:
    """``source``'s package clause, imports and the rest (the clause and imports cut out)."""
    masked = mask(source, "go")
    package: str | None = None
    regions: list[tuple[int, int]] = []
    m = _GO_PACKAGE.search(masked)
    if m is not None:
        package = m.group(1)
        regions.append(m.span())
    imports: list[str] = []
    for m in _GO_IMPORT_BLOCK.finditer(masked):
        regions.append(m.span())
        imports.extend(_specs(source[m.start(1) : m.end(1)]))
    for m in _GO_IMPORT_LINE.finditer(masked):
        regions.append(m.span())
        imports.extend(_specs(source[m.start() : m.end()].split("import", 1)[1]))
    body = source
    for start, end in sorted(regions, reverse=True):
        body = cut(body, start, end)
    return GoFile(package, tuple(imports), body)


def _specs(text: str) -> list[str]:
    return [f'{alias} "{path}"' if alias else f'"{path}"' for alias, path in _GO_SPEC.findall(text)]


def go_imports_block(*groups: tuple[str, ...]) -> str:
    """One ``import (...)`` holding each imported path once (the first spelling wins)."""
    by_path: dict[str, str] = {}
    for group in groups:
        for spec in group:
            path = spec[spec.index('"') :]
            by_path.setdefault(path, spec)
    if not by_path:
        return ""
    return "import (\n" + "".join(f"\t{spec}\n" for spec in by_path.values()) + ")\n"


_JAVA_PACKAGE = re.compile(r"^[ \t]*package[ \t]+[\w.]+[ \t]*;", re.MULTILINE)
_JAVA_IMPORT = re.compile(r"^[ \t]*import[ \t]+(static[ \t]+)?[\w.]+(\.\*)?[ \t]*;", re.MULTILINE)
_PUBLIC_TYPE = re.compile(
    r"^([ \t]*)public[ \t]+(?=((final|abstract|sealed|static|strictfp)[ \t]+)*(class|interface|enum|record)\b)",
    re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class JavaFile:
    """A Java source split into its imports, its top-level types, and the text with both cut out."""

    imports: tuple[str, ...]
    types: tuple[Span, ...]
    body: str


def split_java(source: str) -> JavaFile:
    """``source``'s imports (its package clause dropped: everything runs in the default package)
    and top-level types; ``body`` keeps the types where they were."""
    masked = mask(source, "java")
    regions = [m.span() for m in _JAVA_PACKAGE.finditer(masked)]
    imports: list[str] = []
    for m in _JAVA_IMPORT.finditer(masked):
        regions.append(m.span())
        imports.append(source[m.start() : m.end()].strip())
    body = source
    for start, end in sorted(regions, reverse=True):
        body = cut(body, start, end)
    return JavaFile(tuple(imports), tuple(top_level_types(body)), body)


def unpublic(source: str) -> str:
    """``source`` with ``public`` taken off its top-level types: one file holds them all, and only a
    class named after the file may be public."""
    return _PUBLIC_TYPE.sub(r"\1", source)


def java_host(file: JavaFile, entry: str | None) -> Span | None:
    """The type whose members are the answer's solution: the one defining ``entry``, else the
    only type there is."""
    if entry:
        for span in file.types:
            if defines_function(file.body[span.open + 1 : span.close], "java", entry):
                return span
    return file.types[0] if len(file.types) == 1 else None
