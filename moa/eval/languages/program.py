"""The program a non-Python item runs, and the edits every layout makes to an answer's code.

A ``Program`` is one source file plus where the answer's code sits in it, so a compiler's line
number can be given back counted in the answer's own lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from moa.eval.languages.source import brace_depths, mask, split_lines

__all__ = [
    "ANSWER_MAIN",
    "Parts",
    "Program",
    "cut",
    "drop_leading_brace",
    "explicit_java_asserts",
    "qualify_rust_macros",
    "rename_function",
    "rename_tests_clashes",
    "reset_answer_macros",
    "shield_go_predeclared",
    "without_trailing_comments",
]

#: the name an answer's own ``main`` is renamed to, so the tests' ``main`` is the one that runs
ANSWER_MAIN = "moa_answer_main"


@dataclass(frozen=True, slots=True)
class Program:
    """One source file to compile and run.

    ``first_line``..``last_line`` (1-based, inclusive) hold the answer's code, whose line
    ``base`` is the program's ``first_line``; ``first_line == 0`` when no range is known.
    """

    language: str
    source: str
    filename: str
    first_line: int = 0
    last_line: int = -1
    base: int = 1
    main_class: str | None = None
    """Java: the class whose ``main`` runs."""
    go_test: bool = False
    """Go: built with ``go test -c`` (the tests are ``func TestX(t *testing.T)``)."""
    tests: tuple[str, ...] = ()
    """Assert lines run by the harness, so a failure can quote its line."""
    end_suffix: str = ""
    """What the end-of-tests harness writes after the run's token (``moa.eval.languages.marker``)."""
    launcher: tuple[str, str] | None = None
    """Java: (file name, source) of the end-of-tests launcher, compiled beside ``source``."""
    answer_elsewhere: tuple[tuple[int, int], ...] = ()
    """Lines (first, last) of the answer's code outside ``first_line``..``last_line`` (Java: its
    other types, placed before the tests' class): never taken for the tests' own code."""

    def answer_line(self, line: int) -> int | None:
        """The line of the answer's code that is ``line`` of the program, else ``None``."""
        if self.first_line and self.first_line <= line <= self.last_line:
            return line - self.first_line + self.base
        return None


class Parts:
    """A source file built piece by piece, remembering which lines are the answer's."""

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._lines = 0
        self.first = 0
        self.last = -1
        self.base = 1
        self._spans: list[tuple[int, int]] = []

    def add(self, text: str, *, answer: bool = False, base: int = 1) -> None:
        """Append ``text`` on lines of its own; ``answer`` marks it as the answer's code, whose
        first line is line ``base`` of the answer (the last part so marked numbers the answer's
        lines; the others are ``Program.answer_elsewhere``)."""
        if not text:
            return
        if not text.endswith("\n"):
            text += "\n"
        if answer:
            self.first = self._lines + 1
            self.last = self._lines + text.count("\n")
            self.base = base
            self._spans.append((self.first, self.last))
        self._chunks.append(text)
        self._lines += text.count("\n")

    def program(
        self,
        language: str,
        filename: str,
        *,
        main_class: str | None = None,
        go_test: bool = False,
        tests: tuple[str, ...] = (),
    ) -> Program:
        """The file built so far."""
        source = "".join(self._chunks)
        return Program(
            language,
            source,
            filename,
            self.first,
            self.last,
            self.base,
            main_class,
            go_test,
            tests,
            answer_elsewhere=tuple(span for span in self._spans if span != (self.first, self.last)),
        )


def cut(source: str, start: int, end: int) -> str:
    """``source`` without ``[start, end)``, its line breaks kept so later lines keep their numbers."""
    return source[:start] + "\n" * source.count("\n", start, end) + source[end:]


def drop_leading_brace(tests: str) -> str:
    """MultiPL-E's C++, Java and Rust tests open with the ``}`` that closes the prompt's function
    (its stop token): a whole program closes the function itself, so the brace goes."""
    stripped = tests.lstrip()
    if not stripped.startswith("}"):
        return tests
    at = len(tests) - len(stripped)
    return tests[:at] + " " + tests[at + 1 :]


