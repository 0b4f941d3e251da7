"""report.html in a real browser: Debian's headless Chromium, driven by playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from handmade_run import write_run

from soc_async.report import build_report, render_html
from soc_async.report.judge import Judgement, aggregate

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

playwright = pytest.importorskip("playwright.sync_api")


def judged(report_dir: Path):
    """A judge section over two conversations, as --judge would add."""
    items = [
        Judgement(
            chat_id="c-0000000-cccc",
            scores={"persona_consistency": 4, "naturalness": 2, "topic_adherence": 5, "pacing": 3},
            reason="the <reply> is stiff & formal",
        ),
        Judgement(
            chat_id="c-0000001-cccc",
            scores={"persona_consistency": 5, "naturalness": 5, "topic_adherence": 5, "pacing": 5},
            reason="fine",
        ),
    ]
    return aggregate(items, sample=2, seed=0, transcripts={"c-0000000-cccc": "[15.03] a: <b>"})


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_the_report_opens_in_chromium_without_errors_and_shows_the_glance_table(tmp_path):
    """The page loads from a file with no console error and no request beyond itself and
    its data URIs; the at-a-glance table has a row per figure with its value and status;
    every plot decodes; model text is escaped. A screenshot is kept as a test artifact."""
    run = write_run(tmp_path / "run")
    report = build_report(run, judge=judged(run))
    page_path = tmp_path / "report.html"
    page_path.write_text(render_html(report), encoding="utf-8")

    errors: list[str] = []
    requests: list[str] = []
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri(), wait_until="load")
            rows = page.locator("#glance tbody tr")
            assert rows.count() == len(report.glance)
            rules = page.locator('#glance tr[data-key="rules_pass"]')
            assert "Conversations passing every rule" in rules.inner_text()
            assert "100.0% (3 of 3)" in rules.inner_text() and "within" in rules.inner_text()
            target = page.locator('#glance tr[data-key="conversations"]').inner_text()
            assert "off target" in target  # 3 written of a target of 4
            broken = page.evaluate(
                "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length"
            )
            assert broken == 0 and page.locator("img.plot").count() >= 10
            assert "the <reply> is stiff & formal" in page.locator("#judge").inner_text()
            assert page.locator("#judge b").count() == 0  # model text is escaped, not markup
            ARTIFACTS.mkdir(exist_ok=True)
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copy(shot, ARTIFACTS / "report.png")
        finally:
            browser.close()
    assert errors == []
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_the_page_shows_pacing_and_age_coverage(tmp_path: Path) -> None:
    """The pacing table (shares with the configured ones) and the age coverage table."""
    html = render_html(build_report(write_run(tmp_path / "run")))
    assert "Messages per turn against the pacing" in html
    assert "1: 0.0% (45.0%); 2: 66.7% (35.0%); 3: 33.3% (20.0%)" in html
    assert "Age coverage" in html and "N(25, 5) on 18..70" in html
