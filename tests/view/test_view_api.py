"""The viewer's JSON API over real experiment folders: the list of experiments, paging, filters and
sorting of the items (also at 10,000 items, from rows built once per store version), one item with
its calls and verdicts, errors that name the culprit, hostile text passed on as data, and the
blind voting endpoints."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from moa.experiment import Store
from moa.experiment.store.votes import iter_votes
from moa.view.cli import allowed_hosts
from tests.raising_logger import RaisingLogger
from tests.view.conftest import BIG_ITEMS, Served, serve
from tests.view.helpers import EVIL, HOSTILE, HOSTILE_ID, N_JUDGED, build_hostile, build_retried


def get(s: Served, path: str, **params: Any) -> httpx.Response:
    return httpx.get(s.url + path, params=params, timeout=30)


def test_config_lists_every_experiment_of_the_folder(viewer: Served) -> None:
    """A folder of experiment folders: each one is listed with its setups and evaluator."""
    cfg = get(viewer, "/api/config").json()
    assert cfg["mode"] == "browse" and cfg["voter"] is None
    found = {e["key"]: e for e in cfg["experiments"]}
    assert set(found) == {"judged", "code", "chat"}
    assert found["judged"]["setups"] == ["single", "moa", "self"] and found["judged"]["n_items"] == N_JUDGED
    assert found["code"]["evaluator"] == "execution"


def test_overview_gives_the_summary_and_costs_by_node_and_model(viewer: Served, experiments: Path) -> None:
    """The overview's costs add up to what the calls table holds, per node and per model."""
    d = get(viewer, "/api/e/judged/overview").json()
    assert d["summary"]["baseline"] == "single" and d["summary_source"] == "summary.json"
    moa = d["costs"]["moa"]
    assert [n["name"] for n in moa["nodes"]] == ["proposer1", "proposer2", "final"]
    conn = sqlite3.connect(experiments / "judged" / "experiment.sqlite")
    total = conn.execute(
        "SELECT SUM(c.cost_usd) FROM calls c JOIN runs r ON r.run_id = c.run_id WHERE r.setup = 'moa'"
    ).fetchone()[0]
    conn.close()
    assert sum(n["cost_usd"] for n in moa["nodes"]) == pytest.approx(total)
    assert sum(m["cost_usd"] for m in moa["models"]) == pytest.approx(total)
    assert {m["name"] for m in moa["models"]} == {"openai/w1-m", "openai/w2-m", "openai/agg-m"}
    assert moa["judge"] and moa["judge"][0]["model"] == "openai/judge-m"
    assert d["votes"]["votes"] == 0


def test_pages_partition_the_items_in_dataset_order(viewer: Served) -> None:
    """limit/offset pages cover every item once, in the dataset's order."""
    seen: list[str] = []
    for offset in range(0, N_JUDGED, 4):
        page = get(viewer, "/api/e/judged/items", limit=4, offset=offset).json()
        assert page["total"] == N_JUDGED and len(page["rows"]) <= 4
        seen += [r["id"] for r in page["rows"]]
    assert seen == [f"q{i}" for i in range(N_JUDGED - 1)] + [HOSTILE_ID]


def _judge_scores(folder: Path, setup: str) -> dict[str, float]:
    conn = sqlite3.connect(folder / "experiment.sqlite")
    rows = conn.execute(
        "SELECT r.item_id, CASE WHEN r.error IS NOT NULL THEN 0 ELSE s.value END FROM runs r "
        "LEFT JOIN scores s ON s.run_id = r.run_id WHERE r.setup = ?",
        (setup,),
    ).fetchall()
    conn.close()
    return {i: float(v) for i, v in rows}