def rename_function(source: str, language: str, old: str, new: str) -> str:
    """``source`` with every definition of the function ``old`` renamed ``new`` (calls to it are
    left alone): an answer's own ``main`` must not clash with the tests'."""
    masked = mask(source, language)
    if language == "rust":
        pattern = rf"\bfn\s+({old})\s*\("
    elif language == "go":
        pattern = rf"\bfunc\s+({old})\s*\("
    else:
        pattern = rf"(?<![\w.])(?<=[\w>\]*&\s])({old})\s*\([^;{{)]*\)\s*(throws\s+[\w.,\s]+)?\{{"
    spans = [m.span(1) for m in re.finditer(pattern, masked)]
    for start, end in reversed(spans):
        source = source[:start] + new + source[end:]
    return source


_COMMENT_LINE = re.compile(r"^\s*(//|/\*|\*|$)")


def without_trailing_comments(head: str) -> str:
    """``head`` without the comment lines (a doc comment) and blank lines that end it: Rust refuses
    a doc comment that documents nothing, and the answer brings its own."""
    lines = split_lines(head, keepends=True)
    while lines and _COMMENT_LINE.match(lines[-1]):
        lines.pop()
    return "".join(lines)


# a directive naming a macro, comments allowed around the ``#`` (``%:`` is its digraph)
_GAP = r"(?:[ \t]|/\*.*?\*/)"
_MACRO = re.compile(rf"^{_GAP}*(?:#|%:){_GAP}*(?:define|undef){_GAP}+(\w+)", re.MULTILINE)


def reset_answer_macros(program: Program) -> Program:
    """C, C++: ``program`` with every macro the answer's lines define or undefine undefined again
    right after them, and ``<assert.h>`` read again when the answer defined ``assert`` or ``NDEBUG``.
    The tests follow the answer in one translation unit: ``#define assert(x) 0`` made every
    assertion vanish, ``#define return return 0&&`` made the tests' ``main`` return 0. A ``#line``
    keeps the later lines' numbers."""
    if program.language not in ("c", "cpp") or not program.first_line:
        return program
    lines = split_lines(program.source, keepends=True)
    answer = "".join(lines[program.first_line - 1 : program.last_line]).replace("\\\n", "")
    names = dict.fromkeys(_MACRO.findall(answer))
    if not names:
        return program
    # the blank line ends a directive the answer's last line left continued with a backslash
    reset = ["\n", *(f"#undef {name}\n" for name in names)]
    if "assert" in names or "NDEBUG" in names:
        reset += ["#undef NDEBUG\n", "#include <assert.h>\n"]
    reset.append(f"#line {program.last_line + 1}\n")
    source = "".join([*lines[: program.last_line], *reset, *lines[program.last_line :]])
    return replace(program, source=source)


_RUST_STD_MACROS = (
    "assert|assert_eq|assert_ne|debug_assert|debug_assert_eq|debug_assert_ne|panic|unreachable|todo|"
    "unimplemented|vec|format|print|println|eprint|eprintln|write|writeln|matches|dbg|concat|stringify"
)
_RUST_CALL = re.compile(rf"(?<![\w:$#])(?:{_RUST_STD_MACROS})\s*!\s*[(\[{{]")
# a path from `std` (`std::process::exit`): relative, so it names a `mod std` of the answer's first
_RUST_STD_PATH = re.compile(r"(?<![\w:$#])std\s*::")


def qualify_rust_macros(program: Program) -> Program:
    """Rust: ``program`` with the standard macros called after the answer's lines
    (``assert_eq!``, ``vec!``, ...) called by their path, ``::std::assert_eq!``, and its paths from
    ``std`` made absolute (``::std::process::exit``). A ``macro_rules!`` of the answer shadows a
    standard macro for the rest of the file: an empty ``assert_eq`` made every test vanish; a
    ``mod std`` of the answer's replaced what the tests call (a ``catch_unwind`` always ``Ok``, an
    ``exit`` that returns)."""
    if program.language != "rust" or not program.first_line:
        return program
    lines = split_lines(program.source, keepends=True)
    start = sum(len(line) for line in lines[: program.last_line])
    masked = mask(program.source, "rust")
    source = program.source
    calls = [*_RUST_CALL.finditer(masked, start), *_RUST_STD_PATH.finditer(masked, start)]
    for at, prefix in sorted(
        ((m.start(), "::" if m.re is _RUST_STD_PATH else "::std::") for m in calls), reverse=True
    ):
        source = source[:at] + prefix + source[at:]
    return replace(program, source=source)


