"""HTML answers: finding the page in an answer, rendering it in headless Chromium with no network
(hostile pages included: endless loops, phoning home, dialogs, floods, memory bombs), and the score.

Rendering tests need the playwright package and Debian's chromium; they are skipped, naming which
is missing, only when one is. Each fixture page is rendered once per module and shared."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from moa.eval import html
from moa.eval.html import (
    ERROR_CHARS,
    MAX_ERRORS,
    MAX_SOURCE_CHARS,
    PageOutcome,
    extract_html,
    html_score,
    render_html,
    renderer_problem,
)
from tests.probe import run_python

FIXTURES = Path(__file__).parent / "fixtures" / "html"
PROBLEM = renderer_problem()
needs_chromium = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")
# short, so the endless pages end quickly; every other page gets the default
LOOP_TIMEOUT_S = 5.0


# --- fixtures -----------------------------------------------------------------------------------


class Listener:
    """A loopback TCP server recording every connection made to it, with or without a request."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        self._arrived = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(0.5)
                try:
                    data = conn.recv(200)
                except OSError:
                    data = b""
            with self._arrived:
                self.seen.append(data or b"<connection without a request>")
                self._arrived.notify_all()

    def drained(self) -> list[bytes]:
        """What reached the listener, once every connection made before this call was accepted:
        connections are accepted in order, so the listener's own sentinel comes after them."""
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(b"SENTINEL")
        with self._arrived:
            self._arrived.wait_for(lambda: any(d.startswith(b"SENTINEL") for d in self.seen), timeout=30)
            seen = [d for d in self.seen if not d.startswith(b"SENTINEL")]
            self.seen.clear()
        return seen

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    srv = Listener()
    yield srv
    srv.close()


@dataclass
class Renders:
    """Each fixture page rendered once: its outcome and its artefacts directory."""

    root: Path
    port: int
    done: dict[str, tuple[PageOutcome, Path]] = field(default_factory=dict)

    def page(self, fixture: str, **kwargs: Any) -> tuple[PageOutcome, Path]:
        if fixture not in self.done:
            source = (FIXTURES / f"{fixture}.html").read_text(encoding="utf-8")
            self.done[fixture] = self.render(fixture, source.replace("PORT", str(self.port)), **kwargs)
        return self.done[fixture]

    def render(self, name: str, source: str, **kwargs: Any) -> tuple[PageOutcome, Path]:
        artefacts = self.root / name
        outcome = asyncio.run(render_html(source, artefacts_dir=artefacts, name=name, **kwargs))
        return outcome, artefacts


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory, listener: Listener) -> Renders:
    return Renders(tmp_path_factory.mktemp("html"), listener.port)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def live_descendants() -> list[str]:
    """Processes below this one that still run (zombies excluded), as ``pid command``."""
    parent: dict[int, int] = {}
    info: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        command, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if rest[0] != "Z":
            parent[int(entry)], info[int(entry)] = int(rest[1]), f"{entry} {command}"
    mine, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        children = [p for p, pp in parent.items() if pp == pid]
        mine += [info[c] for c in children]
        todo += children
    return mine


# --- finding the page in an answer --------------------------------------------------------------


def test_extract_takes_the_html_block() -> None:
    """A ```html block among prose and other code is the page."""
    answer = "Here:\n\n```python\nprint(1)\n```\n\n```html\n<p>hi</p>\n```\n\nDone."
    assert extract_html(answer) == "<p>hi</p>"


def test_extract_takes_the_longest_html_block() -> None:
    """Of several ```html blocks (a snippet, then the full page), the longest is the page."""
    answer = "```html\n<b>x</b>\n```\n\n```html\n<!DOCTYPE html><html><body>full</body></html>\n```"
    assert extract_html(answer) == "<!DOCTYPE html><html><body>full</body></html>"


def test_extract_takes_a_block_that_starts_like_a_document() -> None:
    """An untagged (or oddly tagged) block starting with <!DOCTYPE or <html is the page."""
    assert extract_html("```\n<!doctype html>\n<p>a</p>\n```") == "<!doctype html>\n<p>a</p>"
    assert extract_html("```xml\n<html lang=en><p>b</p></html>\n```") == "<html lang=en><p>b</p></html>"


def test_extract_takes_a_raw_answer_that_is_a_page() -> None:
    """An unfenced answer starting with <!DOCTYPE html> is the page, whole."""
    page = "<!DOCTYPE html>\n<html><body><p>raw</p></body></html>\n"
    assert extract_html("\n" + page) == page.strip()