@pytest.mark.parametrize("setup", ["moa", "self"])
def test_outcome_filters_match_the_stored_scores(viewer: Served, experiments: Path, setup: str) -> None:
    """Wins, losses and ties of a setup are its items with a judge score above, below and at 0.5 (a
    failed run is a loss), and the counts shown beside the filters are those lists' lengths."""
    scores = _judge_scores(experiments / "judged", setup)
    expected = {
        "win": {i for i, v in scores.items() if v > 0.5},
        "loss": {i for i, v in scores.items() if v < 0.5},
        "tie": {i for i, v in scores.items() if v == 0.5},
    }
    assert expected["loss"], "the fixture must have losses to filter"
    for outcome, ids in expected.items():
        page = get(viewer, "/api/e/judged/items", setup=setup, outcome=outcome).json()
        assert {r["id"] for r in page["rows"]} == ids, outcome
        assert page["counts"][outcome] == len(ids) == page["total"]
        assert all(r["cells"][page["setups"].index(setup)]["outcome"] == outcome for r in page["rows"])


def test_errors_category_search_and_disagreement_filters(viewer: Served, experiments: Path) -> None:
    """Errors keep the items with a failed run; category and text search narrow the list; the
    items where setups disagree are those where some setup is not tied with the baseline."""
    failed = get(viewer, "/api/e/judged/items", outcome="error").json()["rows"]
    conn = sqlite3.connect(experiments / "judged" / "experiment.sqlite")
    errored = {i for (i,) in conn.execute("SELECT item_id FROM runs WHERE error IS NOT NULL")}
    conn.close()
    assert errored and {r["id"] for r in failed} == errored
    geo = get(viewer, "/api/e/judged/items", category="geometry").json()
    assert geo["total"] == 7 and all(r["category"] == "geometry" for r in geo["rows"])
    found = get(viewer, "/api/e/judged/items", q="WHAT IS 12 PLUS").json()
    assert [r["id"] for r in found["rows"]] == ["q12"]
    odd = get(viewer, "/api/e/judged/items", outcome="disagree").json()["rows"]
    assert odd and all(any(c["outcome"] in ("win", "loss") for c in r["cells"]) for r in odd)


def test_sorting_by_delta_puts_the_best_first(viewer: Served) -> None:
    """Sorted by Δ descending, a setup's deltas never increase down the list."""
    rows = get(viewer, "/api/e/judged/items", setup="moa", sort="delta", order="desc").json()["rows"]
    deltas = [r["cells"][1]["delta"] for r in rows]
    assert deltas == sorted(deltas, reverse=True) and len(deltas) == N_JUDGED


def test_an_item_carries_runs_calls_graph_and_both_verdicts(viewer: Served) -> None:
    """An item: every setup's answer, score and calls with their prompts and replies, the graph of
    the topology file, and the judge's verdicts in both orders with their reasoning."""
    d = get(viewer, "/api/e/judged/item", id="q2", setup="moa").json()
    assert d["item"]["input"] == "What is 2 plus 2?" and d["item"]["target"] == "n4"
    moa = next(r for r in d["runs"] if r["setup"] == "moa")["run"]
    by_node = {c["node"]: c for c in moa["calls"]}
    assert by_node["proposer1"]["messages"][-1]["content"] == "What is 2 plus 2?"
    assert by_node["proposer1"]["reply"].startswith("The answer is")
    assert moa["graph"]["source"] == "topology"
    assert {(e["from"], e["to"]) for e in moa["graph"]["edges"]} == {
        ("proposer1", "final"),
        ("proposer2", "final"),
    }
    assert sorted(j["position"] for j in moa["judgments"]) == ["a", "b"]
    assert all("[[" in j["calls"][-1]["reply"] for j in moa["judgments"])
    assert d["nav"] == {"prev": "q1", "next": "q3", "position": 3, "total": N_JUDGED, "filtered": True}
    self_run = next(r for r in d["runs"] if r["setup"] == "self")["run"]
    majority = [n for n in self_run["graph"]["nodes"] if not n["calls"]]
    assert [n["id"] for n in majority] == ["majority"] and majority[0]["output"]


def test_nav_steps_through_the_filtered_list(viewer: Served) -> None:
    """Opened from a filtered list, prev/next stay inside it."""
    losses = [
        r["id"] for r in get(viewer, "/api/e/judged/items", setup="self", outcome="loss").json()["rows"]
    ]
    assert len(losses) >= 2
    d = get(viewer, "/api/e/judged/item", id=losses[0], setup="self", outcome="loss").json()
    assert d["nav"]["next"] == losses[1] and d["nav"]["prev"] is None and d["nav"]["total"] == len(losses)


