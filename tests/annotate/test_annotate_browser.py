"""The annotate page in a real browser: Debian's headless Chromium driven by playwright,
against the real server in a child process.

A rater rates by keyboard alone; the server is killed (SIGKILL) mid-session and started
again; the page resumes at the first unanswered conversation. In blind A/B mode the
sides follow the plan, are balanced, and nothing on the page names a run. Screenshots
are left under test-artifacts/ at the repository root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from soc_async.annotate.plan import AB_PLAN_FILE, PLAN_FILE, Plan, queue
from soc_async.annotate.records import Annotation, Preference, Rating
from soc_async.annotate.rubric import default_rubric
from soc_async.annotate.server import make_app, open_session
from soc_async.records import Conversation
from soc_async.store.appendlog import read_log
from soc_async.store.rundata import RunData
from soc_async.testing.synthetic import write_run

CHROMIUM = os.environ.get("SOC_ASYNC_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no browser at {CHROMIUM}"),
]
CRITERIA = len(default_rubric().criteria)
REFUSED = "ERR_CONNECTION_REFUSED"  # what Chromium logs while the server is down


@pytest.fixture
def page(request) -> Iterator[tuple[object, list[str]]]:
    """A fresh page, and the console errors and page errors it logs."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1500, "height": 950})
        problems: list[str] = []
        pg.on(
            "console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None
        )
        pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        yield pg, problems
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"annotate-{request.node.name}.png"))
        browser.close()


def wait_item(pg, done: int, total: int) -> str:
    pg.wait_for_function(
        "t => document.getElementById('progress').textContent === t", arg=f"{done} of {total} rated"
    )
    pg.wait_for_function("() => document.getElementById('load-status').textContent === ''")
    return pg.evaluate("document.body.dataset.item")


def test_a_rater_rates_by_keyboard_survives_a_killed_server_and_resumes(
    tmp_path: Path, annotate_server, page
) -> None:
    pg, problems = page
    run = tmp_path / "run"
    write_run(run, conversations=30, seed=11)
    server = annotate_server(run, "--sample", "8", "--overlap", "0.25").start()
    pg.goto(server.url)
    pg.wait_for_selector("#rater:focus")
    pg.keyboard.type("Ana Rater")
    pg.keyboard.press("Enter")
    pg.wait_for_selector("#work:not([hidden])")
    rated = []
    for k in range(3):
        item = wait_item(pg, k, 8)
        rated.append(item)
        pg.keyboard.press("Enter")  # nothing answered yet: refused, and said why
        assert "Still to answer: Naturalness" in pg.inner_text("#message")
        for j in range(CRITERIA):
            pg.keyboard.press(str(1 + (k + j) % 5))
        pg.keyboard.press("r")  # the repetition flag
        pg.keyboard.press("s")  # state lines shown, and hidden again
        assert pg.locator(".state").first.is_visible()
        pg.keyboard.press("s")
        pg.keyboard.press("Enter")
    fourth = wait_item(pg, 3, 8)
    plan = msgspec.json.decode((run / PLAN_FILE).read_bytes(), type=Plan)
    assert [*rated, fourth] == queue(plan, "Ana Rater", {})[:4]

    server.kill()  # mid-session, no clean shutdown
    pg.keyboard.press("n")
    pg.wait_for_function(
        "() => /does not answer/.test(document.getElementById('load-status').textContent)"
    )
    server.start()  # the same port, a new process that knows only the files
    pg.reload()  # the page, or a new tab: the name is remembered, the queue is the server's
    assert wait_item(pg, 3, 8) == fourth
    assert "conversation 4 of 8" in pg.inner_text("#item-label")
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "annotate-rate.png"))

    records = list(read_log(run / "annotations.jsonl", Annotation))
    assert len(records) == 3
    assert [r.item for r in records] == rated
    for k, r in enumerate(records):
        assert isinstance(r, Rating) and r.rater == "Ana Rater" and r.rubric == "soc-default-1"
        assert list(r.scores.values()) == [1 + (k + j) % 5 for j in range(CRITERIA)]
        assert r.flags == ["repetition"]
    assert (run / "annotations.jsonl").read_bytes().count(b"\n") == 3
    assert [p for p in problems if REFUSED not in p] == []


