"""``soc-async annotate``: people rate a run's conversations in the browser.

    rubric.py    the rubric (TOML, default_rubric.toml), read strictly with FILE:LINE errors
    plan.py      the sampling plan and A/B pairing, pure: strata, overlap, each rater's order
    records.py   what annotations.jsonl holds (a rating, an A/B preference) and their checks
    payload.py   a conversation as the page draws it (the viewer's cards), blind where asked
    server.py    the aiohttp app: the page, the rater's queue, answers appended through store/
    static/      index.html, app.js, app.css: the page, keyboard first, no network

docs/annotate.md describes it for users; report/human.py measures what people said.
"""

from __future__ import annotations
