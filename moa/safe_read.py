"""Reading files moa did not write, so that a hostile one ends in one line, never a hang or a traceback.

Three guards, in the order they act:

- the path must be a regular file under a size cap, checked with ``stat`` before it is opened (so a
  FIFO or ``/dev/zero`` is never read) and again with ``fstat`` on the open descriptor (so a file
  swapped in between changes nothing); the open is non-blocking, so even a FIFO swapped in cannot hang;
- JSON and YAML nesting is bounded: both parsers recurse, and a RecursionError prints thousands of lines;
- YAML aliases are bounded by the size of the document they expand to: the "billion laughs" is a few
  hundred bytes that parse into a small shared graph and only blow up later, when the values are
  copied (validation, request bodies).

A document (``read_document``: topologies, experiments) also refuses a key repeated in one mapping,
which YAML and JSON both resolve by silently keeping the last.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from moa.errors import UserError

if TYPE_CHECKING:
    import yaml

__all__ = [
    "DATASET_MAX_BYTES",
    "DOCUMENT_MAX_BYTES",
    "GZIP_MAX_RATIO",
    "GZIP_MIN_BYTES",
    "MAX_DEPTH",
    "MAX_YAML_VALUES",
    "TEXT_MAX_BYTES",
    "DuplicateKey",
    "iter_gzip_lines",
    "iter_lines",
    "lone_surrogate",
    "not_a_mapping",
    "open_regular",
    "parse_json",
    "parse_yaml",
    "read_document",
    "read_regular",
    "read_text_file",
    "read_text_stream",
    "refuse_special",
    "unique_pairs",
]

#: topology and experiment files are hand-written: a few KiB in practice
DOCUMENT_MAX_BYTES = 1 << 20
#: datasets are streamed line by line: the cap bounds what a wrong path (a disk image, a log) can cost
DATASET_MAX_BYTES = 2 << 30
#: a gzip file may always decompress to this much (small files of repetitive rows compress well)...
GZIP_MIN_BYTES = 64 << 20
#: ...and beyond it to this many times its own size: text compresses about 3 to 20 times, a gzip bomb
#: about 1,000 times, so a bomb is refused after at most 64 MiB of work, long before memory runs out
GZIP_MAX_RATIO = 100
#: levels of nested lists and mappings; real files use fewer than ten
MAX_DEPTH = 64
#: values a YAML document may hold once its aliases are expanded: about twice what a plain file of
#: DOCUMENT_MAX_BYTES can hold (``[0,0,...]``), so only alias expansion reaches it
MAX_YAML_VALUES = 1_000_000

_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
# O_NONBLOCK: opening a FIFO for reading blocks until a writer comes, and the stat check above it
# cannot close that race on its own; O_NOCTTY: a terminal device must never become ours
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
)


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def _check(
    path: str | os.PathLike[str], st: os.stat_result, max_bytes: int, what: str, error: type[UserError]
) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _NOT_REGULAR if test(st.st_mode)), "not a plain file")
        raise error(f"{path}: {what} is {kind}, not a regular file")
    if st.st_size > max_bytes:
        raise error(f"{path}: {what} is {_size(st.st_size)}, over the {_size(max_bytes)} limit")


def open_regular(
    path: str | os.PathLike[str],
    *,
    max_bytes: int,
    what: str = "file",
    error: type[UserError] = UserError,
    missing: str = "no such file",
) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file of at most ``max_bytes``; else raise
    ``error`` with one line naming the path (``missing`` is the text for a path that does not exist)."""
    try:
        _check(path, os.stat(path), max_bytes, what, error)
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e.strerror}") from None
    except ValueError:  # os.stat refuses a path holding a NUL byte
        raise error(f"{os.fspath(path)!r}: not a usable path (it holds a NUL byte)") from None
    try:
        # the path may have been replaced between the stat and the open
        _check(path, os.fstat(fd), max_bytes, what, error)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def refuse_special(
    path: str | os.PathLike[str], *, what: str = "file", error: type[UserError] = UserError
) -> None:
    """Raise ``error`` if ``path`` exists and is not a regular file (a missing path is left to the
    caller to create); for files opened by other libraries, such as SQLite, that would block on a FIFO."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e.strerror}") from None
    except ValueError:
        raise error(f"{os.fspath(path)!r}: not a usable path (it holds a NUL byte)") from None
    _check(path, st, max_bytes=st.st_size, what=what, error=error)


def iter_lines(
    f: BinaryIO,
    *,
    max_bytes: int,
    path: str | os.PathLike[str],
    what: str = "file",
    error: type[UserError] = UserError,
) -> Iterator[bytes]:
    """The lines of an open file (newline kept), stopping with ``error`` past ``max_bytes`` in total:
    a file that grows while it is read is bounded too."""
    left, number = max_bytes, 0
    while True:
        try:
            line = f.readline(left + 1)
        except OSError as e:
            # a disk or network share failing halfway, or /proc/self/mem: one line, not a traceback
            raise error(f"{path}: cannot read {what} past line {number}: {e.strerror or e}") from None
        if not line:
            return
        left -= len(line)
        if left < 0:
            raise error(f"{path}: {what} grew over the {_size(max_bytes)} limit while being read")
        number += 1
        yield line


def iter_gzip_lines(
    f: BinaryIO,
    *,
    max_bytes: int,
    path: str | os.PathLike[str],
    what: str = "file",
    error: type[UserError] = UserError,
) -> Iterator[bytes]:
    """The decompressed lines of an open gzip file (newline kept). It stops with ``error`` once the
    decompressed text passes ``max_bytes`` or ``GZIP_MAX_RATIO`` times the compressed size (whichever
    is smaller, never below ``GZIP_MIN_BYTES``: a gzip bomb), and at the first corrupt byte."""
    compressed = os.fstat(f.fileno()).st_size
    cap = min(max_bytes, max(GZIP_MIN_BYTES, GZIP_MAX_RATIO * compressed))
    left = cap
    with gzip.GzipFile(fileobj=f, mode="rb") as gz:
        while True:
            try:
                line = gz.readline(left + 1)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise error(f"{path}: {what} is not a valid gzip file: {_one_line(str(e))}") from None
            except OSError as e:
                raise error(f"{path}: cannot read {what}: {e.strerror}") from None
            if not line:
                return
            left -= len(line)
            if left < 0:
                raise error(
                    f"{path}: {what} decompresses to over {_size(cap)} "
                    f"({_size(compressed)} compressed): refused as a gzip bomb"
                )
            yield line


def read_regular(
    path: str | os.PathLike[str],
    *,
    max_bytes: int,
    what: str = "file",
    error: type[UserError] = UserError,
    missing: str = "no such file",
) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see ``open_regular``)."""
    with open_regular(path, max_bytes=max_bytes, what=what, error=error, missing=missing) as f:
        try:
            raw = f.read(max_bytes + 1)
        except OSError as e:
            raise error(f"{path}: cannot read {what}: {e.strerror}") from None
    if len(raw) > max_bytes:
        raise error(f"{path}: {what} grew over the {_size(max_bytes)} limit while being read")
    return raw


