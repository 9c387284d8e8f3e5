"""HTML answers ("build a page that..."): find the page in the answer, render it in headless
Chromium, keep a screenshot and the console errors, and score it.

The page is model-written and treated as hostile. Layers, outermost first:

* one Playwright driver and one browser per page, so a page that hangs or crashes its browser
  cannot touch another item, and a hard deadline (``asyncio.timeout``) that ends in closing the
  browser; leaving the driver kills the browser if closing it did not;
* Chromium's own sandbox when not root (as root Chromium refuses it, so ``--no-sandbox``), a
  V8 heap cap, and an environment holding only PATH, LANG and a throwaway HOME;
* the page is served by the router itself at ``PAGE_URL``, an ``https`` origin that can never
  resolve: scripts get a real origin (localStorage, secure-context APIs, line numbers counted in
  the page), and Chromium forbids a web origin to load ``file://`` URLs, so the page cannot show
  local files in its screenshot;
* every other request is aborted unless it is ``data:``/``blob:``/``about:``; WebSockets are
  answered by a closed fake; service workers are blocked. What the router cannot see (the
  network service's own prefetches, preconnects and beacons) goes to a proxy port that refuses
  every connection, and hostnames resolve to nothing;
* downloads are refused and JavaScript dialogs dismissed.

Playwright and Chromium are optional: when either is missing each item gets one line saying
which and how to install it (see ``renderer_problem``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from moa.eval.code import fenced_blocks

if TYPE_CHECKING:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Error,
        Page,
        Playwright,
        Request,
        Route,
        WebSocketRoute,
    )

__all__ = [
    "DEFAULT_CHROMIUM",
    "PAGE_URL",
    "PageOutcome",
    "extract_html",
    "html_score",
    "render_html",
    "renderer_problem",
]

#: where Debian's ``chromium`` package puts the browser
DEFAULT_CHROMIUM = Path("/usr/bin/chromium")
#: distinct console errors kept per page; ``PageOutcome.error_count`` counts them all
MAX_ERRORS = 50
#: characters kept of one console error
ERROR_CHARS = 500
#: characters of HTML rendered at most; a model answer is far smaller, so more is not a page
MAX_SOURCE_CHARS = 5_000_000

# launching Chromium on a loaded two-core machine can take seconds; this bounds it, apart from
# the page's own timeout
_LAUNCH_TIMEOUT_S = 30.0
# errors thrown by timers and animation frames right after the load event still count
_SETTLE_S = 0.5
_CLOSE_TIMEOUT_S = 10.0
#: where the page is served from: by the router, never the network (``.invalid`` never resolves)
PAGE_URL = "https://page.invalid/"
_LOCAL_SCHEMES = ("data:", "blob:", "about:")
# how Chromium reports a request that one of the network layers below stopped
_BLOCKED = ("ERR_BLOCKED_BY_CLIENT", "ERR_PROXY_CONNECTION_FAILED", "ERR_NAME_NOT_RESOLVED")
_DOCUMENT_START = re.compile(r"^\s*(<!doctype\s+html|<html[\s>])", re.IGNORECASE)
_DOCUMENT_OPEN = re.compile(r"<!doctype\s+html|<html[\s>]", re.IGNORECASE)
_DOCUMENT_CLOSE = re.compile(r"</html\s*>", re.IGNORECASE)
_HTML_TAGS = frozenset({"html", "htm", "xhtml"})
_CSS_TAGS = frozenset({"css"})
# browser scripts only: a ```node block is a server, not part of the page
_JS_TAGS = frozenset({"js", "javascript", "mjs"})
# a stylesheet or script the page loads from a relative path: an inlined css/js block stands for it
_NOT_REMOTE = r"(?![a-z][a-z0-9+.-]*:|//)"
_RELATIVE_CSS = re.compile(
    rf"<link\b[^>]*\bhref\s*=\s*[\"']{_NOT_REMOTE}[^\"']*\.css[\"'][^>]*>", re.IGNORECASE
)
_RELATIVE_JS = re.compile(
    rf"<script\b[^>]*\bsrc\s*=\s*[\"']{_NOT_REMOTE}[^\"']*\.js[\"'][^>]*>\s*</script\s*>", re.IGNORECASE
)
_PROLOGUE = re.compile(r"\s*(<!doctype[^>]*>\s*)?(<html\b[^>]*>)?", re.IGNORECASE)
# where inlined styles go: before the first of these, else after the prologue
_STYLE_SPOTS = (re.compile(r"</head\s*>", re.I), re.compile(r"<body\b", re.I))
# where inlined scripts go: before the first of these, else at the end
_SCRIPT_SPOTS = (re.compile(r"</body\s*>", re.I), re.compile(r"</html\s*>", re.I))


@dataclass(frozen=True, slots=True)
class PageOutcome:
    """How rendering one page went."""

    loaded: bool
    """The page's load event fired within the timeout."""
    console_errors: list[str]
    """Console errors, uncaught exceptions and failed requests, in order; each clipped, repeats
    folded into one line ending ``(×N)``, at most ``MAX_ERRORS`` distinct ones kept."""
    screenshot: Path | None
    """The viewport's PNG; ``None`` without an artefacts directory or when rendering failed."""
    duration_s: float
    error: str | None
    """Why the page could not be rendered (no Chromium, timeout, crash), one line."""
    error_count: int = 0
    """Every console error seen, repeats and those beyond ``MAX_ERRORS`` included."""


