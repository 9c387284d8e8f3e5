"""Hostile programs against the sandbox: each ends as a failed item with a clear reason, and nothing
reaches the host (files, processes, signals, secrets, sockets).

Python attacks go through ``run_python_async`` (harness, audit hook and kernel); the kernel's own
guarantees are shown with a shell or a bare interpreter through ``run_isolated``, where no audit hook
exists. The bwrap tests skip where bubblewrap cannot build its sandbox (CI installs it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from moa.eval import _bwrap
from moa.eval.datasets import Item
from moa.eval.execution import score_execution_async
from moa.eval.isolation import IsolationUnavailable, Limits, ProcessOutcome, isolation_available, run_isolated
from moa.eval.sandbox import SandboxResult, _interpreter, run_python_async

_BWRAP, _WHY = isolation_available()
bwrap_only = pytest.mark.skipif(not _BWRAP, reason=f"bubblewrap unavailable here: {_WHY}")
pytestmark = bwrap_only

# generous: the suite must hold on a loaded machine; nothing here asserts on time
TIMEOUT = 30.0


async def run(code: str, **kwargs: object) -> SandboxResult:
    options: dict[str, object] = {"timeout_s": TIMEOUT, "cpu_s": 20, "isolation": "bwrap"}
    options.update(kwargs)
    return await run_python_async(code, **options)  # type: ignore[arg-type]


async def shell(script: str, **limits: Any) -> ProcessOutcome:
    """A shell script in the bwrap sandbox: the kernel's guarantees, no audit hook involved."""
    outcome, _ = await run_isolated(
        ["/bin/sh", "-c", script],
        files={},
        limits=replace(Limits(timeout_s=TIMEOUT), **limits),
        isolation="bwrap",
    )
    return outcome


async def bare_python(code: str, **limits: Any) -> ProcessOutcome:
    """The interpreter without the harness: what a native escape would reach."""
    python, binds = _interpreter()
    outcome, _ = await run_isolated(
        [python, "-I", "-S", "-c", code],
        files={},
        limits=replace(Limits(timeout_s=TIMEOUT), **limits),
        isolation="bwrap",
        readonly_binds=binds,
    )
    return outcome


