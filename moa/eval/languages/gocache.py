"""A warm Go build cache shared by every Go compile of this process.

Each compile runs in a fresh sandbox, so Go would rebuild the standard packages a test binary
needs every time (about 1.5 s of a 2 s compile). Instead, once per process, moa builds a fixed
program of its own (no answer's code) on the host into a private cache directory; each sandboxed
compile binds that directory read-only and copies it into its own writable ``$HOME`` first.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
import threading

__all__ = ["GO_ENV", "warm_go_cache"]

#: the environment of every Go compile: cache entries only match when it is the same
GO_ENV = {"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "", "GO111MODULE": "auto"}

# the standard packages answers and MultiPL-E tests use most
_WARM_TEST = """package warm_test

import (
\t"bytes"
\t"fmt"
\t"math"
\t"os"
\t"sort"
\t"strconv"
\t"strings"
\t"testing"
\t"unicode"
)

func TestWarm(t *testing.T) {
\t_ = fmt.Sprint(math.Pi, strings.ToUpper("a"), strconv.Itoa(1), unicode.IsDigit('1'), bytes.ToUpper(nil), os.Args)
\tsort.Ints([]int{2, 1})
}
"""
_WARM_MAIN = _WARM_TEST.replace("package warm_test", "package main").replace(
    "func TestWarm(t *testing.T) {", "var _ = testing.Short\n\nfunc main() {"
)


_lock = threading.Lock()


def warm_go_cache(go: str) -> str | None:
    """A directory holding a Go build cache warmed with the common standard packages, or ``None``
    when it cannot be built (compiles are then cold, and slower). Built once per process."""
    with _lock:
        return _warm(go)


@functools.cache
def _warm(go: str) -> str | None:
    # not below /tmp: inside the sandbox /tmp is the run's own tmpfs, where no bind can land
    parent = "/var/tmp" if os.path.isdir("/var/tmp") and os.access("/var/tmp", os.W_OK) else None
    root = tempfile.mkdtemp(prefix="moa-gocache-", dir=parent)
    atexit.register(shutil.rmtree, root, True)
    cache = os.path.join(root, "go-build")
    work = os.path.join(root, "work")
    os.makedirs(work)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work, "GOCACHE": cache, **GO_ENV}
    for name, source, argv in (
        ("warm_test.go", _WARM_TEST, [go, "test", "-c", "-o", "warm.test", "warm_test.go"]),
        ("main.go", _WARM_MAIN, [go, "build", "-o", "warm", "main.go"]),
    ):
        with open(os.path.join(work, name), "w", encoding="utf-8") as f:
            f.write(source)
        try:
            subprocess.run(argv, cwd=work, env=env, capture_output=True, timeout=120, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
    shutil.rmtree(work, ignore_errors=True)
    # the sandbox runs as another uid: the cache must be readable by others
    os.chmod(root, 0o755)
    for folder, _, files in os.walk(cache):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return cache