def test_a_graph_without_its_topology_file_is_inferred_from_the_prompts(
    experiments: Path, tmp_path: Path
) -> None:
    """Moved away from its topology files, the aggregator's edges come from its prompt holding the
    proposers' replies."""
    folder = tmp_path / "judged"
    import shutil

    shutil.copytree(experiments / "judged", folder)
    store = Store.open(folder)
    manifest = store.get_meta("manifest")
    manifest["dataset"] = "/nonexistent/data.jsonl"
    store.set_meta("manifest", manifest)
    store.close()
    with serve(folder) as s:
        d = get(s, "/api/e/judged/item", id="q3").json()
    moa = next(r for r in d["runs"] if r["setup"] == "moa")["run"]["graph"]
    assert moa["source"] == "inferred"
    layers = {n["id"]: n["layer"] for n in moa["nodes"]}
    assert layers["final"] > layers["proposer1"] and layers["final"] > layers["proposer2"]
    assert ("proposer1", "final") in {(e["from"], e["to"]) for e in moa["edges"]}


@pytest.mark.parametrize(
    ("path", "params", "status", "named"),
    [
        (
            "/api/e/judged/item",
            {"id": "no-such-item"},
            404,
            "item `no-such-item` is not in experiment `judged`",
        ),
        ("/api/e/nope/overview", {}, 404, "no experiment `nope`"),
        ("/api/e/judged/items", {"setup": "gpt-9"}, 400, "unknown setup `gpt-9`"),
        ("/api/e/judged/items", {"limit": "0"}, 400, "`limit`"),
        ("/api/e/judged/items", {"outcome": "maybe"}, 400, "`outcome`"),
        ("/api/e/judged/items", {"colour": "red"}, 400, "`colour` is not one this endpoint reads"),
        ("/api/e/judged/items", {"category": "poetry"}, 400, "no category `poetry`"),
        ("/api/e/judged/vote/next", {}, 403, "--vote --voter NAME"),
        ("/api/e/judged/item", {"id": "q1", "sample": "3"}, 400, "`sample`: 3 is not one of"),
        ("/api/e/judged/item", {"id": "q1", "sample": "9" * 20}, 400, "`sample`"),
        ("/static/../../etc/passwd", {}, 404, ""),
    ],
)
def test_errors_name_the_culprit(
    viewer: Served, path: str, params: dict[str, str], status: int, named: str
) -> None:
    """Each refusal is a JSON error whose message names what was wrong."""
    r = get(viewer, path, **params)
    assert r.status_code == status, r.text
    assert named in r.json()["error"]


