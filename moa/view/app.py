"""The ASGI app behind ``moa view``: one page (``static/``, plain JS, no CDN) and its JSON API over the
experiments of one folder.

::

    GET  /api/config                       mode (browse or vote), voter, the experiments
    GET  /api/e/{key}/overview             summary, costs per node and model, live vote tally
    GET  /api/e/{key}/items                one page of the items table (filters, sort, limit/offset)
    GET  /api/e/{key}/item?id=...          one item: every setup's run, calls, score, judge verdicts
    GET  /api/e/{key}/vote/next            the voter's next blind pair (no setup names)
    POST /api/e/{key}/vote                 {"token", "verdict"}: store the vote, reveal the sides
    POST /api/e/{key}/vote/skip            {"token"}: show it again at the end
    POST /api/e/{key}/vote/undo            {}: take back this session's last vote

Errors are ``{"error": "..."}`` naming the culprit (the parameter, the item, the experiment). Every
handler is a coroutine: the stores are used on the event loop's thread only (see ``catalog``), and
every query is indexed or served from the per-version caches.

Pages put model output into the DOM as text only; the Content-Security-Policy (scripts from this
server only, no inline script) is the second line if that ever slipped. POSTs need a JSON content
type (a cross-site form cannot send one without a CORS preflight, which this app never grants).
Every request is guarded as ``moa serve``'s are (``moa._browser_guard``): one naming another origin
is refused, and one that arrived on a loopback interface must name a loopback host (DNS
rebinding), however the server is bound.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from moa import log
from moa._browser_guard import BrowserGuard
from moa.errors import UserError
from moa.experiment.report.text import headline_findings
from moa.experiment.store.votes import add_vote, delete_vote, voted_pairs
from moa.view.catalog import Catalog, ExperimentFolder
from moa.view.graph import Deps, layout, stored_topology
from moa.view.items import OUTCOMES, SORTS, ItemIndex, ItemQuery
from moa.view.queries import (
    check_costs,
    is_code,
    item_detail,
    judge_costs,
    setup_costs,
    stored_item,
    vote_tally,
)
from moa.view.voting import (
    PairMode,
    VoteQueue,
    build_pairs,
    pair_view,
    reveal,
    side_secret,
    unreadable_items,
)

__all__ = ["LOOPBACK", "create_app"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BODY_BYTES = 16 * 1024
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "content-security-policy": _CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class ViewError(Exception):
    """An API error: the status and one line naming the culprit."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- request shapes ------------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid")


class ItemsParams(BaseModel):
    """The items table's query string."""

    model_config = _STRICT

    setup: str | None = None
    """The setup compared with the baseline (filters and sort); default the first one."""
    outcome: Literal["all", "win", "loss", "tie", "disagree", "error"] = "all"
    category: str | None = None
    q: str = Field("", max_length=500)
    """Text searched in the input (every turn) and the item id, case-insensitive."""
    sort: Literal["order", "id", "category", "delta", "score", "cost", "latency"] = "order"
    order: Literal["asc", "desc"] = "asc"
    offset: int = Field(0, ge=0)
    limit: int = Field(50, ge=1, le=500)


class ItemParams(ItemsParams):
    """An item page's query string: the item, its sample, and the list it was opened from."""

    id: str = Field(min_length=1, max_length=2000)
    sample: int = Field(0, ge=0)


class VoteBody(BaseModel):
    model_config = _STRICT

    token: str = Field(min_length=1, max_length=64)
    verdict: Literal["A>>B", "A>B", "A=B", "B>A", "B>>A"]


class TokenBody(BaseModel):
    model_config = _STRICT

    token: str = Field(min_length=1, max_length=64)


class EmptyBody(BaseModel):
    model_config = _STRICT


def _problem(e: ValidationError, where: str) -> str:
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    if err["type"] == "extra_forbidden":
        return f"{where} `{field}` is not one this endpoint reads"
    return f"{where} `{field}`: {err['msg']}"


def _params(request: Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as e:
        raise ViewError(400, _problem(e, "query parameter")) from None


async def _body(request: Request, model: type[BaseModel]) -> Any:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ViewError(415, "send the body as JSON (content-type: application/json)")
    # read in chunks up to the limit: a body of gigabytes is refused, never held in memory
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ViewError(413, f"body of more than {MAX_BODY_BYTES} bytes; at most {MAX_BODY_BYTES}")
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise ViewError(400, "the body is not JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ViewError(400, _problem(e, "body field")) from None


def _finite(data: Any, path: str, bad: list[str]) -> Any:
    """``data`` with every infinite or NaN number (which JSON cannot carry) set to None; their
    paths in ``bad``."""
    if isinstance(data, float) and not math.isfinite(data):
        bad.append(path or "the value")
        return None
    if isinstance(data, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), bad) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v, f"{path}[{i}]", bad) for i, v in enumerate(data)]
    return data