# --- finding the page ---------------------------------------------------------------------------


def _insert(page: str, text: str, spots: tuple[re.Pattern[str], ...], default: int) -> str:
    at = next((m.start() for spot in spots if (m := spot.search(page))), default)
    return page[:at] + text + page[at:]


def _inline_assets(page: str, css: list[str], js: list[str]) -> str:
    """``page`` with the answer's separate css and js blocks inlined, in place of the page's links
    to relative .css/.js files (the answer gave their content; the renderer has no files)."""
    if css:
        page = _RELATIVE_CSS.sub("", page)
        # after <!DOCTYPE html> at least: a style before it would put the page in quirks mode
        prologue = _PROLOGUE.match(page)
        page = _insert(
            page,
            "<style>\n" + "\n".join(css) + "\n</style>\n",
            _STYLE_SPOTS,
            prologue.end() if prologue else 0,
        )
    if js:
        page = _RELATIVE_JS.sub("", page)
        page = _insert(page, "<script>\n" + "\n".join(js) + "\n</script>\n", _SCRIPT_SPOTS, len(page))
    return page


def extract_html(answer: str) -> str | None:
    """The page in ``answer``: the longest ```` ```html ```` block, else the longest block that
    starts like a document (``<!DOCTYPE html`` or ``<html``), else the answer itself when it starts
    so, else the ``<!DOCTYPE html>``…``</html>`` span of the answer; ``None`` when there is none.

    With a fenced page, the answer's ```` ```css ```` and ```` ```js ```` blocks are inlined (as
    ``<style>`` before ``</head>`` and ``<script>`` before ``</body>``)."""
    blocks = [(tag, body) for tag, body in fenced_blocks(answer) if body.strip()]
    tagged = [body for tag, body in blocks if tag in _HTML_TAGS]
    documents = [body for _, body in blocks if _DOCUMENT_START.match(body)]
    candidates = tagged or documents
    if candidates:
        page = max(candidates, key=len).strip("\n")
        css = [body for tag, body in blocks if tag in _CSS_TAGS]
        js = [body for tag, body in blocks if tag in _JS_TAGS]
        return _inline_assets(page, css, js)
    if _DOCUMENT_START.match(answer):
        return answer.strip()
    return _document_span(answer)


def _document_span(answer: str) -> str | None:
    """From the first ``<!DOCTYPE html`` or ``<html`` of ``answer`` to its last ``</html>``, or None."""
    # found apart, not as one regex: `<html>.*</html>` ran to the end of the answer from every
    # `<html>` without a close after it, quadratic in a reply repeating one
    first = _DOCUMENT_OPEN.search(answer)
    if first is None:
        return None
    end = max((m.end() for m in _DOCUMENT_CLOSE.finditer(answer, first.end())), default=None)
    return answer[first.start() : end] if end is not None else None


