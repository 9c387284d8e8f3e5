"""Answers in C, C++, Go, Java, JavaScript, Rust and TypeScript: toolchains, the program an item
runs (MultiPL-E and generic layouts), compiling and running it in the sandbox.

Names are imported on first use: reading a dataset needs ``canonical_language`` without loading
the compile machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moa._lazy import lazy_exports

if TYPE_CHECKING:
    from moa.eval.languages.build import (
        CompileLimitReached,
        RunLimits,
        Verdict,
        clear_compile_cache,
        compile_and_run,
    )
    from moa.eval.languages.evaluate import language_program, score_in_language
    from moa.eval.languages.extract import extract_language_code
    from moa.eval.languages.names import COMPILED, LANGUAGES, canonical_language
    from moa.eval.languages.program import Program
    from moa.eval.languages.toolchains import INSTALL, Toolchain, find_toolchain

_LAZY = {
    "COMPILED": "moa.eval.languages.names",
    "CompileLimitReached": "moa.eval.languages.build",
    "INSTALL": "moa.eval.languages.toolchains",
    "LANGUAGES": "moa.eval.languages.names",
    "Program": "moa.eval.languages.program",
    "RunLimits": "moa.eval.languages.build",
    "Toolchain": "moa.eval.languages.toolchains",
    "Verdict": "moa.eval.languages.build",
    "canonical_language": "moa.eval.languages.names",
    "clear_compile_cache": "moa.eval.languages.build",
    "compile_and_run": "moa.eval.languages.build",
    "extract_language_code": "moa.eval.languages.extract",
    "find_toolchain": "moa.eval.languages.toolchains",
    "language_program": "moa.eval.languages.evaluate",
    "score_in_language": "moa.eval.languages.evaluate",
}

__all__ = [
    "COMPILED",
    "INSTALL",
    "LANGUAGES",
    "CompileLimitReached",
    "Program",
    "RunLimits",
    "Toolchain",
    "Verdict",
    "canonical_language",
    "clear_compile_cache",
    "compile_and_run",
    "extract_language_code",
    "find_toolchain",
    "language_program",
    "score_in_language",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
