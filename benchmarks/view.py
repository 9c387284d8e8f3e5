"""`moa view` over an experiment of 10,000 items: how long a browser takes to open the overview and
then the first page of items, measured in headless Chromium against the viewer on loopback.

"Cold" is the first visit after the viewer starts (the overview and the items index are computed
then, once per store version); "warm" is a later visit in a new browser tab. Each figure runs from
navigation to the last row on screen. Target: the cold open under 2 s.

    python benchmarks/view.py [--items 10000] [--rounds 3]

Needs the `serve` extra, playwright (``pip install playwright``) and a Chromium at /usr/bin/chromium
(Debian's; no downloaded browser).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import ROOT, median, table, verdict

from moa.experiment import rebuild_report
from moa.view import create_app

TARGET_S = 2.0
CHROMIUM = "/usr/bin/chromium"


@contextmanager
def viewer(folder: Path) -> Iterator[str]:
    """The viewer of ``folder`` on a free loopback port, in a thread of its own."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(folder), log_level="warning", access_log=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def open_viewer(browser: object, url: str, items: int) -> float:
    """Seconds from navigating to the overview until its table shows, plus from clicking Items until
    the first page of rows shows."""
    from playwright.sync_api import expect

    page = browser.new_page()  # type: ignore[attr-defined]
    try:
        t0 = time.perf_counter()
        page.goto(url + "/#/e/big/overview")
        expect(page.locator("table.headline tbody tr")).to_have_count(2, timeout=30_000)
        page.get_by_role("link", name="Items", exact=True).click()
        expect(page.locator("#showing")).to_have_text(f"1–50 of {items:,}", timeout=30_000)
        return time.perf_counter() - t0
    finally:
        page.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3, help="fresh viewers (cold) and warm visits each")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from tests.view.helpers import build_big

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "big"
        t0 = time.perf_counter()
        build_big(folder, args.items)
        asyncio.run(rebuild_report(folder))
        print(
            f"built {args.items:,} items x 2 setups (4 calls per item) in {time.perf_counter() - t0:.1f} s\n"
        )
        cold: list[float] = []
        warm: list[float] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                for _ in range(args.rounds):
                    # a new viewer each round: its caches start empty, as after `moa view` starts
                    with viewer(folder) as url:
                        cold.append(open_viewer(browser, url, args.items))
                        warm.append(open_viewer(browser, url, args.items))
            finally:
                browser.close()
    rows = [
        [
            "cold: overview + first items page",
            median(cold),
            max(cold),
            f"<= {TARGET_S:.1f} s",
            verdict(max(cold) <= TARGET_S),
        ],
        ["warm: the same, caches filled", median(warm), max(warm), "", ""],
    ]
    print(f"`moa view` over {args.items:,} items, headless Chromium, {args.rounds} rounds (seconds)\n")
    print(table(["visit", "median s", "worst s", "target", "verdict"], rows))
    return 0 if max(cold) <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