# --- what the page did --------------------------------------------------------------------------


@dataclass(slots=True)
class _ErrorLog:
    """Console errors as they arrive: clipped, repeats counted, at most ``MAX_ERRORS`` distinct."""

    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def add(self, line: str) -> None:
        self.total += 1
        line = " ".join(line.split())
        if len(line) > ERROR_CHARS:
            line = line[: ERROR_CHARS - 1] + "…"
        if line in self.counts:
            self.counts[line] += 1
        elif len(self.counts) < MAX_ERRORS:
            self.counts[line] = 1

    def lines(self) -> list[str]:
        return [line if n == 1 else f"{line} (×{n})" for line, n in self.counts.items()]


def _on_console(log: _ErrorLog, msg: ConsoleMessage) -> None:
    if msg.type != "error":
        return
    # Chromium logs each failed load here too; the requestfailed event reports it with its URL
    if msg.text.startswith("Failed to load resource: net::"):
        return
    line = msg.location.get("lineNumber") if msg.location else None
    where = f" (line {line + 1})" if isinstance(line, int) and line >= 0 else ""
    log.add(f"console.error: {msg.text}{where}")


def _on_page_error(log: _ErrorLog, error: Error) -> None:
    log.add(f"uncaught {error.name or 'Error'}: {error.message}")


def _on_request_failed(log: _ErrorLog, request: Request) -> None:
    failure = request.failure or "failed"
    # cancelled by the page itself (a navigation, an abort, a replaced src): no error of its own
    if "ERR_ABORTED" in failure:
        return
    if any(code in failure for code in _BLOCKED):
        log.add(f"request blocked (pages render without network): {request.method} {request.url}")
    else:
        log.add(f"request failed: {request.method} {request.url}: {failure}")


# --- the browser --------------------------------------------------------------------------------


def renderer_problem(executable: Path = DEFAULT_CHROMIUM) -> str | None:
    """Why pages cannot be rendered here (one line naming the fix), or ``None`` when they can."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed: pip install 'moa-sdk[html]'"
    if not executable.is_file() or not os.access(executable, os.X_OK):
        return f"chromium not found at {executable}: apt-get install chromium"
    return None


def _launch_args(dead_port: int) -> list[str]:
    """Chromium's flags; ``dead_port`` is a loopback port bound by us and never listened on."""
    return [
        # /dev/shm is 64 MB in most containers; Chromium crashes tabs when it fills
        "--disable-dev-shm-usage",
        "--js-flags=--max-old-space-size=512",
        # the router misses what the network service sends itself (<link rel=prefetch>,
        # sendBeacon, preconnect): those go to a proxy that refuses every connection, loopback
        # included (<-loopback> ends Chromium's implicit bypass), and names resolve to nothing
        f"--proxy-server=socks5://127.0.0.1:{dead_port}",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
        "--disable-background-networking",
        "--no-first-run",
    ]


def _router(source: str) -> Callable[[Route], Awaitable[None]]:
    """Serves ``source`` at ``PAGE_URL``, lets the page's own data/blob URLs through, aborts the
    rest. (A closure: Playwright sets an attribute on the handler it is given.)"""

    async def route(route: Route) -> None:
        url = route.request.url.split("#", 1)[0]
        if url == PAGE_URL and route.request.method == "GET":
            await route.fulfill(status=200, content_type="text/html; charset=utf-8", body=source)
        elif url.startswith(_LOCAL_SCHEMES):
            # Playwright does not route these today; should it start to, the page keeps them
            await route.fallback()
        else:
            await route.abort("blockedbyclient")

    return route


async def _refuse_websocket(ws: WebSocketRoute) -> None:
    # a routed WebSocket reaches no server unless its handler connects it
    await ws.close(code=1008, reason="pages render without network")