def test_extract_cuts_the_page_out_of_prose() -> None:
    """An unfenced page between prose is cut from <!DOCTYPE html> to </html>."""
    answer = "Sure! <!DOCTYPE html><html><body>p</body></html> Hope it helps."
    assert extract_html(answer) == "<!DOCTYPE html><html><body>p</body></html>"


def test_extract_reads_a_reply_repeating_an_unclosed_html_tag_at_once() -> None:
    """A reply of 100,000 `<html>` tags and no `</html>` (and one closed at its end) is read in linear
    time (a hang guard of 60 s for milliseconds; one regex ran to the end from every tag)."""
    probe = (
        "from moa.eval.html import extract_html\n"
        "tags = 'prose ' + '<html> ' * 100_000\n"
        "print(extract_html(tags), len(extract_html(tags + '</html>')))\n"
    )
    assert run_python("-c", probe) == f"None {7 * 100_000 + 7}\n"


def test_extract_finds_nothing_in_an_answer_without_a_page() -> None:
    """Prose or another language's code is no page."""
    assert extract_html("Use a <div> with flexbox.") is None
    assert extract_html("```python\nprint('<html>')\n```") is None


def test_extract_inlines_the_answers_css_and_js_blocks() -> None:
    """Separate css and js blocks replace the page's links to relative files; remote links stay."""
    answer = (
        "```html\n<html><head><link rel='stylesheet' href='style.css'>"
        "<link rel=stylesheet href='https://cdn.example.com/x.css'></head>"
        '<body><script src="js/app.js"></script></body></html>\n```\n'
        "```css\nh1 { color: red }\n```\n```js\nconsole.log(1)\n```"
    )
    page = extract_html(answer)
    assert page is not None
    assert "style.css" not in page and "app.js" not in page
    assert "https://cdn.example.com/x.css" in page
    assert page.index("<style>\nh1 { color: red }\n</style>") < page.index("</head>")
    assert page.index("<script>\nconsole.log(1)\n</script>") < page.index("</body>")


def test_extract_inlines_only_what_the_answer_gave() -> None:
    """A css block replaces the page's relative stylesheet link, goes after <!DOCTYPE html> (before
    it the page would render in quirks mode), and leaves the relative script for a js block."""
    answer = "```html\n<!DOCTYPE html>\n<link rel=stylesheet href='a.css'><script src='a.js'></script>\n```\n```css\np {}\n```"
    assert extract_html(answer) == "<!DOCTYPE html>\n<style>\np {}\n</style>\n<script src='a.js'></script>"


def test_extract_leaves_css_blocks_out_without_a_fenced_page() -> None:
    """css/js blocks are inlined only into a fenced page, never made into one."""
    assert extract_html("```css\nh1 { color: red }\n```") is None


# --- the score ----------------------------------------------------------------------------------


def _outcome(**kw: Any) -> PageOutcome:
    base: dict[str, Any] = {
        "loaded": True,
        "console_errors": [],
        "screenshot": Path("/a/p.png"),
        "duration_s": 1.0,
        "error": None,
    }
    return PageOutcome(**(base | kw))


def test_score_a_clean_page_is_one_with_its_screenshot() -> None:
    """A page that loaded without console errors scores 1 and names its screenshot."""
    assert html_score(_outcome()) == (1.0, "rendered, no console errors (screenshot: /a/p.png)")


def test_score_console_errors_are_zero_and_listed() -> None:
    """Console errors score 0, counted and listed for the judge, with the screenshot's path."""
    value, detail = html_score(
        _outcome(console_errors=["uncaught TypeError: x", "console.error: y"], error_count=2)
    )
    assert value == 0.0
    assert (
        detail == "page has 2 console errors: uncaught TypeError: x; console.error: y; screenshot: /a/p.png"
    )


def test_score_counts_repeats_and_errors_not_kept() -> None:
    """The count says how many errors there were, not how many lines were kept."""
    lines = [f"console.error: e{i}" for i in range(MAX_ERRORS)]
    value, detail = html_score(_outcome(console_errors=lines, error_count=10_000))
    assert value == 0.0
    assert detail.startswith("page has 10000 console errors: console.error: e0; ")
    assert f"… and {MAX_ERRORS - 5} more" in detail


def test_score_a_page_that_did_not_render_is_zero_with_why() -> None:
    """A page that never loaded scores 0 with the one-line reason."""
    outcome = _outcome(loaded=False, screenshot=None, error="the page crashed")
    assert html_score(outcome) == (0.0, "page did not render: the page crashed")