#: a prompt or template read from a file (``--prompt @FILE``, a node's ``prompt:`` naming a file)
TEXT_MAX_BYTES = 4 << 20


def read_text_file(
    path: str | os.PathLike[str], *, what: str = "text file", max_bytes: int = TEXT_MAX_BYTES
) -> str:
    """A UTF-8 text file (a byte order mark dropped) of at most ``max_bytes``; one line naming the
    file for every problem."""
    return _utf8_text(read_regular(path, max_bytes=max_bytes, what=what), source=path, what=what)


def read_text_stream(
    f: BinaryIO | None, *, source: str, what: str = "text", max_bytes: int = TEXT_MAX_BYTES
) -> str:
    """A stream read as ``read_text_file`` reads a file (``--prompt -``): UTF-8 whatever the
    locale, at most ``max_bytes`` (``< /dev/zero`` is no prompt to read until memory runs out)."""
    if f is None:
        raise UserError(f"{source}: {what} is closed")
    try:
        raw = f.read(max_bytes + 1)
    except OSError as e:
        raise UserError(f"{source}: cannot read {what}: {e.strerror}") from None
    if len(raw) > max_bytes:
        raise UserError(f"{source}: {what} is over the {_size(max_bytes)} limit")
    return _utf8_text(raw, source=source, what=what)