async def _guard(context: BrowserContext, source: str, log: _ErrorLog) -> Page:
    """A page of ``context`` with the network closed but for ``source`` at ``PAGE_URL``, and its
    errors going to ``log``."""
    await context.route("**/*", _router(source))
    await context.route_web_socket(re.compile(".*"), _refuse_websocket)
    page = await context.new_page()
    # dialogs are dismissed so that alert() does not stop the page
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.on("console", lambda msg: _on_console(log, msg))
    page.on("pageerror", lambda error: _on_page_error(log, error))
    page.on("requestfailed", lambda request: _on_request_failed(log, request))
    return page


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _why(error: Exception) -> str:
    """One line for a Playwright error: the page's crash, a sandbox that cannot start, or the
    error's own first line."""
    text = str(error)
    if "crashed" in text.lower():
        return "the page crashed (out of memory, or a renderer fault)"
    if "sandboxing failed" in text.lower():
        return "chromium's sandbox could not start (as root, or without user namespaces): pass sandbox=False"
    return f"chromium: {_first_line(error)}"


async def _load(page: Page, timeout_s: float) -> str | None:
    """Opens the page; ``None`` once its load event fired, else why not."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.goto(PAGE_URL, wait_until="load", timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        return f"the page did not finish loading within {timeout_s:g}s"
    except PlaywrightError as e:
        return _why(e)
    return None


def _screenshot_path(artefacts_dir: Path, name: str) -> Path:
    # item ids hold slashes and spaces; keep the name readable and inside the directory
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:120] or "page"
    return artefacts_dir / f"{safe}.png"


async def _snap(page: Page, path: Path, timeout_s: float) -> str | None:
    """Writes the viewport's PNG to ``path``; ``None`` when it was written, else why not."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        await page.screenshot(path=str(path), type="png", timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        why = f"the page stopped responding after it loaded (no screenshot within {timeout_s:g}s)"
    except PlaywrightError as e:
        why = _why(e)
    else:
        return None
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return why


@dataclass(slots=True)
class _Visit:
    """What is known of the page so far, kept when the deadline cuts the visit short."""

    loaded: bool = False
    screenshot: Path | None = None
    error: str | None = None


async def _visit(
    browser: Browser,
    source: str,
    visit: _Visit,
    log: _ErrorLog,
    *,
    shot: Path | None,
    timeout_s: float,
    viewport: tuple[int, int],
) -> None:
    context = await browser.new_context(
        viewport={"width": viewport[0], "height": viewport[1]},
        device_scale_factor=1,
        accept_downloads=False,
        service_workers="block",
    )
    page = await _guard(context, source, log)
    visit.error = await _load(page, timeout_s)
    if visit.error is not None:
        return
    visit.loaded = True
    await asyncio.sleep(_SETTLE_S)
    if shot is not None:
        # a screenshot of a big page on a busy machine takes a while: it gets the load's budget
        visit.error = await _snap(page, shot, timeout_s)
        if visit.error is None:
            visit.screenshot = shot


async def _close(browser: Browser) -> None:
    # closing goes through the browser process, which answers even when a renderer spins; if it
    # does not, leaving the driver kills the browser
    with contextlib.suppress(Exception):
        await asyncio.wait_for(browser.close(), _CLOSE_TIMEOUT_S)


async def _launch(pw: Playwright, executable: Path, home: str, dead_port: int, sandbox: bool) -> Browser:
    env: dict[str, str | float | bool] = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "LANG": "C.UTF-8",
    }
    return await pw.chromium.launch(
        executable_path=str(executable),
        args=_launch_args(dead_port),
        chromium_sandbox=sandbox,
        env=env,
        timeout=_LAUNCH_TIMEOUT_S * 1000,
    )