_JAVA_ASSERT = re.compile(r"(?<![\w$.])assert\b")


def _assert_parts(masked: str, at: int) -> tuple[int | None, int] | None:
    """Where the ``:`` before an ``assert``'s message (``None`` without one) and its ``;`` are,
    reading the masked source from just past the keyword; ``None`` when it is not a statement."""
    depth, pending, colon = 0, 0, None
    for i in range(at, len(masked)):
        c = masked[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif depth == 0 and c == "?":
            pending += 1  # a conditional's ``:`` is its own
        elif depth == 0 and c == ":" and masked[i + 1 : i + 2] != ":" and masked[i - 1 : i] != ":":
            if pending:
                pending -= 1
            elif colon is None:
                colon = i
        elif depth == 0 and c == ";":
            return colon, i
    return None


def explicit_java_asserts(program: Program) -> Program:
    """Java: ``program`` with each ``assert`` statement outside the answer's lines written as
    ``{ if (!(x)) throw new java.lang.AssertionError(message); }``, which ``-ea`` does not decide.
    An ``assert`` is skipped when its class's static ``$assertionsDisabled`` is set, and a wrong
    answer's static initializer in the tests' class set it (``sun.misc.Unsafe``): every test
    passed. Line breaks are kept, so the lines keep their numbers."""
    if program.language != "java":
        return program
    source = program.source
    masked = mask(source, "java")
    lines = split_lines(source, keepends=True)
    start = sum(len(line) for line in lines[: program.first_line - 1]) if program.first_line else 0
    end = sum(len(line) for line in lines[: program.last_line]) if program.first_line else 0
    edits: list[tuple[int, int, str]] = []
    for m in _JAVA_ASSERT.finditer(masked):
        parts = None if start <= m.start() < end else _assert_parts(masked, m.end())
        if parts is None:
            continue
        colon, semi = parts
        condition = source[m.end() : semi if colon is None else colon]
        message = "" if colon is None else source[colon + 1 : semi]
        edits.append(
            (m.start(), semi + 1, f"{{ if (!({condition})) throw new java.lang.AssertionError({message}); }}")
        )
    for begin, stop, text in reversed(edits):
        source = source[:begin] + text + source[stop:]
    return replace(program, source=source)


_GO_PREDECLARED = frozenset({
    "any", "bool", "byte", "comparable", "complex64", "complex128", "error", "float32", "float64", "int",
    "int8", "int16", "int32", "int64", "rune", "string", "uint", "uint8", "uint16", "uint32", "uint64",
    "uintptr", "true", "false", "iota", "nil", "append", "cap", "clear", "close", "complex", "copy",
    "delete", "imag", "len", "make", "max", "min", "new", "panic", "print", "println", "real", "recover",
})  # fmt: skip
_GO_DECLARED = re.compile(
    r"\bfunc\s+(\w+)\s*[\[(]|\b(?:var|const|type)\s+(\w+(?:\s*,\s*\w+)*)|\b(?:var|const|type)\s*\("
)
_GO_GROUP_LINE = re.compile(r"^[ \t]*(\w+(?:[ \t]*,[ \t]*\w+)*)", re.MULTILINE)


def _answer_ranges(program: Program, source: str) -> list[tuple[int, int]]:
    """The character ranges of the answer's lines in ``source``."""
    starts = [0]
    for line in split_lines(source, keepends=True):
        starts.append(starts[-1] + len(line))
    spans = [(program.first_line, program.last_line), *program.answer_elsewhere]
    return [(starts[first - 1], starts[min(last, len(starts) - 1)]) for first, last in spans if first]


def _go_package_names(masked: str, ranges: list[tuple[int, int]]) -> set[str]:
    """The predeclared identifiers (``true``, ``len``, ``string``...) that the answer's lines
    declare at the package level of ``masked``."""
    depths = brace_depths(masked)
    names: set[str] = set()
    for start, end in ranges:
        for m in _GO_DECLARED.finditer(masked, start, end):
            if depths[m.start()] != 0:
                continue
            if m.group(1) or m.group(2):
                names.update(n.strip() for n in (m.group(1) or m.group(2)).split(","))
                continue
            close = masked.find(")", m.end())
            group = masked[m.end() : close if close >= 0 else end]
            for line in _GO_GROUP_LINE.finditer(group):
                names.update(n.strip() for n in line.group(1).split(","))
    return names & _GO_PREDECLARED


def shield_go_predeclared(program: Program) -> Program:
    """Go: ``program`` with every predeclared identifier the answer's lines declare at package level
    (``const true = false``, ``func len(...)``, ``type string ...``) renamed in the answer's lines,
    ``moa_answer_<name>``. A package-level declaration replaces the builtin in the whole package,
    tests included: a wrong answer returning ``false`` beside ``const true = false`` passed every
    `expected: true`. Inside the answer every use of the name meant its own declaration (or a local
    one), so renaming them all keeps its meaning; the tests see the builtin again."""
    if program.language != "go" or not program.first_line:
        return program
    masked = mask(program.source, "go")
    ranges = _answer_ranges(program, program.source)
    names = _go_package_names(masked, ranges)
    if not names:
        return program
    token = re.compile(rf"(?<!\w)(?:{'|'.join(sorted(names))})(?!\w)")
    source = program.source
    for start, end in sorted(ranges, reverse=True):
        for m in reversed(list(token.finditer(masked, start, end))):
            source = source[: m.start()] + f"moa_answer_{m.group(0)}" + source[m.end() :]
    return replace(program, source=source)


# a definition at the top level, per language (Go also: `var`, `const`, `type`)
_DEFINITION = {
    "c": re.compile(r"(?<![\w.>:])([A-Za-z_]\w*)\s*\([^;{}()]*\)\s*\{"),
    "cpp": re.compile(r"(?<![\w.>:])([A-Za-z_]\w*)\s*\([^;{}()]*\)\s*(?:const\s*)?(?:noexcept\s*)?\{"),
    "rust": re.compile(r"\bfn\s+(\w+)\s*[<(]"),
}
_C_KEYWORDS = frozenset({"if", "for", "while", "switch", "catch", "return", "sizeof", "else", "do", "main"})


def _top_level_definitions(program: Program, masked: str) -> tuple[set[str], set[str]]:
    """The names the answer's lines and the rest of the program each define at the top level."""
    depths = brace_depths(masked)
    ranges = _answer_ranges(program, program.source)
    answer: set[str] = set()
    rest: set[str] = set()
    pattern = _GO_DECLARED if program.language == "go" else _DEFINITION[program.language]
    for m in pattern.finditer(masked):
        if depths[m.start()] != 0:
            continue
        mine = any(start <= m.start() < end for start, end in ranges)
        if m.re is _GO_DECLARED and not (m.group(1) or m.group(2)):
            continue  # a group `var (...)`: the answer's own are renamed by shield_go_predeclared
        found = m.group(2) if m.re is _GO_DECLARED and m.group(2) else m.group(1)
        (answer if mine else rest).update(n.strip() for n in found.split(","))
    return answer, rest


def rename_tests_clashes(program: Program) -> Program:
    """C, C++, Go, Rust: ``program`` with each name the answer's lines and the tests both define at
    the top level renamed in the tests' lines (``moa_tests_<name>``): a correct answer defining a
    helper the item's test program also defines (``abs``, ``square``) failed to compile
    (``abs redeclared in this block``, ``redefinition of 'square'``). The tests call their own."""
    if program.language not in ("c", "cpp", "go", "rust") or not program.first_line:
        return program
    masked = mask(program.source, program.language)
    answer, rest = _top_level_definitions(program, masked)
    clash = {n for n in answer & rest if n not in _C_KEYWORDS and n != "init" and not n.startswith("Test")}
    if not clash:
        return program
    ranges = _answer_ranges(program, program.source)
    token = re.compile(rf"(?<![\w.])(?<!->)(?:{'|'.join(sorted(clash))})(?!\w)")
    source = program.source
    for m in reversed(list(token.finditer(masked))):
        if not any(start <= m.start() < end for start, end in ranges):
            source = source[: m.start()] + f"moa_tests_{m.group(0)}" + source[m.end() :]
    return replace(program, source=source)