def _utf8_text(raw: bytes, *, source: str | os.PathLike[str], what: str) -> str:
    try:
        return raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{source}: {what} is not UTF-8 text (byte {e.start})") from None


def _json_depth(value: Any) -> int:
    """Levels of nested lists and objects, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest


class DuplicateKey(ValueError):
    """A key repeated in one JSON object (``parse_json(unique_keys=True)``), and the line where it
    repeats when that is sure."""

    def __init__(self, key: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: duplicate key `{key}`" if line else f"duplicate key `{key}`")
        self.key = key
        self.line = line


def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A ``json.loads`` ``object_pairs_hook`` raising ``DuplicateKey`` for a key named twice."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(k)
        out[k] = v
    return out


def _repeated_key_line(text: str, key: str) -> int | None:
    """The line of the repeat: the parser keeps no positions for its hook, so it is sure only when
    ``"key":`` occurs exactly twice in ``text`` (with more, another object may hold the others)."""
    hits = [m.start() for m in re.finditer(re.escape(json.dumps(key)) + r"\s*:", text)]
    return text.count("\n", 0, hits[1]) + 1 if len(hits) == 2 else None


#: an escape of a UTF-16 surrogate: only such an escape can put one in a decoded JSON value
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def lone_surrogate(text: str, value: Any) -> str | None:
    """Why ``value``, parsed from the JSON ``text``, is refused when it holds a ``\\ud800`` escape
    without its pair (valid JSON, but not text: the store, SQLite, a model request would fail on
    it); None when it holds none."""
    if not _SURROGATE_ESCAPE.search(text):
        return None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a string holds a lone UTF-16 surrogate ({e.object[e.start]!r}), which is not text"
    return None


def parse_json(text: str, *, max_depth: int = MAX_DEPTH, unique_keys: bool = False) -> Any:
    """``json.loads`` with nesting bounded; deeper input raises ``ValueError`` (syntax errors raise
    ``json.JSONDecodeError``, a subclass: catch it first for its line number). With ``unique_keys``
    (documents people write, and dataset rows) a key repeated in one object raises
    ``DuplicateKey``, a ``ValueError`` naming it, where ``json`` would keep the last."""
    too_deep = f"nesting deeper than {max_depth} levels"
    try:
        value = json.loads(text, object_pairs_hook=unique_pairs if unique_keys else None)
    except RecursionError:
        raise ValueError(too_deep) from None
    except DuplicateKey as e:
        raise DuplicateKey(e.key, _repeated_key_line(text, e.key)) from None
    # counting brackets runs in C; only text that could be deep is walked
    if text.count("[") + text.count("{") >= max_depth and _json_depth(value) > max_depth:
        raise ValueError(too_deep)
    return value


class _Refused(Exception):
    """A YAML document over a limit: the problem and the 1-based line where it shows, if known."""

    def __init__(self, problem: str, line: int | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


def _line(node: yaml.Node) -> int | None:
    mark = node.start_mark
    return None if mark is None else mark.line + 1


def _measure(root: yaml.Node, max_depth: int, max_values: int) -> None:
    """Refuse a composed document whose aliases expand past ``max_values`` values or ``max_depth``
    levels, or refer to themselves; linear in the composed nodes, whatever the expansion."""
    import yaml

    def children(n: yaml.Node) -> list[yaml.Node]:
        if isinstance(n, yaml.SequenceNode):
            return list(n.value)
        if isinstance(n, yaml.MappingNode):
            return [x for pair in n.value for x in pair]
        return []

    size: dict[int, int] = {}
    height: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        kids = children(node)
        if finished:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            scalar = isinstance(node, yaml.ScalarNode)
            height[key] = 0 if scalar else 1 + max((height[id(k)] for k in kids), default=0)
            if size[key] > max_values:
                raise _Refused(f"expands to more than {max_values:,} values (YAML aliases)", _line(node))
            if height[key] > max_depth:
                raise _Refused(f"nesting deeper than {max_depth} levels (YAML aliases)", _line(node))
            continue
        if key in size:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for k in kids:
            if id(k) in open_nodes:
                raise _Refused("an alias refers to a collection that contains it", _line(k))
            if id(k) not in size:
                stack.append((k, False))


def _refuse_repeated_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    """A key written twice in one mapping: YAML keeps the last silently, so the first (an agent, a
    name) would vanish. Keys brought in by a ``<<`` merge may be overridden: that is what it is for."""
    import yaml

    seen: dict[Any, int | None] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        try:
            first = seen.get(key)
            repeated = key in seen
        except TypeError:  # an unhashable key is refused by the constructor itself
            continue
        if repeated:
            also = f" (first on line {first})" if first is not None else ""
            raise _Refused(f"duplicate key `{key}`{also}", _line(key_node))
        seen[key] = _line(key_node)


@functools.cache
def _loader_class(max_depth: int, max_values: int) -> type[yaml.SafeLoader]:
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """A SafeLoader that refuses deep nesting while composing and large alias expansions before
        constructing (the constructor is where shared nodes start to cost)."""

        _depth = 0

        def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
            opens = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
            if opens:
                self._depth += 1
                if self._depth > max_depth:
                    event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
                    mark = event.start_mark
                    line = None if mark is None else mark.line + 1
                    raise _Refused(f"nesting deeper than {max_depth} levels", line)
            try:
                return super().compose_node(parent, index)
            finally:
                if opens:
                    self._depth -= 1

        def compose_document(self) -> yaml.Node | None:
            node = super().compose_document()
            if node is not None:
                _measure(node, max_depth, max_values)
            return node

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            _refuse_repeated_keys(self, node)
            return super().construct_mapping(node, deep)

    return BoundedLoader


def _load_yaml(text: str, max_depth: int, max_values: int) -> Any:
    loader = _loader_class(max_depth, max_values)(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_yaml(text: str, *, max_depth: int = MAX_DEPTH, max_values: int = MAX_YAML_VALUES) -> Any:
    """``yaml.safe_load`` with nesting and alias expansion bounded; a document over a limit raises
    ``ValueError`` (naming the line when known), a syntax error ``yaml.YAMLError``."""
    try:
        return _load_yaml(text, max_depth, max_values)
    except _Refused as e:
        raise ValueError(f"line {e.line}: {e.problem}" if e.line else e.problem) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def read_document(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DOCUMENT_MAX_BYTES,
    what: str = "file",
    missing: str = "no such file",
) -> Any:
    """Parse a YAML or JSON file (JSON by its ``.json`` suffix) under the guards of this module; every
    problem is a ``UserError`` of one line naming the file, and the line when known."""
    import yaml

    # a byte order mark (what Windows editors save) is dropped, as YAML and read_text_file do
    raw = read_regular(path, max_bytes=max_bytes, what=what, missing=missing).removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text") from None
    if Path(path).suffix == ".json":
        try:
            return parse_json(text, unique_keys=True)
        except json.JSONDecodeError as e:
            hint = ""
            if text[e.pos : e.pos + 2] in ("//", "/*") or text[e.pos : e.pos + 1] == "#":
                hint = " (JSON has no comments: remove it, or save the file as .yaml and write `# ...`)"
            raise UserError(f"{path}:{e.lineno}: invalid JSON: {e.msg}{hint}") from None
        except DuplicateKey as e:
            where = f":{e.line}" if e.line else ""
            raise UserError(f"{path}{where}: refused: duplicate key `{e.key}`") from None
        except ValueError as e:
            raise UserError(f"{path}: refused: {e}") from None
    try:
        return _load_yaml(text, MAX_DEPTH, MAX_YAML_VALUES)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        # PyYAML's words for an editor's tab indent do not say what to type instead
        hint = " (a tab: YAML indents and separates with spaces)" if "'\\t'" in problem else ""
        raise UserError(f"{path}{where}: invalid YAML: {_one_line(problem)}{hint}") from None
    except _Refused as e:
        where = f":{e.line}" if e.line else ""
        raise UserError(f"{path}{where}: refused: {e.problem}") from None


def not_a_mapping(data: object) -> str:
    """The problem line for a document whose top level is not a mapping, in the file's own terms (an
    empty file reads as nothing, not as Python's ``NoneType``)."""
    if data is None:
        return "the file is empty (or holds only comments): expected a mapping at the top level"
    shape = {list: "a list", str: "a single string", bool: "a boolean", int: "a number", float: "a number"}
    return f"expected a mapping at the top level, got {shape.get(type(data), type(data).__name__)}"