def test_hostile_text_is_data_and_pages_forbid_inline_script(viewer: Served) -> None:
    """Model output travels as JSON data, byte for byte; every response carries a CSP without
    inline script, and the HTML page embeds no data at all."""
    d = get(viewer, "/api/e/judged/item", id=HOSTILE_ID).json()
    assert d["item"]["id"] == HOSTILE_ID
    answers = [r["run"]["answer"] for r in d["runs"]]
    assert all(HOSTILE in a for a in answers)
    page = get(viewer, "/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "__pwned" not in page.text and page.headers["x-content-type-options"] == "nosniff"


def test_a_host_name_that_is_not_loopback_is_refused(viewer: Served) -> None:
    """DNS rebinding: a page of another site resolved to 127.0.0.1 gets nothing."""
    r = httpx.get(viewer.url + "/api/config", headers={"host": "attacker.example"})
    assert r.status_code == 403 and "not a loopback name" in r.json()["error"]


def test_ten_thousand_items_page_from_rows_built_once(big_viewer: Served) -> None:
    """At 10,000 items the last page, a filter and a search answer from one index built once per
    store version (the same object serves every request)."""
    last = get(big_viewer, "/api/e/big/items", offset=BIG_ITEMS - 7, limit=50).json()
    assert last["total"] == BIG_ITEMS and len(last["rows"]) == 7
    assert last["rows"][-1]["id"] == f"item-{BIG_ITEMS - 1:05d}"
    folder = big_viewer.app.state.viewer.catalog.get("big")
    index = folder.peek("items")
    assert index is not None and len(index.rows) == BIG_ITEMS
    wins = get(big_viewer, "/api/e/big/items", outcome="win", limit=10).json()
    counts = wins["counts"]
    assert counts["win"] + counts["loss"] + counts["tie"] == BIG_ITEMS == counts["all"]
    assert wins["total"] == counts["win"] and len(wins["rows"]) == 10
    found = get(big_viewer, "/api/e/big/items", q="question 4242:").json()
    assert [r["id"] for r in found["rows"]] == ["item-04242"]
    assert folder.peek("items") is index


def test_voting_api_hides_names_then_stores_and_reveals(judged_copy: Path) -> None:
    """The next pair names no setup; a vote is stored under the voter with the side shown first and
    answered with the names; skip, undo, and bodies that are not the vote's shape are refused by name."""
    with serve(judged_copy.parent, voter="carol") as s:
        nxt = get(s, "/api/e/judged/vote/next").json()
        pair = nxt["pair"]
        text = json.dumps(pair)
        assert not any(f'"{name}"' in text for name in ("single", "moa", "self"))
        assert nxt["progress"] == {"voted": 0, "total": nxt["progress"]["total"], "voter": "carol"}
        url = s.url + "/api/e/judged/vote"
        bad = httpx.post(url, content=json.dumps({"token": pair["token"], "verdict": "A>B"}))
        assert bad.status_code == 415
        extra = httpx.post(url, json={"token": pair["token"], "verdict": "A>B", "setup": "moa"})
        assert extra.status_code == 400 and "`setup`" in extra.json()["error"]
        wrong = httpx.post(url, json={"token": pair["token"], "verdict": "A>>>B"})
        assert wrong.status_code == 400 and "`verdict`" in wrong.json()["error"]
        elsewhere = httpx.post(
            url, json={"token": pair["token"], "verdict": "A>B"}, headers={"origin": "http://127.0.0.1:1"}
        )
        assert elsewhere.status_code == 403 and "another origin" in elsewhere.json()["error"]
        unknown = httpx.post(url, json={"token": "nope", "verdict": "A>B"})
        assert unknown.status_code == 404 and "`nope`" in unknown.json()["error"]
        ok = httpx.post(url, json={"token": pair["token"], "verdict": "A>B"}).json()
        assert {ok["reveal"]["a"], ok["reveal"]["b"]} in ({"single", "moa"}, {"single", "self"})
        assert ok["progress"]["voted"] == 1
        second = get(s, "/api/e/judged/vote/next").json()["pair"]
        assert second["token"] != pair["token"]
        assert httpx.post(url + "/skip", json={"token": second["token"]}).status_code == 200
        assert get(s, "/api/e/judged/vote/next").json()["pair"]["token"] != second["token"]
        assert httpx.post(url + "/undo", json={}).json()["undone"] == ok["vote_id"]
        assert get(s, "/api/e/judged/vote/next").json()["pair"]["token"] == pair["token"]
        again = httpx.post(url, json={"token": pair["token"], "verdict": "B>>A"}).json()
        assert again["reveal"]["verdict"] == "B>>A"
    store = Store.open(judged_copy)
    try:
        votes = list(iter_votes(store))
    finally:
        store.close()
    assert len(votes) == 1 and votes[0].voter == "carol" and votes[0].verdict == "B>>A"
    assert votes[0].left_setup == ok["reveal"]["a"]
    # B much better: the setup shown second scores 1
    assert votes[0].value == (0.0 if votes[0].left_setup == votes[0].setup else 1.0)


def test_results_stay_hidden_from_a_voter_until_their_pairs_are_voted(judged_copy: Path) -> None:
    """While voting, the item of a pair still to vote, the items list and the overview (which all tie
    answers to setup names) are refused; an item opens once its pairs are voted, the rest at the end."""
    with serve(judged_copy.parent, voter="mallory") as s:
        pair = get(s, "/api/e/judged/vote/next").json()["pair"]
        item_id = pair["item"]["id"]
        for path, params in [
            ("/api/e/judged/item", {"id": item_id}),
            ("/api/e/judged/items", {}),
            ("/api/e/judged/overview", {}),
        ]:
            r = get(s, path, **params)
            assert r.status_code == 403 and "hidden while you vote" in r.json()["error"], (path, r.text)
        url = s.url + "/api/e/judged/vote"
        own = sum(1 for p in s.app.state.viewer.queues["judged"].order if p.item_id == item_id)
        voted_items: list[str] = []
        while (nxt := get(s, "/api/e/judged/vote/next").json()["pair"]) is not None:
            assert httpx.post(url, json={"token": nxt["token"], "verdict": "A=B"}).status_code == 200
            voted_items.append(nxt["item"]["id"])
            if len(voted_items) == 1:
                assert get(s, "/api/e/judged/items").status_code == 403
            if voted_items.count(item_id) == own:
                # every pair of the item is voted: it shows
                assert get(s, "/api/e/judged/item", id=item_id).status_code == 200
        assert voted_items.count(item_id) == own and len(voted_items) > own
        assert get(s, "/api/e/judged/items").status_code == 200
        assert get(s, "/api/e/judged/overview").status_code == 200


def test_pairs_answered_while_voting_join_the_queue(judged_copy: Path) -> None:
    """A run still going: pairs whose answers are committed after voting began come up next, instead
    of the page saying every pair is voted."""
    conn = sqlite3.connect(judged_copy / "experiment.sqlite")
    conn.execute("CREATE TABLE later AS SELECT * FROM runs WHERE item_id != 'q0'")
    conn.execute("DELETE FROM runs WHERE item_id != 'q0'")
    conn.commit()
    try:
        with serve(judged_copy.parent, voter="erin") as s:
            url = s.url + "/api/e/judged/vote"
            first = get(s, "/api/e/judged/vote/next").json()
            n = first["progress"]["total"]
            assert n >= 1
            while (nxt := get(s, "/api/e/judged/vote/next").json())["pair"] is not None:
                assert (
                    httpx.post(url, json={"token": nxt["pair"]["token"], "verdict": "A>B"}).status_code == 200
                )
            assert nxt["progress"] == {"voted": n, "total": n, "voter": "erin"}
            # the run goes on and commits the other items' answers
            conn.execute("INSERT INTO runs SELECT * FROM later")
            conn.commit()
            more = get(s, "/api/e/judged/vote/next").json()
            assert more["pair"] is not None and more["pair"]["item"]["id"] != "q0"
            assert more["progress"]["voted"] == n and more["progress"]["total"] > n
    finally:
        conn.close()


def test_sides_hang_on_a_secret_kept_in_the_store(judged_copy: Path, tmp_path: Path) -> None:
    """The side shown first is not a hash of names the voter knows: it depends on a secret the store
    keeps, so it stays put across a restart and differs in a copy that made its own secret."""
    import shutil

    copy = tmp_path / "copy" / "judged"
    shutil.copytree(judged_copy, copy)

    def sides(folder: Path) -> dict[Any, str]:
        with serve(folder.parent, voter="zoe") as s:
            nxt = get(s, "/api/e/judged/vote/next").json()["pair"]
            q = s.app.state.viewer.queues["judged"]
            shown = {p.key: q.left(p) for p in q.order}
            ok = httpx.post(s.url + "/api/e/judged/vote", json={"token": nxt["token"], "verdict": "A=B"})
            assert ok.json()["reveal"]["a"] == q.left(q.pair(nxt["token"]))
            httpx.post(s.url + "/api/e/judged/vote/undo", json={})
        return shown

    first = sides(judged_copy)
    assert sides(judged_copy) == first
    store = Store.open(judged_copy)
    try:
        secret = store.get_meta("vote_side_secret")
    finally:
        store.close()
    assert isinstance(secret, str) and len(secret) == 32
    assert sides(copy) != first


def test_text_search_reads_past_a_nul_in_the_input(tmp_path: Path) -> None:
    """An input holding a NUL is searched whole (SQLite's json_extract would end it at the NUL)."""
    build_hostile(tmp_path / "evil")
    with serve(tmp_path / "evil") as s:
        after = EVIL["answer"].split("\x00")[1].strip()[:12]
        found = get(s, "/api/e/evil/items", q=after).json()
        assert found["total"] == 2, after
        assert "\x00" in found["rows"][0]["preview"]


def test_a_summary_json_behind_the_store_gives_way_to_the_store(judged_copy: Path) -> None:
    """A run that went on after summary.json was written (a resumed `moa compare`): the overview
    computes the summary from the store and says why, instead of showing the file's old numbers."""
    import asyncio

    from moa.experiment import rebuild_report

    conn = sqlite3.connect(judged_copy / "experiment.sqlite")
    try:
        conn.execute(
            "CREATE TABLE later AS SELECT * FROM runs WHERE item_id IN ('q3', 'q4') AND setup = 'moa'"
        )
        conn.execute("DELETE FROM runs WHERE item_id IN ('q3', 'q4') AND setup = 'moa'")
        conn.commit()
        asyncio.run(rebuild_report(judged_copy))
        conn.execute("INSERT INTO runs SELECT * FROM later")
        conn.commit()
    finally:
        conn.close()
    with serve(judged_copy.parent) as s:
        d = get(s, "/api/e/judged/overview").json()
    assert "summary.json is behind it: `moa` has 14 runs stored, 12 in the file" in d["summary_source"]
    assert {x["name"]: x["runs"] for x in d["summary"]["setups"]}["moa"] == N_JUDGED


@pytest.mark.parametrize(
    ("manifest", "says"),
    [
        ("{not json", "the store's manifest is not JSON"),
        (json.dumps({"setups": [{"name": "a"}]}), "the store's manifest `experiment`: Field required"),
    ],
)
def test_a_broken_manifest_is_named_and_the_other_experiments_still_show(
    experiments: Path, tmp_path: Path, manifest: str, says: str
) -> None:
    """One experiment folder whose manifest is not JSON, or lacks a field: the list of experiments
    still opens (that one with its error), and its pages name the folder and the field."""
    import shutil

    for name in ("judged", "broken"):
        shutil.copytree(experiments / "judged", tmp_path / name)
    conn = sqlite3.connect(tmp_path / "broken" / "experiment.sqlite")
    try:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'manifest'", (manifest,))
        conn.commit()
    finally:
        conn.close()
    with serve(tmp_path) as s:
        listed = {e["key"]: e for e in get(s, "/api/config").json()["experiments"]}
        assert listed["judged"]["n_items"] == N_JUDGED
        assert listed["broken"]["error"] == f"{tmp_path / 'broken'}: {says}"
        for page in ("overview", "items"):
            r = get(s, f"/api/e/broken/{page}")
            assert r.status_code == 500 and r.json()["error"] == f"{tmp_path / 'broken'}: {says}"


def test_an_item_stored_broken_is_named_and_voting_goes_on(judged_copy: Path) -> None:
    """An item whose stored data is not a JSON object (a broken store): its page names it, and the
    voter votes every other pair, told which item was left out (it used to stop voting with a 500)."""
    conn = sqlite3.connect(judged_copy / "experiment.sqlite")
    try:
        conn.execute("UPDATE items SET data = '{broken' WHERE item_id = 'q1'")
        conn.commit()
    finally:
        conn.close()
    with serve(judged_copy.parent) as s:
        r = get(s, "/api/e/judged/item", id="q1")
        assert r.status_code == 500 and r.json()["error"].startswith("item `q1`: its stored data is not")
    with serve(judged_copy.parent, voter="val") as s:
        seen: set[str] = set()
        while (nxt := get(s, "/api/e/judged/vote/next")).json()["pair"] is not None:
            pair = nxt.json()["pair"]
            seen.add(pair["item"]["id"])
            httpx.post(s.url + "/api/e/judged/vote", json={"token": pair["token"], "verdict": "A=B"})
        progress = nxt.json()["progress"]
        assert "q1" not in seen and len(seen) >= N_JUDGED - 2
        assert progress["voted"] == progress["total"]
        assert progress["left_out"] == "1 item(s) left out: their stored data cannot be read (`q1`)"


def test_an_oversized_body_is_refused_before_it_is_read_whole(judged_copy: Path) -> None:
    """A POST body past the limit is answered 413 after the first chunks past it: the rest is never
    read into memory (a body of gigabytes used to be buffered whole before the check)."""
    import asyncio

    from moa.view import create_app

    app = create_app(judged_copy, voter="ola")
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b" " * 8192, "more_body": pulled < 10_000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/e/judged/vote/undo",
        "raw_path": b"/api/e/judged/vote/undo",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert pulled < 10, pulled


def test_an_experiment_started_after_the_viewer_shows_up(experiments: Path, tmp_path: Path) -> None:
    """A `moa compare --out` into the viewed folder after the viewer started: the list of experiments
    and the new experiment's pages find it without a restart."""
    import shutil

    shutil.copytree(experiments / "judged", tmp_path / "first")
    with serve(tmp_path) as s:
        assert [e["key"] for e in get(s, "/api/config").json()["experiments"]] == ["first"]
        shutil.copytree(experiments / "judged", tmp_path / "second")
        assert [e["key"] for e in get(s, "/api/config").json()["experiments"]] == ["first", "second"]
        shutil.copytree(experiments / "judged", tmp_path / "third")
        assert get(s, "/api/e/third/items").json()["total"] == N_JUDGED


def test_a_logger_that_raises_costs_a_vote_not_its_reply(judged_copy: Path) -> None:
    """`view.vote` called the logger bare: one that raised turned a stored vote's reply into a 500
    (and `view.error`'s own call raised again), so the voter saw a failure for a vote that counted."""
    from moa import log

    previous = log.logger()
    log.use_logger(RaisingLogger())
    try:
        with serve(judged_copy.parent, voter="dora") as s:
            pair = get(s, "/api/e/judged/vote/next").json()["pair"]
            r = httpx.post(s.url + "/api/e/judged/vote", json={"token": pair["token"], "verdict": "A>B"})
    finally:
        log.use_logger(previous)
    assert r.status_code == 200 and r.json()["progress"]["voted"] == 1


def test_an_item_offers_only_the_experiments_samples(tmp_path: Path) -> None:
    """A store filled under a larger `samples` keeps the extra runs: the item page offers the
    samples the experiment has, not one whose link answers 400."""
    out = tmp_path / "exps" / "retried"
    build_retried(out)
    conn = sqlite3.connect(out / "experiment.sqlite")
    try:
        conn.execute(
            "INSERT INTO runs(setup, topo_hash, item_id, input_hash, answer, cost_usd, latency_s, "
            "critical_path_s, prompt_tokens, completion_tokens, n_calls, finished_at, sample, cost_usd_max, "
            "unknown_attempts) SELECT setup, topo_hash, item_id, input_hash, answer, cost_usd, latency_s, "
            "critical_path_s, prompt_tokens, completion_tokens, n_calls, finished_at, 1, cost_usd_max, "
            "unknown_attempts FROM runs WHERE run_id = 1"
        )
        conn.commit()
    finally:
        conn.close()
    with serve(out.parent) as s:
        d = get(s, "/api/e/retried/item", id="r1").json()
        assert d["samples"] == [0]
        for k in d["samples"]:
            assert get(s, "/api/e/retried/item", id="r1", sample=k).status_code == 200


def test_a_server_shared_on_every_interface_still_refuses_dns_rebinding(experiments: Path) -> None:
    """``--host 0.0.0.0`` answers any Host name from other machines, but a request that arrives on a
    loopback interface (the user's own browser) with a name that is no loopback one is a web page's
    rebound name: refused, as on a server bound to 127.0.0.1."""
    with serve(experiments, allowed_hosts=allowed_hosts("0.0.0.0")) as s:
        rebound = httpx.get(s.url + "/api/config", headers={"host": "rebind.example"}, timeout=30)
        assert rebound.status_code == 403 and "not a loopback name" in rebound.json()["error"]
        assert get(s, "/api/config").status_code == 200


def test_a_malformed_origin_is_refused_not_a_server_error(judged_copy: Path) -> None:
    """An ``Origin`` no URL parser reads (``http://[::1``) names no origin of this server's: a 403
    like any other origin, not a 500 naming a ValueError."""
    with serve(judged_copy.parent, voter="carol") as s:
        r = httpx.post(
            s.url + "/api/e/judged/vote/skip", json={}, headers={"origin": "http://[::1"}, timeout=30
        )
        assert r.status_code == 403 and "another origin" in r.json()["error"], r.text