def test_score_a_page_that_did_not_render_keeps_its_errors() -> None:
    """Errors seen before a page stopped are kept after the reason, for the judge."""
    outcome = _outcome(
        screenshot=None, error="the page crashed", console_errors=["uncaught Error: x"], error_count=1
    )
    assert html_score(outcome) == (
        0.0,
        "page did not render: the page crashed; 1 console error: uncaught Error: x",
    )


# --- without the renderer -----------------------------------------------------------------------


async def test_missing_chromium_is_one_line_per_item(tmp_path: Path) -> None:
    """No browser at the configured path: a line naming the path and the package, no crash."""
    missing = tmp_path / "chromium"
    outcome = await render_html("<p>x</p>", artefacts_dir=tmp_path, name="p", executable=missing)
    assert not outcome.loaded and outcome.screenshot is None
    assert outcome.error == f"chromium not found at {missing}: apt-get install chromium"
    assert html_score(outcome) == (0.0, f"page did not render: {outcome.error}")


async def test_missing_playwright_is_one_line_per_item(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without the playwright package: a line naming the extra to install, no crash."""
    monkeypatch.setitem(sys.modules, "playwright.async_api", None)
    outcome = await render_html("<p>x</p>", artefacts_dir=tmp_path, name="p")
    assert outcome.error == "the playwright package is not installed: pip install 'moa-sdk[html]'"
    assert list(tmp_path.iterdir()) == []


async def test_an_oversized_page_is_refused_before_any_browser(tmp_path: Path) -> None:
    """A page over MAX_SOURCE_CHARS is refused with its size, without starting Chromium."""
    outcome = await render_html(
        "<p>" + "x" * MAX_SOURCE_CHARS, artefacts_dir=tmp_path, name="p", executable=Path("/bin/false")
    )
    assert outcome.error is not None and "over the 5,000,000 rendered" in outcome.error
    assert list(tmp_path.iterdir()) == []


async def test_a_timeout_that_is_not_positive_is_refused() -> None:
    """timeout_s <= 0 (Playwright's "no timeout") is a caller's error, named."""
    with pytest.raises(ValueError, match="render_html: timeout_s must be positive, got 0"):
        await render_html("<p>x</p>", artefacts_dir=None, name="p", timeout_s=0)


@needs_chromium
@pytest.mark.skipif(os.geteuid() != 0, reason="only root is refused Chromium's sandbox")
def test_a_sandbox_that_cannot_start_is_one_line() -> None:
    """Asking for Chromium's sandbox where it cannot run gives one line naming the way out."""
    outcome = asyncio.run(render_html("<p>x</p>", artefacts_dir=None, name="p", sandbox=True))
    assert outcome.error == (
        "chromium's sandbox could not start (as root, or without user namespaces): pass sandbox=False"
    )
    assert live_descendants() == []


# --- rendering ----------------------------------------------------------------------------------


@needs_chromium
@pytest.mark.parametrize("fixture", ["hello", "canvas_chart"])
def test_a_correct_page_renders_clean_with_a_viewport_screenshot(renders: Renders, fixture: str) -> None:
    """A working page (logs and warnings, data: and blob: URLs) loads with no console errors
    and leaves a PNG exactly the size of the viewport in the artefacts directory."""
    outcome, artefacts = renders.page(fixture)
    assert outcome.error is None and outcome.loaded
    assert outcome.console_errors == [] and outcome.error_count == 0
    assert outcome.screenshot == artefacts / f"{fixture}.png"
    assert png_size(outcome.screenshot) == (1024, 768)
    assert html_score(outcome) == (1.0, f"rendered, no console errors (screenshot: {outcome.screenshot})")


@needs_chromium
def test_the_viewport_sets_the_screenshot_size(renders: Renders) -> None:
    """A custom viewport gives a screenshot of that size."""
    source = (FIXTURES / "hello.html").read_text(encoding="utf-8")
    outcome, _ = renders.render("small", source, viewport=(640, 480))
    assert outcome.screenshot is not None and png_size(outcome.screenshot) == (640, 480)


@needs_chromium
def test_without_an_artefacts_dir_there_is_no_screenshot() -> None:
    """With no artefacts directory the page is still rendered and judged, but nothing is written."""
    source = (FIXTURES / "hello.html").read_text(encoding="utf-8")
    outcome = asyncio.run(render_html(source, artefacts_dir=None, name="p"))
    assert outcome.loaded and outcome.error is None and outcome.screenshot is None
    assert html_score(outcome) == (1.0, "rendered, no console errors (no screenshot)")


@needs_chromium
def test_a_name_with_slashes_stays_inside_the_artefacts_dir(renders: Renders) -> None:
    """An item id such as ``../HumanEval/3 setup`` becomes one file name inside the directory."""
    outcome, artefacts = renders.render("../HumanEval/3 setup", "<!DOCTYPE html><p>x</p>")
    assert outcome.screenshot is not None
    assert outcome.screenshot.parent == artefacts and outcome.screenshot.name == "HumanEval_3_setup.png"


@needs_chromium
def test_js_errors_are_reported(renders: Renders) -> None:
    """Uncaught exceptions (at load and in a timer just after) and console.error calls are kept."""
    outcome, _ = renders.page("js_error")
    assert outcome.loaded and outcome.error is None
    assert outcome.console_errors == [
        "uncaught ReferenceError: undefinedFunction is not defined",
        "console.error: state is missing (line 9)",
        "uncaught TypeError: Cannot read properties of null (reading 'x')",
    ]
    assert outcome.screenshot is not None and png_size(outcome.screenshot) == (1024, 768)
    value, detail = html_score(outcome)
    assert value == 0.0 and detail.startswith("page has 3 console errors: uncaught ReferenceError")
    assert detail.endswith(f"; screenshot: {outcome.screenshot}")


@needs_chromium
def test_a_page_that_never_loads_is_killed(renders: Renders) -> None:
    """``while (true) {}`` before the load event: not loaded, one line, no screenshot, and no
    Chromium process left running."""
    outcome, artefacts = renders.page("loop", timeout_s=LOOP_TIMEOUT_S)
    assert not outcome.loaded and outcome.screenshot is None
    assert outcome.error == "the page did not finish loading within 5s"
    assert not artefacts.exists() or list(artefacts.iterdir()) == []
    assert live_descendants() == []


@needs_chromium
def test_a_page_that_hangs_after_loading_is_killed(renders: Renders) -> None:
    """An endless loop started after the load event: loaded, but no screenshot, one line, and no
    Chromium process left running."""
    outcome, artefacts = renders.page("loop_after_load", timeout_s=LOOP_TIMEOUT_S)
    assert outcome.loaded and outcome.screenshot is None
    assert outcome.error is not None and outcome.error.startswith("the page stopped responding")
    assert list(artefacts.iterdir()) == []
    assert html_score(outcome)[0] == 0.0
    assert live_descendants() == []


@needs_chromium
def test_the_hard_deadline_closes_the_browser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A visit stuck where no Playwright timeout applies is cut by the deadline: one line, no
    screenshot (not even a partial one), and no Chromium process left running."""

    async def loaded(page: object, timeout_s: float) -> str | None:
        return None

    async def stuck(page: object, path: Path, timeout_s: float) -> str | None:
        path.write_bytes(b"half a PNG")
        await asyncio.Event().wait()
        return None

    monkeypatch.setattr(html, "_load", loaded)
    monkeypatch.setattr(html, "_snap", stuck)
    outcome = asyncio.run(render_html("<p>x</p>", artefacts_dir=tmp_path, name="p", timeout_s=1))
    assert outcome.screenshot is None
    assert outcome.error == "the page stopped responding (killed after 2.5s)"
    assert list(tmp_path.iterdir()) == []
    assert live_descendants() == []


@needs_chromium
def test_no_request_leaves_the_browser(renders: Renders, listener: Listener) -> None:
    """fetch, XHR, images, scripts, styles, fonts, frames, media, prefetch, preconnect, beacons,
    EventSource, WebSocket, workers and popups to a loopback listener: every one is blocked, none
    reaches the listener."""
    assert listener.drained() == []
    outcome, _ = renders.page("network")
    assert listener.drained() == []
    assert outcome.loaded and outcome.error is None
    reported = "\n".join(outcome.console_errors)
    # the page did try: each attempt is reported as a blocked request
    for path in ("/style.css", "/prefetch", "/script.js", "/image.png", "/frame", "/fetch", "/xhr",
                 "/eventsource", "/beacon", "/new-image", "/worker"):  # fmt: skip
        assert f":{listener.port}{path}" in reported, path
    assert [
        e for e in outcome.console_errors if not e.startswith("request blocked (pages render without")
    ] == []


NAVIGATIONS = {
    "refresh": '<meta http-equiv="refresh" content="0; url=http://127.0.0.1:PORT/refresh">',
    "form": '<form id="f" action="http://127.0.0.1:PORT/form" method="post"><input name="q"></form>'
    "<script>addEventListener('load', () => document.getElementById('f').submit())</script>",
    "location": "<script>location.href = 'http://127.0.0.1:PORT/location'</script>",
}


@needs_chromium
@pytest.mark.parametrize("way", sorted(NAVIGATIONS))
def test_the_page_cannot_navigate_out(renders: Renders, listener: Listener, way: str) -> None:
    """A meta refresh, a form post or a location change to the listener is blocked: the page stays,
    and nothing reaches the listener."""
    assert listener.drained() == []
    source = "<!DOCTYPE html><p>leaving</p>" + NAVIGATIONS[way].replace("PORT", str(listener.port))
    outcome, _ = renders.render(f"navigate_{way}", source)
    assert listener.drained() == []
    assert outcome.loaded and outcome.screenshot is not None
    assert outcome.console_errors == [
        f"request blocked (pages render without network): "
        f"{'POST' if way == 'form' else 'GET'} http://127.0.0.1:{listener.port}/{way}"
    ]


@needs_chromium
def test_the_listener_does_see_connections(listener: Listener) -> None:
    """The listener records a plain connection (so its silence above means something)."""
    with socket.create_connection(("127.0.0.1", listener.port)) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert listener.drained() == [b"GET / HTTP/1.0\r\n\r\n"]


@needs_chromium
def test_local_files_cannot_be_shown(renders: Renders) -> None:
    """file:// frames and images are refused, so the screenshot cannot show a local file."""
    outcome, _ = renders.page("local_file")
    assert outcome.loaded
    assert (
        "console.error: Not allowed to load local resource: file:///etc/passwd (line 5)"
        in outcome.console_errors
    )


@needs_chromium
def test_dialogs_are_dismissed(renders: Renders) -> None:
    """alert, confirm and prompt do not stop the page: each is dismissed and the script goes on."""
    outcome, _ = renders.page("dialogs")
    assert outcome.loaded and outcome.error is None
    assert outcome.console_errors == ["console.error: after dialogs: false null (line 11)"]
    assert outcome.screenshot is not None and outcome.screenshot.is_file()


@needs_chromium
def test_downloads_are_refused(renders: Renders) -> None:
    """A page that clicks download links (data: and blob:) still renders, and writes nothing but
    its screenshot."""
    outcome, artefacts = renders.page("download")
    assert outcome.screenshot is not None
    assert sorted(p.name for p in artefacts.iterdir()) == ["download.png"]


@needs_chromium
def test_an_error_flood_is_clipped_and_counted(renders: Renders) -> None:
    """10,000 console errors: each clipped, repeats folded, at most MAX_ERRORS lines, all counted."""
    outcome, _ = renders.page("error_flood")
    assert outcome.error_count == 10_000
    assert len(outcome.console_errors) == MAX_ERRORS
    assert all(len(e) <= ERROR_CHARS + len(" (×50)") for e in outcome.console_errors)
    assert outcome.console_errors[0].startswith("console.error: failure number 0 xxx")
    assert outcome.console_errors[0].endswith("… (×50)")
    assert html_score(outcome)[1].startswith("page has 10000 console errors: ")


@needs_chromium
def test_a_huge_dom_renders_a_viewport_screenshot(renders: Renders) -> None:
    """100,000 elements built by script: rendered, and the screenshot is the viewport only."""
    outcome, _ = renders.page("huge_dom")
    assert outcome.loaded and outcome.error is None and outcome.console_errors == []
    assert outcome.screenshot is not None and png_size(outcome.screenshot) == (1024, 768)


@needs_chromium
def test_a_huge_source_renders(renders: Renders) -> None:
    """A 3 MB page (far more than a model writes) loads and is shot like any other."""
    source = "<!DOCTYPE html><html><body>" + "<p>lorem ipsum dolor sit amet</p>" * 100_000 + "</body></html>"
    outcome, _ = renders.render("huge_source", source)
    assert outcome.loaded and outcome.error is None and outcome.console_errors == []
    assert outcome.screenshot is not None and png_size(outcome.screenshot) == (1024, 768)


@needs_chromium
def test_a_memory_bomb_is_one_line(renders: Renders) -> None:
    """A page that allocates without end crashes its renderer, reported as one line."""
    outcome, _ = renders.page("memory_bomb")
    assert not outcome.loaded and outcome.screenshot is None
    assert outcome.error is not None and "\n" not in outcome.error
    assert outcome.error.startswith(("the page crashed", "the page did not finish loading"))
    assert live_descendants() == []


@needs_chromium
def test_an_answer_with_separate_files_renders_whole(renders: Renders) -> None:
    """An answer giving html, css and js as separate blocks renders as one page: the css applies
    and the function defined in the js block runs (a missing one is an uncaught ReferenceError)."""
    page = extract_html((FIXTURES / "answer_split_files.md").read_text(encoding="utf-8"))
    assert page is not None
    outcome, _ = renders.render("split_files", page)
    assert outcome.loaded and outcome.error is None
    assert outcome.console_errors == []