def survivors(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def spawn_source(argv: list[str], *, setsid: bool = False) -> str:
    """Python source calling ``_posixsubprocess.fork_exec`` directly (no audit event of its own)."""
    return (
        "import _posixsubprocess, os\n"
        "r, w = os.pipe()\n"
        f"pid = _posixsubprocess.fork_exec({argv!r}, [os.fsencode({argv[0]!r})], True, (w,), None, None,"
        f" -1, -1, -1, -1, -1, -1, r, w, True, {setsid}, -1, None, None, None, -1, None, False)\n"
    )


# --- processes ---------------------------------------------------------------------------------


async def test_fork_bomb_fails_at_its_first_fork() -> None:
    """A Python fork bomb is refused at its first fork."""
    result = await run("import os\nwhile True:\n    os.fork()")
    assert not result.passed and result.reason == "blocked: sandbox: os.fork is refused"
    assert result.isolation == "bwrap"


async def test_shell_fork_bomb_meets_the_process_limit_and_leaves_nothing() -> None:
    """Without the hook, a fork bomb hits RLIMIT_NPROC (``max_procs``) at once, and no process of it
    survives on the host once the run is over."""
    marker = f"bomb{uuid.uuid4().hex}"
    outcome = await shell(f"b() {{ b | b & }}; b; sleep 1; : {marker}", timeout_s=5, max_procs=8)
    assert "Cannot fork" in outcome.stderr
    assert survivors(marker) == []


@pytest.mark.parametrize(
    "code",
    [
        spawn_source(["/bin/sh", "-c", "echo pwned"]),
        "import sys\ndel sys.modules['_posixsubprocess']\nimport _posixsubprocess",
        "import _imp, importlib.machinery as m, os, sys\n"
        "d = [p for p in sys.path if p.endswith('lib-dynload')][0]\n"
        "f = [os.path.join(d, n) for n in os.listdir(d) if n.startswith('_posixsubprocess')][0]\n"
        "_imp.create_dynamic(m.ModuleSpec('_posixsubprocess', m.ExtensionFileLoader('_posixsubprocess', f), origin=f))",
        "import ctypes",
        "import _testcapi",
    ],
    ids=["fork_exec-shell", "reimport", "create_dynamic", "ctypes", "_testcapi"],
)
async def test_native_process_and_memory_hatches_are_refused(code: str) -> None:
    """_posixsubprocess (the stub, a re-import, a fresh load), ctypes and the test modules are refused."""
    result = await run(code)
    assert not result.passed and result.reason.startswith("blocked: sandbox: ")
    assert "pwned" not in result.stdout


async def test_posix_spawn_is_refused() -> None:
    """os.posix_spawn is refused."""
    result = await run("import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'echo pwned'], {})")
    assert not result.passed and result.reason == "blocked: sandbox: os.posix_spawn is refused"


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
async def test_multiprocessing_is_refused(method: str) -> None:
    """multiprocessing cannot start a worker with any start method."""
    code = (
        "import multiprocessing as mp\n"
        f"p = mp.get_context({method!r}).Process(target=print, args=('pwned',))\n"
        "p.start()\np.join()\n"
    )
    result = await run(code)
    assert not result.passed and result.reason.startswith("blocked: sandbox: ")
    assert "pwned" not in result.stdout


async def test_setsid_child_does_not_outlive_the_run() -> None:
    """A child in its own session, left running when the program exits, dies with the sandbox."""
    marker = f"setsid{uuid.uuid4().hex}"
    outcome = await shell(f"setsid sh -c 'sleep 300; : {marker}' & sleep 1; exit 0")
    assert outcome.returncode == 0
    assert survivors(marker) == []


async def test_setsid_child_does_not_outlive_a_timeout() -> None:
    """The same child when the program itself is killed at the timeout."""
    marker = f"setsid{uuid.uuid4().hex}"
    outcome = await shell(f"setsid sh -c 'sleep 300; : {marker}' & sleep 300", timeout_s=2)
    assert outcome.timed_out and outcome.killed_by == "timeout"
    assert survivors(marker) == []


# --- signals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        "import os, signal\nos.kill(-1, signal.SIGKILL)",
        "import os, signal\nos.killpg(0, signal.SIGKILL)",
        "import signal, threading\nsignal.pthread_kill(threading.main_thread().ident, signal.SIGKILL)",
        "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGKILL)",
        "import os, sys\ndel sys.modules['posix']\nimport posix\nposix.pidfd_open(os.getppid())",
    ],
    ids=["parent", "everyone", "group", "pthread", "pidfd", "pidfd-reimport"],
)
async def test_signals_are_refused(code: str) -> None:
    """Signals to the parent, to every process and to the group are refused."""
    result = await run(code)
    assert not result.passed and result.reason.startswith("blocked: sandbox: ")


async def test_kernel_keeps_signals_inside_the_sandbox() -> None:
    """Without the hook, kill -9 of the parent, of a host process and of every process reaches only
    the sandbox: a host canary and this test's process live on."""
    canary = subprocess.Popen(["sleep", "300"])
    try:
        outcome = await shell(f"kill -9 $PPID {canary.pid} {os.getpid()}; kill -9 -1; echo still here")
        assert canary.poll() is None
        assert "still here" in outcome.stdout and "Operation not permitted" in outcome.stderr
    finally:
        canary.kill()
        canary.wait()


