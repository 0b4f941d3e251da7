"""The viewer in a real browser: Debian's headless Chromium driven by playwright.

A generated run (testing/synthetic.py) is built with small chunks, so the page loads its
list in several pieces and its conversations from several files, and is opened from
file:// (and once over --serve's HTTP). Every test fails on any console error or page
error, and leaves a screenshot under test-artifacts/ at the repository root.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from soc_async.records import MESSAGE_TYPES
from soc_async.store.rundata import RunData
from soc_async.testing.synthetic import write_run
from soc_async.view import build
from soc_async.view.serve import make_server

CHROMIUM = os.environ.get("SOC_ASYNC_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no browser at {CHROMIUM}"),
]

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


class Site:
    def __init__(self, root: Path, run: RunData) -> None:
        self.root = root
        self.url = (root / "index.html").as_uri()
        self.run = run
        self.conversations = list(run.conversations())
        self.failed = [f for f in run.failures if f.stage == "chats"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    tmp = tmp_path_factory.mktemp("viewer")
    write_run(tmp / "run", personas=12, conversations=90, seed=7)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "INDEX_CHUNK", 25)
        mp.setattr(build, "CONV_CHUNK", 10)
        mp.setattr(build, "PERSONA_CHUNK", 5)
        build.build_site(tmp / "run", tmp / "site")
    return Site(tmp / "site", RunData(tmp / "run"))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, request) -> Iterator[object]:
    """A fresh page; the test fails on any console error; a screenshot is kept."""
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    pg = context.new_page()
    problems: list[str] = []
    pg.on(
        "console",
        lambda m: (
            problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
        ),
    )
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    yield pg
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"viewer-{request.node.name}.png"))
    context.close()
    assert problems == [], problems


def wait_loaded(pg, total: int) -> None:
    """Until every index chunk is in (the list no longer says it is still loading)."""
    pg.wait_for_function(
        "n => document.getElementById('list-info').textContent"
        " === n.toLocaleString('en-US') + ' shown'",
        arg=total,
    )


def shown_ids(pg) -> list[str]:
    return pg.eval_on_selector_all("#list li", "els => els.map(e => e.dataset.id)")


def test_list_renders_pages_and_filters(site, page):
    """The list shows the run a page at a time; style, status, region and text search
    narrow it to exactly the matching conversations."""
    total = len(site.conversations) + len(site.failed)
    page.goto(site.url)
    wait_loaded(page, total)
    assert len(shown_ids(page)) == 50
    assert "1–50 of 90" in page.inner_text("#page-info")
    page.click("#next-page")
    assert len(shown_ids(page)) == total - 50

    structured = {c.chat_id for c in site.conversations if c.style == "structured"}
    structured |= {
        f.id
        for f in site.failed
        if (e := site.run.experience_of_chat(f.id)) and e.style == "structured"
    }
    page.select_option("#f-style", label="structured")
    assert set(shown_ids(page)) == structured

    page.select_option("#f-status", value="failed")
    failed_structured = structured & {f.id for f in site.failed}
    assert set(shown_ids(page)) == failed_structured
    assert page.locator("#list li.failed").count() == len(failed_structured)

    page.click("#reset-filters")
    name = site.run.personas[site.conversations[0].persona_ids[0]].meta.name
    page.fill("#q", name.lower())
    page.wait_for_function("() => document.querySelectorAll('#list li').length < 50")
    with_name = {
        c.chat_id for c in site.conversations
        if name in {site.run.personas[p].meta.name for p in c.persona_ids}
    }  # fmt: skip
    assert with_name <= set(shown_ids(page))
    for li in page.locator("#list li .names").all_inner_texts():
        assert name in li

    page.click("#reset-filters")
    region = site.run.personas[site.conversations[0].persona_ids[1]].meta.region
    page.select_option("#f-region", label=region)
    in_region = {
        c.chat_id for c in site.conversations
        if region in {site.run.personas[p].meta.region for p in c.persona_ids}
    }  # fmt: skip
    assert in_region <= set(shown_ids(page))


def _day(d: str) -> str:
    day, month = d.split(".")
    return f"{int(day)} {MONTHS[int(month) - 1]}"


def test_conversation_shows_every_message_in_order(site, page):
    """A conversation opened by its link shows every message in order with its time, day
    separators where the date changes, media badges, each turn's sender on its side, the
    private event on the speaker's side, the state lines on demand and the ending."""
    conv = max(
        site.conversations,
        key=lambda c: (
            any(t.instant_event for t in c.turns),
            len({m.d for t in c.turns for m in t.messages}),
            any(m.type != "text" for t in c.turns for m in t.messages),
        ),
    )
    messages = [m for t in conv.turns for m in t.messages]
    assert len({m.d for m in messages}) > 1 and any(t.instant_event for t in conv.turns)
    page.goto(f"{site.url}#/c/{conv.chat_id}")
    page.wait_for_selector("#conv .msg")
    texts = page.eval_on_selector_all("#conv .msg .text", "els => els.map(e => e.textContent)")
    times = page.eval_on_selector_all("#conv .msg time", "els => els.map(e => e.textContent)")
    assert texts == [m.text for m in messages]
    assert times == [m.t for m in messages]
    days = page.eval_on_selector_all("#conv .day", "els => els.map(e => e.textContent)")
    expected_days = []
    for m in messages:
        if not expected_days or expected_days[-1] != _day(m.d):
            expected_days.append(_day(m.d))
    assert days == expected_days
    types = page.eval_on_selector_all("#conv .msg", "els => els.map(e => e.dataset.type)")
    assert types == [m.type for m in messages]
    badges = page.eval_on_selector_all(
        "#conv .msg .badge.media", "els => els.map(e => e.textContent)"
    )
    assert badges == [m.type for m in messages if m.type != "text"]
    assert set(badges) <= set(MESSAGE_TYPES)

    names = {pid: site.run.personas[pid].meta.name for pid in conv.persona_ids}
    senders = page.eval_on_selector_all(
        "#conv .turn:not(.cont) .sender", "els => els.map(e => e.textContent)"
    )
    assert senders == [names[t.sender] for t in conv.turns]
    for k, turn in enumerate(conv.turns):
        side = conv.persona_ids.index(turn.sender)
        group = page.locator(f"#conv .turn[data-turn='{k}']").first
        assert f"side-{side}" in (group.get_attribute("class") or "")
        if turn.instant_event:
            assert group.locator(".event").inner_text().endswith(turn.instant_event)
        else:
            assert group.locator(".event").count() == 0

    state = page.locator("#conv .state").first
    assert not state.is_visible()
    page.keyboard.press("s")
    assert state.is_visible()
    states = page.eval_on_selector_all("#conv .state b", "els => els.map(e => e.textContent)")
    assert states == [t.state.split(";")[0] for t in conv.turns]
    ending = page.inner_text("#conv .ending")
    assert ("predefined_topics_exhausted" in ending) == (conv.ended_by == "exhausted")

    cards = page.eval_on_selector_all(
        "#context-pane details.persona summary", "els => els.map(e => e.textContent)"
    )
    assert cards == [
        f"Opener: {names[conv.persona_ids[0]]}",
        f"Other: {names[conv.persona_ids[1]]}",
    ]
    assert page.locator("#context-pane details.experience h5").count() == 2
    assert page.locator("#conv a.permalink").get_attribute("href") == f"#/c/{conv.chat_id}"


