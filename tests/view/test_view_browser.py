"""The viewer in a real browser (headless Chromium): the overview with its table, chart and costs;
filtering the items to losses and opening one; a proposer's prompt and reply; j/k between items;
hostile answers shown as text; five blind votes by click and by key landing in the store and in the
rebuilt report; and the 10,000-item experiment opening. Each page is saved as a screenshot under the
test's tmp folder."""

from __future__ import annotations

import asyncio
import functools
import http.server
import re
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from moa.experiment import Store, rebuild_report
from moa.experiment.report.text import table_rows
from moa.experiment.store.votes import iter_votes
from tests.view.conftest import BIG_ITEMS, Served, off_loop, serve
from tests.view.helpers import (
    EVIL,
    HOSTILE,
    HOSTILE_ID,
    build_both_failed,
    build_hostile,
    build_one_sample_failed,
    build_qa,
    build_retried,
    build_sixteenths,
)

expect: Any = pytest.importorskip("playwright.sync_api").expect


def shot(page: Any, folder: Path, name: str) -> Path:
    """A full-page screenshot, taken from the top (the header is sticky)."""
    folder.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_the_home_page_lists_the_experiments(page: Any, viewer: Served, tmp_path: Path) -> None:
    """A folder of experiments opens on their list; a name leads to its overview."""
    page.goto(viewer.url + "/")
    rows = page.locator("main table tbody tr")
    expect(rows).to_have_count(3)
    shot(page, tmp_path, "home.png")
    page.get_by_role("link", name="judged").click()
    expect(page.locator("main h1")).to_have_text("judged")