# --- files -------------------------------------------------------------------------------------


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """An empty host directory outside /tmp: inside the bwrap sandbox /tmp is the run's own tmpfs,
    where writing is allowed (and a host path below /tmp does not exist)."""
    parent = "/var/tmp" if os.access("/var/tmp", os.W_OK) else str(Path.home())
    folder = Path(tempfile.mkdtemp(prefix="moa-host-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("open({target!r}, 'w').write('x')", "blocked: sandbox: writing"),
        (
            "import sqlite3\nsqlite3.connect({target!r}).execute('create table t(x)')",
            "blocked: sandbox: sqlite3",
        ),
        (
            "import sqlite3\nsqlite3.connect('file:' + {target!r} + '?mode=rwc', uri=True)",
            "blocked: sandbox: sqlite3",
        ),
        ("import os\nos.mkfifo({target!r})", "error: FileNotFoundError"),
        ("import os\nopen('x', 'w').close()\nos.rename('x', {target!r})", "blocked: sandbox: os.rename"),
        ("import os\nos.symlink('/etc', {target!r})", "blocked: sandbox: os.symlink"),
        (
            "import os\nos.symlink({folder!r}, 'link')\nopen('link/x', 'w').write('x')",
            "blocked: sandbox: os.symlink",
        ),
        (
            "import os\nfd = os.open('/', os.O_RDONLY)\nos.open({target!r}[1:], os.O_CREAT | os.O_WRONLY, dir_fd=fd)",
            "blocked: sandbox: opening directory",
        ),
        (
            "import os, os.path\nos.path.realpath = lambda p: '/sandbox/x'\nos.lstat = os.stat = None\n"
            "open({target!r}, 'w').write('x')",
            "blocked: sandbox: writing",
        ),
    ],
    ids=[
        "open",
        "sqlite3",
        "sqlite3-uri",
        "mkfifo",
        "rename",
        "symlink",
        "symlinked-dir",
        "dir_fd",
        "patched-os",
    ],
)
async def test_writes_outside_leave_nothing_on_the_host(code: str, reason: str, host_dir: Path) -> None:
    """Creating a file in a host directory fails by every route, and the directory stays empty."""
    target = str(host_dir / "escaped")
    result = await run(code.format(target=target, folder=str(host_dir)))
    assert not result.passed and result.reason.startswith(reason), result.reason
    assert list(host_dir.iterdir()) == []


TMP_AND_DEVNULL = (
    "import contextlib, os\n\ndef add(a, b):\n"
    "    with open('/tmp/sum.txt', 'w') as f:\n        f.write(str(a + b))\n"
    "    with open(os.devnull, 'w') as quiet, contextlib.redirect_stdout(quiet):\n        print('noise')\n"
    "    total = int(open('/tmp/sum.txt').read())\n    os.remove('/tmp/sum.txt')\n    return total\n"
)


async def test_a_correct_answer_may_write_tmp_and_dev_null() -> None:
    """Under bwrap ``/tmp`` lies in the run's own tmpfs, and ``/dev/null`` swallows what it gets: a
    correct answer writing a file in ``/tmp`` or silencing its prints into ``os.devnull`` failed
    (``writing '/tmp/sum.txt' outside the sandbox directory is refused``). In the fallback ``/tmp`` is
    the host's, and writing there is still refused; so are paths leaving ``/tmp`` by ``..``."""
    tests = ["assert add(1, 2) == 3"]
    right = await run(TMP_AND_DEVNULL, tests=tests)
    assert (right.passed, right.reason) == (True, "passed")
    fallback = await run(TMP_AND_DEVNULL, tests=tests, isolation="fallback")
    assert (
        fallback.reason == "blocked: sandbox: writing '/tmp/sum.txt' outside the sandbox directory is refused"
    )
    escape = await run(WRONG + "open('/tmp/../etc/x', 'w')\n", tests=tests)
    assert (
        escape.reason == "blocked: sandbox: writing '/tmp/../etc/x' outside the sandbox directory is refused"
    )


async def test_kernel_keeps_writes_inside_the_sandbox(tmp_path: Path) -> None:
    """Without the hook, the host directory is not even there and system directories are read-only."""
    marker = uuid.uuid4().hex
    outcome = await shell(
        f"echo x > {tmp_path}/a; mkfifo {tmp_path}/f; ln -s / {tmp_path}/l; touch /usr/{marker} /etc/{marker}; "
        f"ls {tmp_path}; echo done"
    )
    assert outcome.stdout.strip() == "done"
    assert "No such file or directory" in outcome.stderr and "Read-only file system" in outcome.stderr
    assert list(tmp_path.iterdir()) == [] and not Path(f"/usr/{marker}").exists()


async def test_disk_fill_stops_at_the_quota() -> None:
    """Filling the disk stops at ``disk_mb`` with ENOSPC, the item failing on it."""
    code = (
        "with open('fill', 'wb') as f:\n    while True:\n        f.write(b'x' * 1048576)\n        f.flush()"
    )
    result = await run(code, disk_mb=8, file_size_mb=64)
    assert not result.passed and "No space left on device" in result.reason