async def _render(
    source: str,
    visit: _Visit,
    log: _ErrorLog,
    *,
    executable: Path,
    sandbox: bool,
    shot: Path | None,
    timeout_s: float,
    viewport: tuple[int, int],
) -> None:
    """One driver, one browser, one visit under a hard deadline; what happened goes to ``visit``."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    deadline_s = 2 * timeout_s + _SETTLE_S
    # bound and never listened on, the port refuses connections, and no one else can take it
    with tempfile.TemporaryDirectory(prefix="moa-html-") as home, socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        try:
            async with async_playwright() as pw:
                browser = await _launch(pw, executable, home, dead.getsockname()[1], sandbox)
                try:
                    async with asyncio.timeout(deadline_s):
                        await _visit(
                            browser, source, visit, log, shot=shot, timeout_s=timeout_s, viewport=viewport
                        )
                except TimeoutError:
                    visit.error = f"the page stopped responding (killed after {deadline_s:g}s)"
                    visit.screenshot = None
                    if shot is not None:
                        shot.unlink(missing_ok=True)
                finally:
                    await _close(browser)
        except PlaywrightError as e:
            visit.error = _why(e)
        except OSError as e:
            visit.error = f"the playwright driver could not be started: {_first_line(e)}"


async def render_html(
    source: str,
    *,
    artefacts_dir: Path | None,
    name: str,
    timeout_s: float = 15.0,
    viewport: tuple[int, int] = (1024, 768),
    executable: Path = DEFAULT_CHROMIUM,
    sandbox: bool | None = None,
) -> PageOutcome:
    """Renders the page ``source`` in a fresh headless Chromium with no network; writes the
    viewport's screenshot to ``artefacts_dir / f"{name}.png"`` (``name`` made file-safe; the caller
    keeps names distinct) when a directory is given. Never raises for the page's sake: what went
    wrong is in ``error``. ``timeout_s`` bounds the load; a hard deadline closes the browser
    after ``2 * timeout_s + 0.5`` seconds (load, settling, screenshot), whatever the page does.

    ``sandbox``: Chromium's own sandbox; by default on, except as root, where Chromium refuses it
    (as root in a container it runs with ``--no-sandbox``; the layers above still hold)."""
    if not timeout_s > 0:
        raise ValueError(f"render_html: timeout_s must be positive, got {timeout_s!r}")
    if sandbox is None:
        sandbox = os.geteuid() != 0
    start = time.monotonic()
    log = _ErrorLog()
    visit = _Visit()
    visit.error = renderer_problem(executable)
    if visit.error is None and len(source) > MAX_SOURCE_CHARS:
        visit.error = f"the page is {len(source):,} characters, over the {MAX_SOURCE_CHARS:,} rendered"
    if visit.error is None:
        shot = _screenshot_path(artefacts_dir, name) if artefacts_dir is not None else None
        await _render(
            source,
            visit,
            log,
            executable=executable,
            sandbox=sandbox,
            shot=shot,
            timeout_s=timeout_s,
            viewport=viewport,
        )
    return PageOutcome(
        loaded=visit.loaded,
        console_errors=log.lines(),
        screenshot=visit.screenshot,
        duration_s=time.monotonic() - start,
        error=visit.error,
        error_count=log.total,
    )


# --- the score ----------------------------------------------------------------------------------


def _errors_summary(outcome: PageOutcome, limit: int = 5) -> str:
    n = max(outcome.error_count, len(outcome.console_errors))
    shown = "; ".join(outcome.console_errors[:limit])
    more = (
        f"; … and {len(outcome.console_errors) - limit} more" if len(outcome.console_errors) > limit else ""
    )
    return f"{n} console error{'s' if n != 1 else ''}: {shown}{more}"


def html_score(outcome: PageOutcome) -> tuple[float, str]:
    """1.0 when the page rendered without console errors, else 0.0; with the reason and the
    screenshot's path for the judge and the stored result."""
    shot = f"screenshot: {outcome.screenshot}" if outcome.screenshot is not None else "no screenshot"
    if outcome.error is not None or not outcome.loaded:
        reason = f"page did not render: {outcome.error or 'the load event never fired'}"
        if outcome.console_errors:
            reason += f"; {_errors_summary(outcome)}"
        return 0.0, reason
    if outcome.console_errors or outcome.error_count:
        return 0.0, f"page has {_errors_summary(outcome)}; {shot}"
    return 1.0, f"rendered, no console errors ({shot})"
