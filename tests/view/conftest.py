"""Fixtures of the viewer's tests: the small experiments (run once per session against the loopback
simulated server), the 10,000-item one (written through the store), the viewer served by uvicorn on
a free loopback port in a thread, and a headless Chromium (Debian's, never a downloaded one)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn

from moa.experiment import rebuild_report
from moa.view import create_app
from tests.view.helpers import build_big, build_chat, build_code, build_judged

T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
BIG_ITEMS = 10_000


def off_loop(fn: Callable[[], T]) -> T:
    """``fn()`` on a thread of its own: Playwright's sync API keeps an event loop running on the
    main thread, where ``asyncio.run`` (an experiment, ``rebuild_report``) would refuse to start."""
    out: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return out[0]


@dataclass
class Served:
    """A running viewer: its URL and its app (the tests look at its caches)."""

    url: str
    app: Any


@contextmanager
def serve(folder: Path, **options: Any) -> Iterator[Served]:
    """The viewer of ``folder`` on 127.0.0.1 and a free port, in a thread, until the block ends."""
    app = create_app(folder, **options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the viewer did not start")
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


@pytest.fixture(scope="session")
def experiments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three experiments: ``judged``, ``code`` and ``chat`` (see ``helpers``)."""
    root = tmp_path_factory.mktemp("view-experiments")
    off_loop(lambda: build_judged(root / "src" / "judged", root / "exps" / "judged"))
    off_loop(lambda: build_code(root / "src" / "code", root / "exps" / "code"))
    off_loop(lambda: build_chat(root / "src" / "chat", root / "exps" / "chat"))
    return root / "exps"


@pytest.fixture
def judged_copy(experiments: Path, tmp_path: Path) -> Path:
    """A copy of the judged experiment folder this test may write votes into."""
    dst = tmp_path / "judged"
    shutil.copytree(experiments / "judged", dst)
    return dst


@pytest.fixture(scope="session")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An experiment of 10,000 items and two setups, with its report."""
    out = tmp_path_factory.mktemp("view-big") / "big"
    build_big(out, BIG_ITEMS)
    off_loop(lambda: asyncio.run(rebuild_report(out)))
    return out


@pytest.fixture(scope="session")
def viewer(experiments: Path) -> Iterator[Served]:
    """The viewer (browsing, no voting) of the three small experiments."""
    with serve(experiments) as s:
        yield s


@pytest.fixture(scope="session")
def big_viewer(big: Path) -> Iterator[Served]:
    with serve(big) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright (skipped without either). Module-scoped: while it is
    open, Playwright's event loop runs on the main thread, which later async tests would trip on."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; any script error or CSP violation on it fails the test."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    p = context.new_page()
    problems: list[str] = []
    p.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    p.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    try:
        yield p
    finally:
        context.close()
    assert problems == [], problems