async def test_one_huge_file_stops_at_the_file_size_limit() -> None:
    """A single file stops at ``file_size_mb``."""
    result = await run("open('big', 'wb').write(b'x' * (20 * 1024 * 1024))", file_size_mb=4)
    assert not result.passed and "File too large" in result.reason


# --- secrets -----------------------------------------------------------------------------------


async def test_shadow_and_parent_environment_stay_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """/etc/shadow and the parent's environment cannot be read, by the hook or by the kernel."""
    secret = f"moa-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("MOA_ATTACK_SECRET", secret)
    result = await run("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())")
    assert not result.passed and result.reason.startswith("blocked: sandbox: opening")
    result = await run("print(open('/etc/shadow').read())")
    assert not result.passed and result.reason.startswith("error: FileNotFoundError")
    outcome = await shell(
        "env; cat /etc/shadow /etc/passwd; for p in /proc/[0-9]*; do cat $p/environ $p/cmdline; done; "
        "ls /root /home /work"
    )
    text = outcome.stdout + outcome.stderr
    assert secret not in text and "root:" not in text
    assert "MOA_ATTACK_SECRET" not in text


# --- network -----------------------------------------------------------------------------------


async def test_tcp_to_a_local_listener_never_arrives() -> None:
    """A TCP connection to a 127.0.0.1 listener fails from Python and from the bare interpreter."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        connect = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5).sendall(b'hi')"
        result = await run(connect)
        outcome = await bare_python(connect)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert not result.passed and result.reason.startswith("blocked: sandbox: network access")
    assert outcome.returncode == 1 and "ConnectionRefusedError" in outcome.stderr
    assert result.network_isolation == "namespace"


async def test_unix_sockets_do_not_reach_the_host(tmp_path: Path) -> None:
    """A unix socket on the host (a path, an abstract name) cannot be reached."""
    path = str(tmp_path / "sock")
    abstract = f"\0moa-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX) as by_path, socket.socket(socket.AF_UNIX) as by_name:
        by_path.bind(path)
        by_name.bind(abstract)
        for s in (by_path, by_name):
            s.listen()
            s.settimeout(0.5)
        code = (
            f"import socket\nfor a in ({path!r}, {abstract!r}):\n"
            "    try:\n        socket.socket(socket.AF_UNIX).connect(a); print('connected')\n"
            "    except OSError as e:\n        print(type(e).__name__)\n"
        )
        result = await run(f"import socket\nsocket.socket(socket.AF_UNIX).connect({path!r})")
        outcome = await bare_python(code)
        for s in (by_path, by_name):
            with pytest.raises(TimeoutError):
                s.accept()
    assert not result.passed and result.reason.startswith("blocked: sandbox: network access")
    assert "connected" not in outcome.stdout and outcome.stdout.count("Error") == 2


ASYNCIO_ADD = (
    "import asyncio\n\nasync def _add(a, b):\n    await asyncio.sleep(0)\n    return a + b\n\n"
    "def add(a, b):\n    return asyncio.run(_add(a, b))\n"
)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (ASYNCIO_ADD, "passed"),
        (
            "import socket\nsocket.socket(socket.AF_UNIX).bind('\\0moa')\n",
            "blocked: sandbox: network access (socket.bind) is refused",
        ),
        (
            "import socket\nsocket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'x', '\\0moa')\n",
            "blocked: sandbox: network access (socket.sendto) is refused",
        ),
        ("import socket\nsocket.socket()\n", "blocked: sandbox: network access (socket.__new__) is refused"),
    ],
    ids=["asyncio.run", "unix-bind", "unix-sendto", "inet"],
)
@pytest.mark.parametrize("isolation", ["bwrap", "fallback"])
async def test_asyncio_runs_while_sockets_still_reach_nothing(code: str, reason: str, isolation: str) -> None:
    """A correct answer using ``asyncio.run`` failed (``network access (socket.__new__) is
    refused``: the event loop's self-pipe is a socketpair); an unconnected unix socket is now
    allowed, and binding, sending to an address or any other socket is still refused."""
    result = await run(
        ASYNCIO_ADD + code, tests=["assert add(1, 2) == 3", "assert add(2, 2) == 4"], isolation=isolation
    )
    assert (result.passed, result.reason) == (reason == "passed", reason)


# --- resources ---------------------------------------------------------------------------------


async def test_50_gb_allocation_hits_the_memory_limit() -> None:
    """50 GB fails with the memory limit, in Python and in the bare interpreter."""
    result = await run("x = bytearray(50 * 1024**3)")
    assert not result.passed and result.reason == "memory limit (512 MB)"
    outcome = await bare_python("x = bytearray(50 * 1024**3)")
    assert outcome.returncode == 1 and "MemoryError" in outcome.stderr


async def test_stdout_flood_is_cut_and_fails() -> None:
    """Endless output is capped at ``output_limit`` and ends at the timeout."""
    result = await run("while True:\n    print('x' * 10000)", timeout_s=3, output_limit=1000)
    assert not result.passed and result.reason == "timeout after 3.0s; output truncated"
    assert len(result.stdout) == 1000


# --- the verdict -------------------------------------------------------------------------------

WRONG = "def add(a, b):\n    return a - b\n"


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("import sys\nsys.exit(0)", "exited before the end (SystemExit 0)"),
        ("import os\nos._exit(0)", "exited with code 0 before the end"),
        ("raise SystemExit", "exited before the end (SystemExit None)"),
        ("import signal\nsignal.raise_signal(signal.SIGKILL)", "killed by SIGKILL"),
        (
            "import glob, json, os\nprint('passed')\nprint(json.dumps({'kind': 'ok'}))\n"
            "for name in ['status.json', '.status.json', 'verdict']:\n"
            "    open(name, 'w').write(json.dumps({'kind': 'ok'}))\n"
            "os._exit(0)",
            "exited with code 0 before the end",
        ),
        (
            "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'F {\"kind\": \"ok\"}\\n')\n"
            "    except OSError:\n        pass",
            ("the program wrote to the sandbox's verdict channel", "exited with code 0 before the end"),
        ),
        (
            "import sys\nseen = []\nf = sys._getframe()\nwhile f is not None:\n"
            "    seen += [v for v in f.f_locals.values() if isinstance(v, (bytes, str)) and len(v) >= 32]\n"
            "    f = f.f_back\n"
            "import os\nfor v in seen:\n    os.write(int(sys.argv[1]), v if isinstance(v, bytes) else v.encode())\n"
            "os._exit(0)",
            "exited with code 0 before the end (0 of 1 tests completed)",
        ),
        ("import gc\ngc.get_objects()", "blocked: sandbox: gc.get_objects is refused"),
        ("import sys\nsys._current_frames()", "blocked: sandbox: sys._current_frames is refused"),
        ("import sys\nsys.settrace(lambda *a: None)", "blocked: sandbox: sys.settrace is refused"),
        ("open('/proc/self/mem', 'rb')", "blocked: sandbox: opening '/proc/self/mem' is refused"),
        ("import os\nos.listdir('/proc/self/fd')\nopen('/dev/fd/1', 'w')", "blocked: sandbox: opening"),
        ("(lambda: 0).__code__.replace(co_code=b'd\\x00S\\x00')", "blocked: sandbox: code.__new__ is refused"),
    ],
    ids=[
        "sys.exit", "os._exit", "SystemExit", "kill-self", "fake-markers-and-files", "write-every-fd",
        "walk-frames", "gc", "current_frames", "settrace", "proc-mem", "dev-fd", "crafted-code",
    ],
)  # fmt: skip
async def test_forged_verdicts_fail(attack: str, reason: str | tuple[str, ...]) -> None:
    """A wrong answer that tries to forge a pass (exit early, fake markers and status files, write
    the verdict pipe, dig for the tokens) fails with the reason."""
    result = await run(WRONG + attack, tests=["assert add(2, 3) == 5"])
    assert not result.passed and result.reason.startswith(reason), result.reason


# the hook checks a relative path against the working directory, the kernel against the dir_fd:
# with the working directory three levels below the descriptor's, this reaches /proc/self/mem and
# writes every step's token (found in the harness's heap) before the harness can
DIR_FD_FORGE = """
import os, re, sys
os.makedirs("a/b/c", exist_ok=True)
top = os.open(".", os.O_RDONLY)
{enter}
def private(path):
    return os.open("../../../" + path, os.O_RDONLY, dir_fd=top)
maps = os.read(private("proc/self/maps"), 1 << 20).decode()
mem = private("proc/self/mem")
for line in maps.splitlines():
    fields = line.split()
    lo, hi = (int(x, 16) for x in fields[0].split("-"))
    if "r" in fields[1] and hi - lo < (256 << 20) and not (len(fields) > 5 and fields[5].startswith("/")):
        try:
            found = re.search(rb"(?<![0-9a-f])(?:[0-9a-f]{{32}}\\n){{2}}", os.pread(mem, hi - lo, lo))
        except OSError:
            continue
        if found:
            os.write(int(sys.argv[1]), found.group())
            os._exit(0)
"""


@pytest.mark.parametrize(
    "enter", ['os.chdir("a/b/c")', 'os.fchdir(os.open("a/b/c", os.O_RDONLY))'], ids=["chdir", "fchdir"]
)
async def test_working_directory_below_a_dir_fd_cannot_reach_proc(enter: str) -> None:
    """Moving the working directory below an open directory descriptor would let ``dir_fd=`` open
    ``/proc/self/mem`` past the hook and forge the pass; changing directory is refused."""
    result = await run(WRONG + DIR_FD_FORGE.format(enter=enter), tests=["assert add(2, 3) == 5"])
    assert not result.passed
    assert result.reason == "blocked: sandbox: os.chdir is refused", result.reason


async def test_redirected_verdict_pipe_reveals_only_spent_tokens() -> None:
    """Swapping the verdict pipe for one of its own lets the answer read the token of a step already
    done, never the next: the wrong answer still fails."""
    attack = (
        "import os, sys\nreal = int(sys.argv[1])\nsaved = os.dup(real)\nr, w = os.pipe()\nos.dup2(w, real)\n"
        "def add(a, b):\n"
        "    os.set_blocking(r, False)\n"
        "    try:\n        os.write(saved, os.read(r, 4096) * 3)\n    except OSError:\n        pass\n"
        "    return a - b\n"
    )
    result = await run(attack, tests=["assert add(2, 3) == 5", "assert add(0, 0) == 0"])
    assert not result.passed, result.reason


async def test_honest_tests_pass_and_count() -> None:
    """The control: a right answer passes every test; a wrong one names the failing test."""
    right = await run(
        "def add(a, b):\n    return a + b\n", tests=["assert add(2, 3) == 5", "assert add(0, 0) == 0"]
    )
    wrong = await run(WRONG, tests=["assert add(0, 0) == 0", "assert add(2, 3) == 5"])
    assert right.passed and right.reason == "passed"
    assert not wrong.passed and wrong.reason == "tests failed: test 2 of 2: AssertionError"


HUMANEVAL = Item(
    id="HumanEval/attack",
    input="def add(a, b):\n    ",
    test="def check(candidate):\n    assert candidate(2, 3) == 5\n",
    entry_point="add",
    meta={"prompt": "def add(a, b):\n    "},
)


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        ("import os\nos._exit(0)", "exited with code 0 before the end"),
        ("import sys\nprint('passed')\nsys.exit(0)", "exited before the end (SystemExit 0)"),
        (
            "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'ok\\n')\n    except OSError:\n        pass",
            # which comes first depends on the order of the descriptors the answer writes
            ("the program wrote to the sandbox's verdict channel", "exited with code 0 before the end"),
        ),
    ],
    ids=["os._exit", "sys.exit", "write-every-fd"],
)
async def test_forged_verdict_scores_zero_in_an_experiment(tail: str, reason: str | tuple[str, ...]) -> None:
    """Through the execution evaluator a forging answer to a HumanEval item scores 0 with its reason."""
    answer = f"```python\n{WRONG}{tail}\n```"
    score = await score_execution_async(answer, HUMANEVAL, timeout_s=TIMEOUT)
    assert score.value == 0.0 and (score.detail or "").startswith(reason), score.detail


ASSERT_ITEM = Item(id="asserts", input="add", tests=["assert add(1, 2) == 3", "assert add(2, 2) == 4"])


@pytest.mark.parametrize(
    "tail",
    [
        "def exec(*args, **kwargs):\n    pass",
        "enumerate = lambda *args, **kwargs: iter(())",
        "print = lambda *args, **kwargs: None",
        "class AssertionError(Exception):\n    pass",
        "import builtins\nbuiltins.__dict__.update(exec=lambda *a, **k: None, AssertionError=KeyError)",
        "import sys, io\nsys.stdout = sys.stderr = io.StringIO()",
        "len = str = range = lambda *args, **kwargs: 0",
    ],
    ids=["exec", "enumerate", "print", "AssertionError", "builtins-dict", "sys.stdout", "len-str-range"],
)
async def test_assert_lines_cannot_be_switched_off(tail: str) -> None:
    """A wrong answer that rebinds the names a pasted harness would use still fails its assert lines."""
    answer = f"```python\n{WRONG}{tail}\n```"
    score = await score_execution_async(answer, ASSERT_ITEM, timeout_s=TIMEOUT)
    assert score.value == 0.0, score.detail
    assert score.detail == "tests failed: test 1 of 2 `assert add(1, 2) == 3`: AssertionError"


async def test_assert_lines_pass_a_right_answer_that_rebinds_names() -> None:
    """The control: a right answer that shadows builtins and prints still passes."""
    answer = "```python\ndef add(a, b):\n    return a + b\n\nlen = 3\nprint(add(1, 2))\n```"
    score = await score_execution_async(answer, ASSERT_ITEM, timeout_s=TIMEOUT)
    assert (score.value, score.detail) == (1.0, "passed")


async def test_humaneval_answer_defining_check_fails() -> None:
    """A wrong answer that defines its own passing `check` is judged by the item's `check`."""
    tail = "def check(candidate):\n    pass"
    score = await score_execution_async(f"```python\n{WRONG}{tail}\n```", HUMANEVAL, timeout_s=TIMEOUT)
    assert score.value == 0.0 and (score.detail or "").startswith("tests failed: AssertionError"), (
        score.detail
    )


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            "def add(a, b):\n    raise StopIteration\n",
            "error: test 1 of 2 `assert add(1, 2) == 3`: StopIteration",
        ),
        (
            "def add(a, b):\n    return next(iter(()))\n",
            "error: test 1 of 2 `assert add(1, 2) == 3`: StopIteration",
        ),
        (WRONG + "raise StopIteration\n", "error: StopIteration"),
        (
            WRONG
            + "import sys\nsys._getframe(1).f_globals.update(_exec=lambda *a: None, exec=lambda *a: None)\n",
            "tests failed: test 1 of 2 `assert add(1, 2) == 3`: AssertionError",
        ),
    ],
    ids=["raise-in-function", "next-of-empty", "raise-at-top-level", "replace-harness-exec"],
)
async def test_stop_iteration_is_a_failure_not_a_step_done(answer: str, reason: str) -> None:
    """A ``StopIteration`` escaping a step read to the harness's chain as the step's end, which
    then wrote its token: a wrong answer raising it passed every test."""
    score = await score_execution_async(f"```python\n{answer}```", ASSERT_ITEM, timeout_s=TIMEOUT)
    assert (score.value, score.detail) == (0.0, reason)
    humaneval = await score_execution_async(f"```python\n{answer}```", HUMANEVAL, timeout_s=TIMEOUT)
    assert humaneval.value == 0.0, humaneval.detail


