"""Regular expressions matched with a time limit, for patterns a dataset supplies.

Python's ``re`` backtracks: a pattern such as ``(a|a)+$`` or ``(\\w+\\s?)+$`` against a few dozen
characters that almost match takes minutes to centuries, and a match cannot be interrupted in its
thread. So the match runs in a child Python process (``re`` itself, so the pattern means what
Python users expect), one per evaluator, started on first use and reused; a match that does not
finish within ``LIMIT_S`` has its child killed (the next match starts another) and raises
``MatchTimeout``. The parent compiles every pattern first, so the child only ever sees valid ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import weakref

__all__ = ["LIMIT_S", "BoundedMatcher", "MatchFailed", "MatchTimeout"]

#: seconds one pattern may take on one answer: a real match takes microseconds, even beside busy
#: CPUs; catastrophic backtracking takes minutes to centuries, so the bound is what ends it
LIMIT_S = 2.0
#: seconds the child may take to start (a loaded machine imports slowly): not the match's bound
_START_S = 60.0

# one JSON line per match in ([pattern, flags, text, full]), "1" or "0" out; compiled patterns kept
_CHILD = """
import json, re, sys
sys.stdout.write("ready\\n"); sys.stdout.flush()
seen = {}
for line in sys.stdin:
    pattern, flags, text, full = json.loads(line)
    if (pattern, flags) not in seen:
        if len(seen) > 1000:
            seen.clear()
        seen[pattern, flags] = re.compile(pattern, flags)
    p = seen[pattern, flags]
    found = p.fullmatch(text) if full else p.search(text)
    sys.stdout.write("0\\n" if found is None else "1\\n"); sys.stdout.flush()
"""


class MatchFailed(Exception):
    """A match that gave no answer: its child process did not start, or died."""


class MatchTimeout(MatchFailed):
    """A match that did not finish within its limit (its child process was killed)."""


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


class BoundedMatcher:
    """``re`` matches in a child process, each bounded by ``LIMIT_S``; one match at a time (callers
    in threads wait their turn), so the bound is the match's own time."""

    def __init__(self, limit_s: float = LIMIT_S) -> None:
        self.limit_s = limit_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[str]], BoundedMatcher] | None = None

    def matches(self, pattern: str, flags: int, text: str, full: bool) -> bool:
        """Whether ``pattern`` (compiled with ``flags``) matches ``text`` (the whole of it when
        ``full``); blocks up to ``limit_s``, then raises ``MatchTimeout`` (``MatchFailed`` when the
        child died or did not start)."""
        with self._lock:
            proc = self._running()
            request = json.dumps([pattern, flags, text, full]) + "\n"
            killed = threading.Event()

            def kill() -> None:
                killed.set()
                proc.kill()

            timer = threading.Timer(self.limit_s, kill)
            timer.start()
            try:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(request)
                proc.stdin.flush()
                said = proc.stdout.readline().strip()
            except OSError:  # the child killed while it was sent the request
                said = ""
            finally:
                timer.cancel()
            if killed.is_set() or said not in ("0", "1"):
                self._discard()
            if said in ("0", "1"):  # an answer that came as the limit struck still stands
                return said == "1"
            if killed.is_set():
                raise MatchTimeout(f"did not finish within {self.limit_s:g} s")
            raise MatchFailed("ended its process before it finished (out of memory?)")

    def _running(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._discard()
        # -I: no PYTHON* variables, user site or working directory on the child's path
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="surrogatepass",
        )
        self._proc = proc
        self._finalizer = weakref.finalize(self, _stop, proc)
        slow = threading.Event()

        def kill() -> None:
            slow.set()
            proc.kill()

        timer = threading.Timer(_START_S, kill)
        timer.start()
        try:
            assert proc.stdout is not None
            ready = proc.stdout.readline().strip() == "ready"
        finally:
            timer.cancel()
        if not ready:
            self._discard()
            why = f"was not ready within {_START_S:g} s" if slow.is_set() else "exited"
            raise MatchFailed(f"could not start: `{sys.executable} -I` {why}")
        return proc

    def _discard(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # kills and reaps the child once, here or at collection
        self._proc = self._finalizer = None