def test_overview_shows_the_headline_chart_categories_and_costs(
    page: Any, viewer: Served, tmp_path: Path
) -> None:
    """The headline table has one row per setup with the Pareto mark; hovering a point of the chart
    shows that setup's figures; categories and costs per node and per model follow."""
    page.goto(viewer.url + "/#/e/judged/overview")
    headline = page.locator("table.headline tbody tr")
    expect(headline).to_have_count(3)
    expect(headline.nth(0)).to_contain_text("single")
    expect(page.locator("table.headline thead")).to_contain_text("cost × single")
    page.locator("svg.chart g.point[data-setup='moa'] circle.dot").hover()
    tip = page.locator(".tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("moa")
    expect(tip).to_contain_text("cost × single")
    expect(tip).to_contain_text("quality")
    path = shot(page, tmp_path, "overview.png")
    expect(page.locator("section", has_text="Per category")).to_contain_text("geometry")
    costs = page.locator(".cost-card[data-setup='moa']")
    expect(costs).to_contain_text("proposer1")
    expect(costs).to_contain_text("openai/agg-m")
    expect(costs).to_contain_text("openai/judge-m")
    assert path.stat().st_size > 10_000


def test_filter_to_losses_open_one_and_read_a_proposer(page: Any, viewer: Served, tmp_path: Path) -> None:
    """Losses of `self`, then the first one: its answers side by side, the `moa` proposer's prompt and
    reply on a click of its node, j/k to the next and back, u to the list."""
    page.goto(viewer.url + "/#/e/judged/items")
    page.select_option("#f-setup", "self")
    expect(page.locator("#f-setup")).to_have_value("self")
    page.locator("a[data-outcome='loss']").click()
    expect(page.locator("a[data-outcome='loss']")).to_have_class(re.compile(r"\bon\b"))
    rows = page.locator("table.items tbody tr")
    expect(rows).to_have_count(4)
    cells = page.locator("table.items tbody tr td.cell.loss")
    expect(cells).not_to_have_count(0)
    for i in range(4):
        expect(rows.nth(i).locator("td.cell").last).to_have_class(re.compile(r"\bloss\b"))
    shot(page, tmp_path, "items-losses.png")
    first = rows.nth(0).get_attribute("data-id")
    second = rows.nth(1).get_attribute("data-id")
    rows.nth(0).locator("td.preview").click()
    expect(page.locator("#position")).to_contain_text("1 / 4")
    expect(page.locator("main h1")).to_contain_text(str(first))
    expect(page.locator(".answer-card")).to_have_count(3)
    trace = page.locator(".trace[data-setup='moa']")
    expect(trace).to_be_visible()  # the first setup's trace is the tab open
    trace.locator("g.node[data-node='proposer1']").click()
    detail = trace.locator(".node-detail")
    expect(detail).to_contain_text("Node proposer1")
    expect(detail.locator(".msg pre")).to_contain_text(re.compile(r"What is \d+ plus \d+\?"))
    expect(detail.locator("pre.reply")).to_contain_text("The answer is")
    expect(detail).to_contain_text("1 attempt")
    shot(page, tmp_path, "item.png")
    page.locator("button.tab[data-setup='self']").click()
    expect(trace).to_be_hidden()
    expect(page.locator(".trace[data-setup='self'] .node-detail")).to_contain_text("made no model call")
    page.keyboard.press("j")
    expect(page.locator("#position")).to_contain_text("2 / 4")
    expect(page.locator("main h1")).to_contain_text(str(second))
    page.keyboard.press("k")
    expect(page.locator("#position")).to_contain_text("1 / 4")
    page.keyboard.press("u")
    expect(page.locator("a[data-outcome='loss']")).to_have_class(re.compile(r"\bon\b"))
    page.keyboard.press("?")
    expect(page.locator("#help")).to_contain_text("open the selected item")


def test_hostile_text_shows_as_text(page: Any, viewer: Served, tmp_path: Path) -> None:
    """An answer and an input holding <script> and an onerror image show as text: nothing runs and
    no element is made from them."""
    page.goto(viewer.url + "/#/e/judged/item/" + quote(HOSTILE_ID, safe=""))
    expect(page.locator("main h1")).to_have_text(f"Item {HOSTILE_ID}")
    answer = page.locator(".answer-card[data-setup='moa'] pre.answer")
    expect(answer).to_contain_text(HOSTILE)
    expect(page.locator("pre.input")).to_contain_text(HOSTILE)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img").count() == 0
    page.goto(viewer.url + "/#/e/judged/items?q=repeat")
    expect(page.locator("table.items tbody tr")).to_have_count(1)
    expect(page.locator("td.preview")).to_contain_text("<script>")
    assert page.evaluate("window.__pwned") is None
    shot(page, tmp_path, "hostile.png")
    # the id survives the trip through a link and back
    page.locator("a.item-link").click()
    expect(page.locator("main h1")).to_have_text(f"Item {HOSTILE_ID}")
    expect(page.locator("#position")).to_contain_text("1 / 1")


def test_multi_turn_and_code_items(page: Any, viewer: Served, tmp_path: Path) -> None:
    """A multi-turn item shows every user turn and each setup's answer per turn; a code item shows
    each answer's execution result."""
    page.goto(viewer.url + "/#/e/chat/item/81")
    expect(page.locator("ol.turns li")).to_have_count(2)
    good = page.locator(".answer-card[data-setup='good']")
    expect(good).to_contain_text("Answer, turn 2")
    expect(good).to_contain_text("GOOD second answer from good")
    expect(page.locator(".judgment")).to_have_count(4)
    shot(page, tmp_path, "chat.png")
    page.goto(viewer.url + "/#/e/code/item/add_wrong")
    base = page.locator(".answer-card[data-setup='base']")
    expect(base).to_contain_text("Execution result")
    expect(base.locator("pre.detail")).to_contain_text("tests failed: AssertionError")
    expect(page.locator(".answer-card[data-setup='coder'] pre.detail")).to_have_text("passed")
    shot(page, tmp_path, "code.png")


def test_a_qa_item_shows_every_accepted_answer(page: Any, tmp_path: Path) -> None:
    """An NQ-open item lists each answer that scores, not only its first (the `target`)."""
    off_loop(lambda: build_qa(tmp_path / "src", tmp_path / "exps" / "qa"))
    with serve(tmp_path / "exps") as s:
        page.goto(s.url + "/#/e/qa/item/q1")
        expect(page.locator(".label", has_text="Accepted answers")).to_have_count(1)
        expect(page.locator("pre.target")).to_have_text("Leonardo da Vinci\nda Vinci")
        shot(page, tmp_path, "qa.png")


def test_each_attempt_shows_its_cost_and_tier(page: Any, tmp_path: Path) -> None:
    """A call retried after a timeout and a rejected `flex` reply to a `default` answer lists each
    attempt's bill and tier; the timeout's bill is unknown (the run's cost says up to what), and an
    attempt stored before attempts kept their cost shows none, not $0."""
    build_retried(tmp_path / "exps" / "retried")
    with serve(tmp_path / "exps") as s:
        page.goto(s.url + "/#/e/retried/item/r1")
        trace = page.locator(".trace[data-setup='tiered']")
        trace.locator("g.node[data-node='answer']").click()
        table = trace.locator("table.attempts")
        expect(table.locator("thead")).to_contain_text("cost")
        expect(table.locator("thead")).to_contain_text("tier")
        rows = table.locator("tbody tr")
        expect(rows).to_have_count(3)
        # the timeout may be billed: the run's cost is known up to its worst case
        metrics = page.locator(".answer-card[data-setup='tiered'] .metrics")
        expect(metrics).to_contain_text("$0.0046 (known; up to $0.0146)")
        expect(page.locator(".answer-card[data-setup='single'] .metrics")).not_to_contain_text("up to")
        expect(rows.nth(0).locator("td").nth(4)).to_have_text("unknown")
        expect(rows.nth(1)).to_contain_text("$0.0012")
        expect(rows.nth(1)).to_contain_text("flex")
        expect(rows.nth(2)).to_contain_text("$0.0034")
        expect(rows.nth(2)).to_contain_text("default")
        shot(page, tmp_path, "attempts.png")
        page.locator("button.tab[data-setup='single']").click()
        old = page.locator(".trace[data-setup='single'] table.attempts")
        expect(old.locator("tbody tr")).to_have_count(1)
        expect(old.locator("tbody tr td").nth(4)).to_have_text("—")
        expect(old.locator("thead")).not_to_contain_text("tier")


def test_the_overview_says_what_the_report_says_under_its_table(page: Any, tmp_path: Path) -> None:
    """A setup whose cost is known only up to a bound (an attempt timed out): the overview's notes
    carry report.md's line for it, not only the known cost."""
    out = tmp_path / "exps" / "retried"
    build_retried(out)
    off_loop(lambda: asyncio.run(rebuild_report(out)))
    line = "tiered: cost $0.004600 known, up to $0.014600"
    assert line in (out / "report.md").read_text()
    with serve(out.parent) as s:
        page.goto(s.url + "/#/e/retried/overview")
        expect(page.locator("section", has_text="Notes")).to_contain_text(line)


def test_the_headline_shows_the_digits_of_the_report(page: Any, tmp_path: Path) -> None:
    """Figures exactly halfway between two printed digits (5 of 16 items: 0.3125; a ratio of 1.125)
    and p-values read on the page as in report.md, which rounds them to the even digit."""
    out = tmp_path / "exps" / "sixteenths"
    build_sixteenths(out)
    summary = off_loop(lambda: asyncio.run(rebuild_report(out)))
    expected = [[c.replace(" *", " ★") for c in row] for row in table_rows(summary)]
    assert expected[0][6] == "0.312" and expected[1][3] == "1.12×"  # the halfway cases are there
    with serve(out.parent) as s:
        page.goto(s.url + "/#/e/sixteenths/overview")
        rows = page.locator("table.headline tbody tr")
        expect(rows).to_have_count(2)
        shown = [[c.replace("−", "-") for c in rows.nth(i).locator("td").all_inner_texts()] for i in range(2)]
        assert shown == expected
        values = [
            0.3125,
            0.0625,
            1.125,
            0.8125,
            0.6875,
            0.03125,
            1e-5,
            1.5e-7,
            0.05,
            1.0,
            0.999999,
            2.5e-4,
            0.0,
        ]
        got = page.evaluate(
            "(vs) => vs.map((v) => [MOA.fmt.num(v), MOA.fmt.x(v), MOA.fmt.p(v), MOA.fmt.usd(v)])", values
        )
        # tokens per correct answer, halfway between two whole tokens
        halves = [1234.5, 2469.5, 0.5, 1.5, 12345678.5]
        assert page.evaluate("(vs) => vs.map((v) => MOA.fmt.int(v))", halves) == [f"{v:,.0f}" for v in halves]
        want = [
            [
                f"{v:.3f}",
                f"{v:.2f}×",
                f"{v:.3g}" if v else "<1e-300",
                "$0" if v == 0 else f"${v:.4f}" if v >= 1e-4 else f"${v:.2e}",
            ]
            for v in values
        ]
        assert got == want


def test_an_item_both_failed_on_scores_as_the_summary_counts_it(page: Any, tmp_path: Path) -> None:
    """The baseline and a setup both failed on an item: the item page shows the tie the summary and
    the items list count (0.5 each under a judge, 0 each otherwise), not a loss of the setup at 0."""
    for name, pairwise in (("pw", True), ("ref", False)):
        build_both_failed(tmp_path / "exps" / name, pairwise=pairwise)
    with serve(tmp_path / "exps") as s:
        for name, score in (("pw", "0.500"), ("ref", "0.000")):
            page.goto(f"{s.url}/#/e/{name}/items")
            expect(page.locator("a[data-outcome='tie'] .count")).to_have_text("2")
            expect(page.locator("td.cell.error").last).to_have_attribute(
                "title", f"a run failed; the item scores {score[:4]}"
            )
            page.goto(f"{s.url}/#/e/{name}/item/i")
            card = page.locator(".answer-card[data-setup='moa']")
            expect(card.locator(".score")).to_have_text(score)
            expect(card.locator(".outcome")).to_have_text("same as the baseline")
            expect(page.locator(".answer-card.base .score")).to_have_text(score)


def test_a_failed_sample_does_not_hide_the_items_score(page: Any, tmp_path: Path) -> None:
    """Three samples, one failed: the items list shows the item's score (2/3, a win, listed under
    Wins) with the failure marked, not only "failed" in red."""
    build_one_sample_failed(tmp_path / "exps" / "sampled")
    with serve(tmp_path / "exps") as s:
        page.goto(s.url + "/#/e/sampled/items?outcome=win")
        expect(page.locator("table.items tbody tr")).to_have_count(1)
        cell = page.locator("td.cell").last
        expect(cell).to_have_class(re.compile(r"\bwin\b"))
        expect(cell).to_contain_text("0.67")
        expect(cell).to_contain_text("failed")


VOTES = [("click", "A>>B"), ("click", "A=B"), ("key", "B>>A"), ("key", "A>B"), ("click", "B>A")]
KEY = {"A>>B": "1", "A>B": "2", "A=B": "3", "B>A": "4", "B>>A": "5"}


def test_five_blind_votes_by_click_and_key_reach_the_store_and_report(
    page: Any, judged_copy: Path, tmp_path: Path
) -> None:
    """Names are hidden until a vote, then revealed; five votes (three clicks, two keys) are stored
    under the voter with the side shown first, and `moa report` rates them beside the judge."""
    names = ("single", "moa", "self")
    revealed: list[tuple[str, str]] = []
    with serve(judged_copy.parent, voter="dana") as s:
        page.goto(s.url + "/")
        expect(page.locator(".choices button")).to_have_count(5)
        expect(page.locator("#who")).to_have_text("voting as dana")
        shot(page, tmp_path, "vote.png")
        for k, (how, verdict) in enumerate(VOTES):
            sides = page.locator(".sides").inner_text()
            assert not any(re.search(rf"\b{n}\b", sides) for n in names), sides
            if how == "click":
                page.locator(f"button[data-verdict='{verdict}']").click()
            else:
                page.keyboard.press(KEY[verdict])
            expect(page.locator("#vote-progress")).to_contain_text(f"{k + 1} of")
            reveal = page.locator(".reveal")
            expect(reveal).to_contain_text("A was")
            codes = reveal.locator("code").all_inner_texts()
            revealed.append((codes[0], codes[1]))
        shot(page, tmp_path, "vote-revealed.png")
    store = Store.open(judged_copy)
    try:
        votes = list(iter_votes(store))
    finally:
        store.close()
    assert [v.verdict for v in votes] == [v for _, v in VOTES]
    assert all(v.voter == "dana" and v.other_setup == "single" for v in votes)
    assert [(v.left_setup, v.setup if v.left_setup != v.setup else v.other_setup) for v in votes] == revealed
    summary = off_loop(lambda: asyncio.run(rebuild_report(judged_copy)))
    assert summary.setup("single").human is not None and summary.setup("single").human.votes == 5
    report = (judged_copy / "report.md").read_text()
    assert "## Human votes" in report and "people's BT" in report


def test_undo_and_code_pairs_with_execution_results(page: Any, experiments: Path, tmp_path: Path) -> None:
    """Code pairs show each side's execution result; u takes the last vote back and shows its pair
    again."""
    folder = tmp_path / "exps"
    shutil.copytree(experiments / "code", folder / "code")
    with serve(folder, voter="eve") as s:
        page.goto(s.url + "/#/e/code/vote")
        expect(page.locator(".execution")).to_have_count(2)
        expect(page.locator(".side[data-side='A'] .execution")).to_contain_text("Execution result")
        shot(page, tmp_path, "vote-code.png")
        question = page.locator(".question h2").inner_text()
        page.keyboard.press("2")
        expect(page.locator("#vote-progress")).to_contain_text("1 of 3")
        page.keyboard.press("u")
        expect(page.locator("#vote-progress")).to_contain_text("0 of 3")
        expect(page.locator(".question h2")).to_have_text(question)


def test_ten_thousand_items_open(page: Any, big_viewer: Served, tmp_path: Path) -> None:
    """The 10,000-item experiment: the overview, then the first page of items (timed by
    benchmarks/view.py, not here)."""
    page.goto(big_viewer.url + "/#/e/big/overview")
    expect(page.locator("table.headline tbody tr")).to_have_count(2)
    page.goto(big_viewer.url + "/#/e/big/items")
    expect(page.locator("table.items tbody tr")).to_have_count(50)
    expect(page.locator("#showing")).to_have_text(f"1–50 of {BIG_ITEMS:,}")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#showing")).to_have_text(f"51–100 of {BIG_ITEMS:,}")
    shot(page, tmp_path, "big-items.png")


def _x(locator: Any) -> float:
    box = locator.bounding_box()
    assert box is not None
    return float(box["x"])


def _no_markup_made(page: Any) -> None:
    """Nothing ran, and no element came out of the data: no image, frame, style, script or
    javascript: link in the page, and the only drawings are the viewer's own."""
    assert page.evaluate("window.__pwned") is None
    made = "main img, main iframe, main style, main script, a[href^='javascript'], main svg:not(.chart):not(.graph)"
    assert page.locator(made).count() == 0
    assert page.locator("main").is_visible()


def test_hostile_names_everywhere_show_as_text(page: Any, tmp_path: Path) -> None:
    """Setup, baseline, node, model, category, experiment and item names that are markup, links or
    script, and answers with Markdown, bidi, zero-width and NUL characters, show as text on every page,
    in voting too, and nothing runs."""
    out = tmp_path / "exps" / "evil"
    build_hostile(out)
    with serve(out.parent) as s:
        page.goto(s.url + "/#/e/evil/overview")
        expect(page.locator("main h1")).to_have_text(EVIL["experiment"])
        expect(page.locator("table.headline")).to_contain_text(EVIL["setup"])
        expect(page.locator(".cost-card").first).to_contain_text(EVIL["node"])
        expect(page.locator("section", has_text="Per category")).to_contain_text(EVIL["category"])
        _no_markup_made(page)
        page.goto(s.url + "/#/e/evil/items")
        expect(page.locator("table.items tbody tr")).to_have_count(2)
        expect(page.locator("a.item-link").first).to_have_text(EVIL["item"])
        expect(page.locator("#f-setup option")).to_have_text([EVIL["setup"]])
        _no_markup_made(page)
        page.locator("a.item-link").first.click()
        expect(page.locator("main h1")).to_have_text(f"Item {EVIL['item']}")
        card = page.locator(".answer-card").nth(1)
        expect(card.locator("h3")).to_have_text(EVIL["setup"])
        expect(card.locator("pre.answer")).to_have_text(EVIL["answer"])
        # the override in the baseline's name stays in it: the badge still reads after the name
        base = page.locator(".answer-card.base h3")
        assert _x(base.locator(".badge")) > _x(base) + 100
        trace = page.locator(".trace:visible")
        node = trace.locator("g.node").filter(has_text=EVIL["node"][:19])
        expect(node).to_have_count(1)
        node.click()
        expect(trace.locator(".node-detail")).to_contain_text(f"Node {EVIL['node']}")
        expect(trace.locator(".node-detail")).to_contain_text(EVIL["model"])
        _no_markup_made(page)
        shot(page, tmp_path, "hostile-names.png")
    with serve(out.parent, voter=EVIL["setup"]) as s:
        page.goto(s.url + "/#/e/evil/vote")
        expect(page.locator(".side")).to_have_count(2)
        expect(page.locator("#who")).to_have_text(f"voting as {EVIL['setup']}")
        page.keyboard.press("3")
        expect(page.locator(".reveal")).to_contain_text(EVIL["baseline"])
        # "…, B was <name>": the override in A's name does not carry B's name before its words
        b_words, b_name = page.evaluate(
            """() => {
                const r = document.querySelector('.reveal');
                const words = [...r.childNodes].find((n) => n.nodeType === 3 && n.data.includes('B was'));
                const range = document.createRange();
                range.selectNodeContents(words);
                return [range.getBoundingClientRect().x, r.querySelectorAll('code')[1].getBoundingClientRect().x];
            }"""
        )
        assert b_words < b_name
        _no_markup_made(page)


def test_a_page_of_another_origin_cannot_undo_a_vote(browser: Any, judged_copy: Path, tmp_path: Path) -> None:
    """CSRF: a page on another loopback port posts to the undo endpoint by form, no-cors fetch, CORS
    fetch and beacon; the voter's vote stays in the store."""
    with serve(judged_copy.parent, voter="vic") as s:
        pair = httpx.get(s.url + "/api/e/judged/vote/next").json()["pair"]
        assert httpx.post(
            s.url + "/api/e/judged/vote", json={"token": pair["token"], "verdict": "A>B"}
        ).is_success
        target = s.url + "/api/e/judged/vote/undo"
        site = tmp_path / "site"
        site.mkdir()
        (site / "index.html").write_text(
            f"""<form id=f method=POST action="{target}" enctype="text/plain" target=sink>
<input name='{{"a":"' value='"}}'></form><iframe name=sink></iframe><script>
(async () => {{
  const json = {{"content-type": "application/json"}};
  await fetch("{target}", {{method: "POST", mode: "no-cors", headers: json, body: "{{}}"}}).catch(() => 0);
  await fetch("{target}", {{method: "POST", headers: json, body: "{{}}"}}).catch(() => 0);
  try {{ navigator.sendBeacon("{target}", new Blob(["{{}}"], {{type: "application/json"}})); }} catch (e) {{}}
  document.getElementById("f").submit();
  window.done = true;
}})();
</script>"""
        )
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
        handler.log_message = lambda *a: None  # type: ignore[method-assign]
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/index.html")
            page.wait_for_function("window.done === true")
            page.wait_for_load_state("networkidle")
        finally:
            context.close()
            httpd.shutdown()
        assert httpx.get(s.url + "/api/e/judged/vote/next").json()["progress"]["voted"] == 1


def test_an_infinite_number_in_the_store_shows_as_missing_and_is_named(
    page: Any, judged_copy: Path, tmp_path: Path
) -> None:
    """A store holding an infinite cost (a broken or edited file): every page still opens, the number
    shows as —, and a line on the page says where it was (JSON cannot carry it)."""
    (judged_copy / "summary.json").unlink()
    conn = sqlite3.connect(judged_copy / "experiment.sqlite")
    try:
        run = "(SELECT run_id FROM runs WHERE item_id = 'q2' AND setup = 'moa')"
        conn.execute(f"UPDATE runs SET cost_usd = 9e999 WHERE run_id = {run}")
        conn.execute(f"UPDATE calls SET cost_usd = 9e999 WHERE run_id = {run}")
        conn.commit()
    finally:
        conn.close()
    with serve(judged_copy.parent) as s:
        for where, ready in [
            ("overview", "table.headline"),
            ("items", "table.items"),
            ("item/q2", ".answer-card[data-setup='moa']"),
        ]:
            page.goto(f"{s.url}/#/e/judged/{where}")
            expect(page.locator(ready)).to_be_visible()
            expect(page.locator(".error-box.warning")).to_contain_text("not finite, shown as —")
        expect(page.locator(".error-box.warning")).to_contain_text("runs[1].run.cost_usd")
        expect(page.locator(".answer-card[data-setup='moa'] .metrics")).to_contain_text("—")
        shot(page, tmp_path, "infinite.png")
        # the summary (which `moa report` refuses to make from such a store) leaves the run out, named
        page.goto(f"{s.url}/#/e/judged/overview")
        expect(page.locator("p.sub")).to_contain_text(
            "a damaged run left out: setup `moa`, item `q2`, sample 0"
        )


def test_a_voter_sees_the_results_only_after_voting(browser: Any, experiments: Path, tmp_path: Path) -> None:
    """While pairs are left, the items page says the results stay hidden; after the last vote the
    done page leads to the overview, and the items table shows."""
    shutil.copytree(experiments / "code", tmp_path / "exps" / "code")
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        with serve(tmp_path / "exps", voter="wes") as s:
            page.goto(s.url + "/#/e/code/items")
            expect(page.locator("main .error-box")).to_contain_text(
                "hidden while you vote (3 blind pairs left"
            )
            page.goto(s.url + "/#/e/code/vote")
            for k in range(3):
                expect(page.locator("#vote-progress")).to_contain_text(f"{k} of 3")
                page.keyboard.press("3")
            expect(page.locator(".done")).to_contain_text("All pairs voted")
            page.get_by_role("link", name="See the overview").click()
            expect(page.locator("table.headline")).to_be_visible()
            page.goto(s.url + "/#/e/code/items")
            expect(page.locator("table.items tbody tr")).not_to_have_count(0)
    finally:
        context.close()


def test_skip_after_the_viewer_restarted_moves_on(browser: Any, judged_copy: Path) -> None:
    """A pair shown before the viewer restarted (its token forgotten): s says so and shows the next
    pair, instead of failing in the page and leaving every button dead."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        with serve(judged_copy.parent, voter="kim") as s:
            page.goto(s.url + "/#/e/judged/vote")
            expect(page.locator(".choices button")).to_have_count(5)
            s.app.state.viewer.queues.clear()  # what a restart forgets
            said: list[str] = []
            page.on("dialog", lambda d: (said.append(d.message), d.dismiss()))
            ready = page.locator("#app").get_attribute("data-ready")
            page.keyboard.press("s")
            expect(page.locator("#app")).not_to_have_attribute("data-ready", str(ready))
            assert said and "reload the page" in said[0]
            page.keyboard.press("3")
            expect(page.locator("#vote-progress")).to_contain_text("1 of")
    finally:
        context.close()
    assert errors == []


def test_the_home_page_lists_an_experiment_started_since(
    page: Any, experiments: Path, tmp_path: Path
) -> None:
    """Back on the list of experiments, one whose run began after the page opened is there."""
    root = tmp_path / "exps"
    for name in ("judged", "code"):
        shutil.copytree(experiments / name, root / name)
    with serve(root) as s:
        page.goto(s.url + "/")
        expect(page.locator("main table tbody tr")).to_have_count(2)
        page.get_by_role("link", name="judged").click()
        expect(page.locator("main h1")).to_have_text("judged")
        shutil.copytree(experiments / "chat", root / "chat")
        page.get_by_role("link", name="Experiments").click()
        expect(page.locator("main table tbody tr")).to_have_count(3)