async def test_doctest_testmod_runs_and_tracing_stays_refused() -> None:
    """``doctest.testmod()`` ends with ``sys.settrace(None)``: a correct answer calling it failed as
    ``sys.settrace is refused``. Removing tracing is allowed now; installing a trace function, by
    ``sys.settrace`` or the function it wraps, is still refused."""
    doctested = (
        'def add(a, b):\n    """\n    >>> add(1, 2)\n    3\n    """\n    return a + b\n\n'
        "import doctest\ndoctest.testmod()\n"
    )
    right = await run(doctested, tests=["assert add(1, 2) == 3"])
    assert (right.passed, right.reason) == (True, "passed")
    for attack in (
        "import sys\nsys.settrace(lambda *a: None)\n",
        "import sys\nsys.settrace.__closure__[0].cell_contents(lambda *a: None)\n",
    ):
        wrong = await run(WRONG + attack, tests=["assert add(1, 2) == 3"])
        assert (wrong.passed, wrong.reason) == (False, "blocked: sandbox: sys.settrace is refused")


async def test_an_exception_with_a_huge_name_is_reported_at_once() -> None:
    """The failure line carried the exception's name uncut: one of 200,000 characters overflowed the
    verdict pipe's buffer, the harness blocked writing it, and the run ended at the timeout as
    ``the program wrote to the sandbox's verdict channel``."""
    code = "E = type('E' * 200000, (Exception,), {})\n\ndef add(a, b):\n    raise E()\n"
    result = await run(code, tests=["assert add(1, 2) == 3"])
    assert not result.passed and result.reason.startswith("error: test 1 of 1: EEEE"), result.reason[:200]
    assert len(result.reason) < 300


