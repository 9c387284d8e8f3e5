"""Finding each language's compiler and runtime on this machine, once per process.

A toolchain is the absolute paths of its programs plus the host folders the sandbox must bind
read-only for them to work (a rustup sysroot under ``/root``, the JDK's configuration under
``/etc``). A language whose programs are missing is not an error here: ``find_toolchain`` returns
the line an item scores 0 with, naming the program and how to install it.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["INSTALL", "Toolchain", "find_toolchain", "javatuples_jar", "node_permission_flags"]

#: how to install what each language needs (Debian packages; TypeScript from npm)
INSTALL: Mapping[str, str] = {
    "c": "apt-get install gcc",
    "cpp": "apt-get install g++",
    "go": "apt-get install golang-go",
    "java": "apt-get install default-jdk-headless",
    "javascript": "apt-get install nodejs",
    "rust": "apt-get install rustc, or rustup",
    "typescript": "npm install -g typescript",
}

#: the programs each language needs, in the order they are looked for
_PROGRAMS: Mapping[str, tuple[str, ...]] = {
    "c": ("gcc",),
    "cpp": ("g++",),
    "go": ("go",),
    "java": ("javac", "java"),
    "javascript": ("node",),
    "rust": ("rustc",),
    "typescript": ("node", "tsc"),
}

# where programs installed per user live when PATH lacks them (rustup, npm -g with a prefix)
_EXTRA_DIRS = ("~/.cargo/bin", "/usr/local/go/bin", "~/.npm-global/bin", "/usr/local/bin")

# folders the sandbox shows anyway (the system's own): nothing below them needs a bind
_SYSTEM = ("/usr/", "/bin/", "/lib/", "/lib64/", "/sbin/")


@dataclass(frozen=True, slots=True)
class Toolchain:
    """A language's programs (name -> absolute path) and the host folders to bind read-only."""

    language: str
    programs: Mapping[str, str]
    binds: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables the compile and run steps export (GOROOT for go)."""

    def __getitem__(self, program: str) -> str:
        return self.programs[program]


def _which(program: str) -> str | None:
    found = shutil.which(program)
    if found is not None:
        return found
    extra = os.pathsep.join(os.path.expanduser(d) for d in _EXTRA_DIRS)
    return shutil.which(program, path=extra)


def _probe(argv: list[str]) -> str | None:
    """What ``argv`` prints (stdout), ``None`` when it fails: used to ask rustup and go where
    their real toolchains are."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _outside_system(path: str) -> bool:
    return not any(path.startswith(p) for p in _SYSTEM)


def _binds_for(paths: list[str]) -> tuple[str, ...]:
    """The folders outside the system's that ``paths`` (programs, resolved) live in."""
    out: list[str] = []
    for p in paths:
        real = os.path.realpath(p)
        if _outside_system(real + "/"):
            out.append(str(Path(real).parent))
    return tuple(dict.fromkeys(out))


def _rust(rustc: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """rustup's ``rustc`` is a proxy that needs RUSTUP_HOME; the sysroot's own binary does not."""
    sysroot = _probe([rustc, "--print", "sysroot"])
    if sysroot and os.access(os.path.join(sysroot, "bin", "rustc"), os.X_OK):
        real = os.path.join(sysroot, "bin", "rustc")
        return {"rustc": real}, ((sysroot,) if _outside_system(sysroot + "/") else ())
    return {"rustc": rustc}, _binds_for([rustc])


def _java(javac: str, java: str) -> tuple[str, ...]:
    """The JDK (when outside /usr) and its configuration, which Debian keeps under /etc."""
    home = Path(os.path.realpath(javac)).parent.parent
    binds = [str(home)] if _outside_system(str(home) + "/") else []
    conf = home / "conf"
    if conf.is_dir():
        for entry in conf.iterdir():
            if entry.is_symlink():
                binds.append(str(Path(os.path.realpath(entry)).parent))
    binds.extend(_binds_for([java]))
    return tuple(dict.fromkeys(binds))


def _typescript(tsc: str) -> tuple[str, ...]:
    """The package folder of ``tsc`` (its bin script imports the compiler from there)."""
    package = Path(os.path.realpath(tsc)).parent.parent
    return (str(package),) if _outside_system(str(package) + "/") else ()


def javatuples_jar() -> str | None:
    """The javatuples jar MultiPL-E's Java prompts import (Debian's libjavatuples-java), or the
    one named by ``MOA_JAVATUPLES_JAR``."""
    named = os.environ.get("MOA_JAVATUPLES_JAR")
    if named and os.path.isfile(named):
        return named
    found = sorted(glob.glob("/usr/share/java/javatuples*.jar"))
    return found[0] if found else None


@functools.cache
def find_toolchain(language: str) -> Toolchain | str:
    """The toolchain of ``language``, or the line saying which program is missing and how to
    install it (``"toolchain missing: rustc not found (install: ...)"``)."""
    programs: dict[str, str] = {}
    for program in _PROGRAMS[language]:
        path = _which(program)
        if path is None:
            return f"toolchain missing: {program} not found (install: {INSTALL[language]})"
        programs[program] = path
    binds: tuple[str, ...] = ()
    env: dict[str, str] = {}
    if language == "rust":
        programs, binds = _rust(programs["rustc"])
    elif language == "java":
        binds = _java(programs["javac"], programs["java"])
    elif language == "go":
        goroot = _probe([programs["go"], "env", "GOROOT"]) or str(
            Path(os.path.realpath(programs["go"])).parent.parent
        )
        env["GOROOT"] = goroot
        binds = (goroot,) if _outside_system(goroot + "/") else ()
    elif language == "typescript":
        binds = _typescript(programs["tsc"]) + _binds_for([programs["node"]])
    else:
        binds = _binds_for(list(programs.values()))
    return Toolchain(language, programs, binds, env)


# newest spelling first: Node 22.13 renamed the flag, and 20.11 added the one that silences the
# "Permission is an experimental feature" warning a program's stderr would otherwise start with
_PERMISSION_FLAGS = (
    ("--permission", "--disable-warning=ExperimentalWarning"),
    ("--experimental-permission", "--disable-warning=ExperimentalWarning"),
    ("--experimental-permission",),
)


@functools.cache
def node_permission_flags(node: str) -> tuple[str, ...]:
    """The flags that turn on ``node``'s permission model (no file access beyond the ``--allow-fs-read``
    paths given next to them, no child process, worker, inspector or addon), or ``()`` for a Node
    older than 20, which has none: probed once per binary."""
    for flags in _PERMISSION_FLAGS:
        try:
            done = subprocess.run(
                [node, *flags, "-e", "process.exit(process.permission ? 0 : 3)"],
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return ()
        if done.returncode == 0 and not done.stderr.strip():
            return flags
    return ()