def _json(data: Any, status: int = 200) -> JSONResponse:
    try:
        return JSONResponse(data, status_code=status, headers=_SECURITY_HEADERS)
    except ValueError:
        # a store holding an infinite number (a broken or hand-edited file) must not take the page
        # down: the number shows as missing, and the page says where it was
        bad: list[str] = []
        clean = _finite(data, "", bad)
        if isinstance(clean, dict) and bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            clean["warnings"] = [
                f"the store holds numbers that are not finite, shown as —: {', '.join(bad[:3])}{more}"
            ]
        return JSONResponse(clean, status_code=status, headers=_SECURITY_HEADERS)


# -- the app ---------------------------------------------------------------------------------------


class Viewer:
    """The app's state: the catalog, the voting queues, the static files."""

    def __init__(self, catalog: Catalog, *, voter: str | None, pairs: PairMode) -> None:
        self.catalog = catalog
        self.voter = voter
        self.pairs = pairs
        self.queues: dict[str, VoteQueue] = {}
        folder = resources.files("moa.view") / "static"
        self.static = {
            f.name: f.read_bytes() for f in folder.iterdir() if f.is_file() and Path(f.name).suffix in _TYPES
        }

    def folder(self, request: Request) -> ExperimentFolder:
        key = request.path_params["key"]
        found = self.catalog.get(key)
        if found is None:
            self.catalog.refresh()
            found = self.catalog.get(key)
        if found is None:
            known = ", ".join(self.catalog.folders) or "none"
            raise ViewError(404, f"no experiment `{key}` here (experiments: {known})")
        return found

    # -- pages and assets ----------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return Response(self.static["index.html"], media_type=_TYPES[".html"], headers=_SECURITY_HEADERS)

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = self.static.get(name)
        if body is None:
            raise ViewError(404, f"no asset `{name}`")
        return Response(body, media_type=_TYPES[Path(name).suffix], headers=_SECURITY_HEADERS)

    # -- browsing --------------------------------------------------------------------------------

    async def config(self, request: Request) -> Response:
        self.catalog.refresh()
        experiments = []
        for key, f in self.catalog.folders.items():
            entry: dict[str, Any] = {"key": key, "folder": str(f.folder)}
            try:
                m = f.manifest
                entry.update(
                    name=m["experiment"],
                    n_items=len(m["item_ids"]),
                    setups=[s["name"] for s in m["setups"]],
                    evaluator=m["evaluator"].get("name"),
                )
            except UserError as e:
                entry["error"] = str(e).splitlines()[0]
            experiments.append(entry)
        mode = "vote" if self.voter else "browse"
        return _json({"mode": mode, "voter": self.voter, "pairs": self.pairs, "experiments": experiments})

    async def overview(self, request: Request) -> Response:
        f = self.folder(request)
        self.blind(f, "the overview")
        m = f.manifest
        summary, source = f.summary()

        def costs() -> dict[str, Any]:
            out = {}
            for s in m["setups"]:
                check_costs(f.store, s["name"], s["hash"])
                c = setup_costs(f.store.conn, s["name"], s["hash"])
                c["judge"] = judge_costs(f.store.conn, m["evaluator_id"], s["name"], s["hash"])
                out[s["name"]] = c
            return out

        names = [s["name"] for s in m["setups"]]
        base = next(s["name"] for s in m["setups"] if s["is_baseline"])
        return _json(
            {
                "key": f.key,
                "folder": str(f.folder),
                "experiment": m["experiment"],
                "evaluator": m["evaluator"],
                "pairwise": bool(m.get("pairwise")),
                "samples": int(m.get("samples", 1)),
                "summary": summary.to_dict(),
                "summary_source": source,
                # report.md's lines under its table (costs known only up to a bound, failed runs)
                "notes": headline_findings(summary),
                "costs": f.cached("costs", costs),
                "votes": f.cached("votes", lambda: vote_tally(f.store, m, names, base)),
            }
        )

    def index_of(self, f: ExperimentFolder) -> ItemIndex:
        return f.cached("items", lambda: ItemIndex.build(f.store, f.manifest))

    def query(self, index: ItemIndex, p: ItemsParams) -> ItemQuery:
        if p.setup is None:
            k = next((i for i in range(len(index.setups)) if i != index.baseline), index.baseline)
        elif p.setup in index.setups:
            k = index.setups.index(p.setup)
        else:
            raise ViewError(
                400, f"query parameter `setup`: unknown setup `{p.setup}` (setups: {', '.join(index.setups)})"
            )
        if p.category is not None and p.category not in index.categories:
            known = ", ".join(index.categories) or "none"
            raise ViewError(
                400, f"query parameter `category`: no category `{p.category}` (categories: {known})"
            )
        return ItemQuery(
            setup=k,
            outcome=p.outcome,
            category=p.category,
            text=p.q,
            sort=p.sort,
            descending=p.order == "desc",
            offset=p.offset,
            limit=p.limit,
        )

    async def items(self, request: Request) -> Response:
        f = self.folder(request)
        self.blind(f, "the items list")
        p: ItemsParams = _params(request, ItemsParams)
        index = self.index_of(f)
        q = self.query(index, p)
        page = index.page(q)
        page.update(
            setups=index.setups,
            baseline=index.setups[index.baseline],
            setup=index.setups[q.setup],
            pairwise=index.pairwise,
            samples=int(f.manifest.get("samples", 1)),
            categories=index.categories,
            outcomes=list(OUTCOMES),
            sorts=list(SORTS),
        )
        return _json(page)

    async def item(self, request: Request) -> Response:
        f = self.folder(request)
        p: ItemParams = _params(request, ItemParams)
        self.blind(f, f"item `{p.id}`", item_id=p.id)
        m = f.manifest
        samples = int(m.get("samples", 1))
        if p.sample >= samples:
            # checked here: SQLite refuses integers past 2**63 with an OverflowError
            raise ViewError(
                400,
                f"query parameter `sample`: {p.sample} is not one of the experiment's samples (0..{samples - 1})",
            )
        detail = item_detail(f.store, m, p.id, p.sample)
        if detail is None:
            raise ViewError(404, f"item `{p.id}` is not in experiment `{m['experiment']}`")
        index = self.index_of(f)
        detail["nav"] = index.neighbours(p.id, self.query(index, p))
        detail.update(
            experiment=m["experiment"],
            evaluator=m["evaluator"],
            pairwise=bool(m.get("pairwise")),
            baseline=index.setups[index.baseline],
        )
        for entry, s in zip(detail["runs"], m["setups"], strict=True):
            run = entry["run"]
            if run is not None:
                run["graph"] = layout(run["calls"], self._topology(f, s))
        return _json(detail)

    def _topology(self, f: ExperimentFolder, setup: dict[str, Any]) -> tuple[Deps, str] | None:
        """The setup's stored topology, looked for beside the dataset, here, and by the folder."""
        dataset = Path(str(f.manifest.get("dataset", "")))
        folders = [dataset.parent, Path.cwd(), f.folder, f.folder.parent]
        return f.cached(f"topology:{setup['name']}", partial(stored_topology, setup, folders))

    # -- voting ----------------------------------------------------------------------------------

    def queue(self, f: ExperimentFolder) -> tuple[VoteQueue, str]:
        if self.voter is None:
            raise ViewError(403, "voting is off: start the viewer with `moa view DIR --vote --voter NAME`")
        m = f.manifest
        # rebuilt when another process commits: a run still going brings new pairs
        pairs = f.cached("pairs", lambda: build_pairs(f.store, m, self.pairs))
        q = self.queues.get(f.key)
        if q is None:
            q = VoteQueue(self.voter, pairs, seed=m["experiment"], secret=side_secret(f.store))
            self.queues[f.key] = q
        else:
            q.refresh(pairs)
        return q, self.voter

    def blind(self, f: ExperimentFolder, what: str, *, item_id: str | None = None) -> None:
        """Refuse results that would tell the voter which answer is which setup's before the vote:
        an item with a pair still to vote, and while any pair is left, the overview and the list
        (their scores per item and per category point at the better answer)."""
        if self.voter is None:
            return
        q, voter = self.queue(f)
        voted = voted_pairs(f.store, voter)
        left = [p for p in q.order if p.key not in voted and (item_id is None or p.item_id == item_id)]
        if left:
            raise ViewError(
                403,
                f"{what} stays hidden while you vote ({len(left)} blind pair{'s' * (len(left) != 1)} "
                "left to vote on); it shows once they are voted, or in a viewer started without --vote",
            )

    def _progress(self, f: ExperimentFolder, q: VoteQueue, voter: str) -> dict[str, Any]:
        voted = voted_pairs(f.store, voter)
        total = len(q.order)
        done = sum(1 for p in q.order if p.key in voted)
        out: dict[str, Any] = {"voted": done, "total": total, "voter": voter}
        broken = sorted(
            set(f.manifest["item_ids"]) & f.cached("unreadable", lambda: unreadable_items(f.store))
        )
        if broken:
            shown = ", ".join(f"`{i}`" for i in broken[:3]) + (
                f" and {len(broken) - 3} more" if len(broken) > 3 else ""
            )
            out["left_out"] = f"{len(broken)} item(s) left out: their stored data cannot be read ({shown})"
        return out

    async def vote_next(self, request: Request) -> Response:
        f = self.folder(request)
        q, voter = self.queue(f)
        pair = q.next(voted_pairs(f.store, voter))
        progress = self._progress(f, q, voter)
        if pair is None:
            return _json({"pair": None, "progress": progress})
        item = stored_item(f.store, pair.item_id) or {}
        view = pair_view(
            f.store,
            f.manifest,
            pair,
            q.left(pair),
            q.token(pair),
            code=is_code(item, f.manifest["evaluator"]),
        )
        return _json({"pair": view, "progress": progress})

    def _pair(self, q: VoteQueue, token: str) -> Any:
        pair = q.pair(token)
        if pair is None:
            raise ViewError(404, f"no pair with token `{token}` (reload the page for the next pair)")
        return pair

    async def vote(self, request: Request) -> Response:
        f = self.folder(request)
        q, voter = self.queue(f)
        body: VoteBody = await _body(request, VoteBody)
        pair = self._pair(q, body.token)
        vote_id = add_vote(
            f.store,
            item_id=pair.item_id,
            sample=pair.sample,
            setup=pair.setup,
            other_setup=pair.other_setup,
            left_setup=q.left(pair),
            verdict=body.verdict,
            voter=voter,
        )
        q.cast.append((vote_id, pair))
        f.forget("votes")
        lg = log.logger()
        if lg is not None:
            lg.info("view.vote", experiment=f.key, item=pair.item_id, verdict=body.verdict)
        shown = reveal(f.store, f.manifest, pair, q.left(pair), body.verdict)
        return _json({"vote_id": vote_id, "reveal": shown, "progress": self._progress(f, q, voter)})

    async def skip(self, request: Request) -> Response:
        f = self.folder(request)
        q, _ = self.queue(f)
        body: TokenBody = await _body(request, TokenBody)
        q.skip(self._pair(q, body.token))
        return _json({"skipped": body.token})

    async def undo(self, request: Request) -> Response:
        f = self.folder(request)
        q, voter = self.queue(f)
        await _body(request, EmptyBody)
        while q.cast:
            vote_id, pair = q.cast.pop()
            if delete_vote(f.store, vote_id, voter=voter) is not None:
                f.forget("votes")
                if pair in q.skipped:
                    q.skipped.remove(pair)
                if pair in q.order:
                    # the pair comes back first
                    q.order.remove(pair)
                    q.order.insert(0, pair)
                return _json({"undone": vote_id})
        raise ViewError(409, "nothing to undo: no vote of yours from this session is left")