def texts(c: Conversation) -> list[str]:
    return [m.text for t in c.turns for m in t.messages]


def test_blind_pairs_follow_the_plan_are_balanced_and_never_name_a_run(
    tmp_path: Path, annotate_server, page
) -> None:
    pg, problems = page
    a_dir, b_dir = tmp_path / "alpha-run", tmp_path / "beta-run"
    write_run(a_dir, conversations=30, seed=1)
    write_run(b_dir, conversations=30, seed=2)
    server = annotate_server(a_dir, "--compare", str(b_dir), "--sample", "10").start()
    plan = msgspec.json.decode((a_dir / AB_PLAN_FILE).read_bytes(), type=Plan)
    a_convs = {c.chat_id: c for c in RunData(a_dir).conversations()}
    b_convs = {c.chat_id: c for c in RunData(b_dir).conversations()}
    secrets = ["alpha-run", "beta-run", str(tmp_path), "fake-model", *a_convs, *b_convs]

    pg.goto(server.url)
    pg.fill("#rater", "Ben")
    pg.keyboard.press("Enter")
    pg.wait_for_selector("#work:not([hidden])")
    shown_left: list[str] = []
    for k in range(len(plan.items)):
        item_id = wait_item(pg, k, len(plan.items))
        item = plan.item(item_id)
        assert item is not None
        left = pg.eval_on_selector_all(
            "#convs .conv:nth-child(1) .msg .text", "els => els.map(e => e.textContent)"
        )
        right = pg.eval_on_selector_all(
            "#convs .conv:nth-child(2) .msg .text", "els => els.map(e => e.textContent)"
        )
        a_text, b_text = texts(a_convs[item.a]), texts(b_convs[item.b])
        assert (left, right) == ((a_text, b_text) if item.left == "A" else (b_text, a_text))
        shown_left.append(item.left or "")
        html = pg.content()
        assert [s for s in secrets if s in html] == []
        if k == 0:
            pg.keyboard.press("e")  # the cards, a key away, still name no run
            assert pg.locator("details.ctx[open]").count() == 2
            assert [s for s in secrets if s in pg.content()] == []
            ARTIFACTS.mkdir(exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / "annotate-ab.png"))
        for _ in range(CRITERIA):
            pg.keyboard.press("1")  # left is better, every criterion
        pg.keyboard.press("Enter")
    pg.wait_for_selector("#finished:not([hidden])")
    assert abs(shown_left.count("A") - shown_left.count("B")) <= 1

    records = list(read_log(a_dir / "annotations.jsonl", Annotation))
    assert len(records) == len(plan.items)
    for r in records:
        assert isinstance(r, Preference) and r.compare == str(b_dir)
        assert set(r.choices.values()) == {"left"} and set(r.winners.values()) == {r.left}
    assert problems == []


@contextlib.contextmanager
def app_in_thread(app) -> Iterator[str]:
    """``app`` served on 127.0.0.1 by an event loop of its own thread; yields its base URL."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)

    async def up() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}/"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(up(), loop).result(timeout=30)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def test_bound_elsewhere_the_page_works_only_with_the_token_of_its_url(
    tmp_path: Path, page
) -> None:
    """The app as served on a non-loopback address (a token required): the page opened
    from the printed URL passes the token on and works; opened without it, it loads but
    every data request is refused and the page says why."""
    pg, problems = page
    write_run(tmp_path / "run", conversations=12, seed=4)
    session = open_session(tmp_path / "run", rubric=default_rubric(), sample=4)
    try:
        with app_in_thread(make_app(session, token="tok-123")) as base:
            pg.goto(base)
            pg.fill("#rater", "Cy")
            pg.keyboard.press("Enter")
            pg.wait_for_function(
                "() => /a token is needed/.test(document.getElementById('load-status').textContent)"
            )
            assert pg.locator("#work").is_hidden()
            pg.goto(base + "?token=tok-123")  # the name is remembered
            assert wait_item(pg, 0, 4) == queue(session.plan, "Cy", {})[0]
    finally:
        session.log.close()
    assert [p for p in problems if "403" not in p] == []