# --- isolation modes ---------------------------------------------------------------------------


async def test_fallback_is_named_never_silent() -> None:
    """Forcing the fallback says so in the result, and the hook still stops the naive attacks."""
    result = await run_python_async("import os\nos.fork()", isolation="fallback", timeout_s=TIMEOUT)
    assert result.isolation == "fallback" and result.reason == "blocked: sandbox: os.fork is refused"


async def test_bwrap_requested_but_unavailable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for bwrap where it does not work raises, naming why; "auto" falls back and says so."""
    monkeypatch.setattr(_bwrap, "bwrap_status", lambda: (None, "bwrap is not installed (test)"))
    with pytest.raises(IsolationUnavailable, match=r"not available: bwrap is not installed \(test\)"):
        await run_python_async("pass", isolation="bwrap")
    assert (await run_python_async("pass", timeout_s=TIMEOUT)).isolation == "fallback"


async def test_environment_variable_forces_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """MOA_SANDBOX_ISOLATION replaces the "auto" default."""
    monkeypatch.setenv("MOA_SANDBOX_ISOLATION", "fallback")
    assert (await run_python_async("pass", timeout_s=TIMEOUT)).isolation == "fallback"
    monkeypatch.setenv("MOA_SANDBOX_ISOLATION", "bwrap")
    assert (await run_python_async("pass", timeout_s=TIMEOUT)).isolation == "bwrap"


def test_concurrent_runs_stay_apart() -> None:
    """Runs in parallel each see only their own files."""

    async def main() -> list[SandboxResult]:
        code = "import os\nopen('mine', 'w').write(str(os.getpid()))\nprint(sorted(os.listdir('.')))"
        return await asyncio.gather(*(run(code) for _ in range(4)))

    results = asyncio.run(main())
    assert all(r.passed for r in results), [r.reason for r in results]
    assert {r.stdout.strip() for r in results} == {"['.tmp', 'answer.py', 'config.json', 'mine', 'run.py']"}


_FILL_OUTSIDE = (
    "for d in / /dev /dev/shm; do head -c 2M /dev/zero > $d/fill 2>/dev/null && echo wrote $d; done; "
    "echo ok > /tmp/t && cat /tmp/t"
)


def test_only_the_quota_tmpfs_is_writable_in_the_user_namespace_mode() -> None:
    """bwrap's own tmpfs for ``/`` and ``/dev`` has no size limit, and without root the program
    owns it: it could fill RAM past ``disk_mb`` there. Both are read-only; ``/tmp`` still works.
    (As root this builds the user-namespace command line and runs it as ``nobody``.)"""
    plan, _ = _bwrap.bwrap_status()
    assert plan is not None
    prefix: list[str] = []
    if os.geteuid() == 0:
        plan = replace(plan, as_root=False, setpriv=None)
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    r, w = os.pipe()
    try:
        argv = _bwrap.build_argv(
            plan,
            ["/bin/sh", "-c", _FILL_OUTSIDE],
            file_fds={},
            readonly_binds=(),
            disk_bytes=1 << 20,
            rlimits=[("fsize", 16 << 20, 16 << 20)],
            status_fd=w,
            uid=None,
        )
        done = subprocess.run(
            [*prefix, *argv], pass_fds=(w,), capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    finally:
        os.close(r)
        os.close(w)
    assert done.stdout == "ok\n", (done.stdout, done.stderr)