def create_app(
    root: str | Path,
    *,
    voter: str | None = None,
    pairs: PairMode = "baseline",
    allowed_hosts: list[str] | None = None,
) -> Starlette:
    """The viewer of the experiment folder ``root`` (or of the experiment folders inside it);
    ``voter`` turns on blind voting under that name. ``allowed_hosts``: the Host header names
    answered (default: loopback names only; ``["*"]`` for any)."""
    catalog = Catalog(Path(root))
    viewer = Viewer(catalog, voter=voter, pairs=pairs)

    def guarded(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except ViewError as e:
                return _json({"error": str(e)}, e.status)
            except UserError as e:
                # a store that cannot be read: the message names its folder
                return _json({"error": str(e).splitlines()[0]}, 500)
            except Exception as e:  # a bug or a store this moa cannot read: say which, keep serving
                lg = log.logger()
                if lg is not None:
                    lg.error("view.error", path=request.url.path, error=f"{type(e).__name__}: {e}")
                first = str(e).splitlines()[0][:300] if str(e) else ""
                return _json({"error": f"{request.url.path}: {type(e).__name__}: {first}"}, 500)

        return run

    routes = [
        Route("/", guarded(viewer.index), methods=["GET"]),
        Route("/static/{name}", guarded(viewer.asset), methods=["GET"]),
        Route("/api/config", guarded(viewer.config), methods=["GET"]),
        Route("/api/e/{key}/overview", guarded(viewer.overview), methods=["GET"]),
        Route("/api/e/{key}/items", guarded(viewer.items), methods=["GET"]),
        Route("/api/e/{key}/item", guarded(viewer.item), methods=["GET"]),
        Route("/api/e/{key}/vote/next", guarded(viewer.vote_next), methods=["GET"]),
        Route("/api/e/{key}/vote", guarded(viewer.vote), methods=["POST"]),
        Route("/api/e/{key}/vote/skip", guarded(viewer.skip), methods=["POST"]),
        Route("/api/e/{key}/vote/undo", guarded(viewer.undo), methods=["POST"]),
    ]
    hosts = allowed_hosts if allowed_hosts is not None else [*LOOPBACK, "[::1]"]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(BrowserGuard, error_body=lambda why: {"error": why}),
            Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
        ],
    )

    async def not_found(request: Request, exc: Exception) -> Response:
        return _json({"error": f"no page `{request.url.path}`"}, 404)

    app.add_exception_handler(404, not_found)
    app.state.viewer = viewer
    return app