def test_markup_in_a_card_is_text(site, page):
    """The card holding a <script> tag shows it as text and runs nothing."""
    first = next(p for p in site.run.personas.values() if "<script>" in p.persona_text)
    conv = next(c for c in site.conversations if first.id in c.persona_ids)
    page.goto(f"{site.url}#/c/{conv.chat_id}")
    card = page.locator(f"#context-pane details[data-persona='{first.id}'] .card")
    card.wait_for()
    assert "<script>alert(1)</script>" in card.inner_text()
    assert card.locator("script").count() == 0


def test_keyboard_moves_through_the_list(site, page):
    """j/k open the next/previous conversation of the (filtered) list and move its page."""
    page.goto(site.url)
    wait_loaded(page, len(site.conversations) + len(site.failed))
    ids = shown_ids(page)
    page.keyboard.press("j")
    page.keyboard.press("j")  # at once: the second step starts from the first one's
    page.wait_for_function("id => location.hash === '#/c/' + id", arg=ids[1])
    page.wait_for_selector(f"#list li.current[data-id='{ids[1]}']")
    page.keyboard.press("k")
    page.wait_for_function("id => location.hash === '#/c/' + id", arg=ids[0])
    page.select_option("#f-status", value="failed")
    page.evaluate("document.activeElement.blur()")  # leave the select, as Esc or a click would
    failed = shown_ids(page)
    page.keyboard.press("j")
    page.wait_for_function("id => location.hash === '#/c/' + id", arg=failed[0])
    page.wait_for_selector("#conv .failure")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"


def test_failures_are_listed_with_reasons(site, page):
    """The failures page lists every failure of every stage with its reason; a failed
    chat's own page shows the reason, the detail and its experience."""
    failed = site.failed[0]
    page.goto(f"{site.url}#/c/{failed.id}")
    page.wait_for_selector("#conv .failure")
    assert failed.reason in page.inner_text("#conv .failure")
    assert failed.detail in page.inner_text("#conv .failure")
    assert page.locator("#context-pane details.experience").count() == 1
    page.keyboard.press("f")
    page.wait_for_selector("table.failures tbody tr")
    rows = page.eval_on_selector_all(
        "table.failures tbody tr td:nth-child(3)", "els => els.map(e => e.textContent)"
    )
    assert sorted(rows) == sorted(f.reason for f in site.run.failures)


def test_served_over_http(site, page):
    """Served by --serve's server on 127.0.0.1 the page works the same."""
    server = make_server(site.root, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        conv = site.conversations[-1]
        page.goto(f"http://127.0.0.1:{port}/#/c/{conv.chat_id}")
        page.wait_for_selector("#conv .msg")
        assert page.locator("#conv .msg").count() == sum(len(t.messages) for t in conv.turns)
        wait_loaded(page, len(site.conversations) + len(site.failed))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
