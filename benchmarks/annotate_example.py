"""The example of docs/annotate.md: a small annotated run, end to end through the real parts.

Two synthetic run directories (testing/synthetic.py: records written straight, no model),
the real ``soc-async annotate`` server in a child process, SCRIPTED raters answering
over HTTP (each conversation has a hidden quality per criterion; each rater reports it
with seeded noise, one rater harsher than the others, taking turns as people working
at the same time do), a SCRIPTED judge (judge.jsonl
written with the same hidden quality and its own noise), a blind A/B session by two
scripted raters, then ``soc-async report`` and ``report --compare``. With ``--shots
DIR`` it also takes the screenshots of the rating page, the A/B page and the report's
people section in headless Chromium.

The figures it prints are those of scripted people on synthetic text: they show what the
report says and how to read it, not how good any model is.

    python benchmarks/annotate_example.py [--out DIR] [--shots docs]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import msgspec

from soc_async.annotate.rubric import default_rubric
from soc_async.report.judge import CRITERIA, Judgement
from soc_async.testing.synthetic import write_run

SRC = str(Path(__file__).resolve().parents[1] / "src")
RUBRIC = default_rubric()
RATERS = {"ana": 0.0, "ben": 0.0, "cyd": -0.6}  # cyd is harsher than the others


def quality(chat_id: str, criterion: str) -> int:
    """The hidden quality of a conversation on a criterion, 2 to 5."""
    h = hashlib.blake2b(f"{chat_id}:{criterion}".encode(), digest_size=4).digest()
    return 2 + int.from_bytes(h) % 4


def noisy(rng: random.Random, q: int, bias: float) -> int:
    value = q + bias + rng.choice((-1, 0, 0, 0, 0, 1))
    return max(1, min(5, round(value)))


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))


def serve(run: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "soc_async.cli", "annotate", str(run), "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env())
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line.rstrip())
        found = re.search(r"open (http://\S+)", line)
        if found:
            return proc, found.group(1)
    raise SystemExit("annotate did not start")


def call(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as r:
        return json.load(r)


def next_item(url: str, rater: str) -> str | None:
    start = call(f"{url}api/start?rater={rater}")
    queue, position = start["queue"], start["position"]
    return None if position >= len(queue) else str(queue[position])  # type: ignore[arg-type,index]


def rate(url: str, rng: random.Random) -> None:
    """The raters take turns, as people working at the same time do: each answers the
    first conversation of their own queue, so the unshared ones are shared out."""
    keys = [c.key for c in RUBRIC.criteria]
    quota = {"ana": 16, "ben": 16, "cyd": 10}
    while any(quota.values()):
        for rater, bias in RATERS.items():
            item = next_item(url, rater) if quota[rater] else None
            if item is None:
                quota[rater] = 0
                continue
            quota[rater] -= 1
            call(f"{url}api/item?rater={rater}&id={item}")
            scores = {k: noisy(rng, quality(item, k), bias) for k in keys}
            flags = ["repetition"] if scores["pacing"] <= 2 else []
            body = {"rater": rater, "item": item, "scores": scores, "flags": flags}
            call(f"{url}api/answer", body)


def judge(run: Path, rng: random.Random) -> None:
    """judge.jsonl as `report --judge` writes it, scored by a script, not a model."""
    mapped = {c.judge: c.key for c in RUBRIC.criteria if c.judge}
    lines = []
    for line in (run / "conversations.jsonl").read_text().splitlines()[:30]:
        chat_id = json.loads(line)["chat_id"]
        scores = {k: noisy(rng, quality(chat_id, mapped.get(k, k)), 0.0) for k in CRITERIA}
        lines.append(msgspec.json.encode(Judgement(chat_id=chat_id, scores=scores, reason="-")))
    (run / "judge.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def compare(url: str, rng: random.Random, plan_path: Path) -> None:
    keys = [c.key for c in RUBRIC.criteria]
    plan = json.loads(plan_path.read_text())
    sides = {i["id"]: i["left"] for i in plan["items"]}
    active = ["ana", "ben"]
    while active:
        for rater in list(active):
            item = next_item(url, rater)
            if item is None:
                active.remove(rater)
                continue
            call(f"{url}api/item?rater={rater}&id={item}")
            # The scripted rater prefers run B 51% of the time, A 34%, a tie 15%; the page
            # does not say which side B is on, so the script reads the plan's side.
            choices = {}
            for k in keys:
                r = rng.random()
                winner = "tie" if r < 0.15 else ("B" if r < 0.66 else "A")
                side = "left" if winner == sides[item] else "right"
                choices[k] = "tie" if winner == "tie" else side
            call(f"{url}api/answer", {"rater": rater, "item": item, "choices": choices})


def shots(out: Path, rate_url: str, ab_url: str, report_html: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for url, name, keys in (
            (rate_url, "annotate-rate.png", "435"),
            (ab_url, "annotate-ab.png", "31"),
        ):
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.goto(url)
            page.fill("#rater", "dee")
            page.keyboard.press("Enter")
            page.wait_for_selector("#work:not([hidden])")
            for key in keys:
                page.keyboard.press(key)
            page.screenshot(path=str(out / name))
            page.close()
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(report_html.as_uri())
        page.locator("#human").screenshot(path=str(out / "annotate-report.png"))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="where the run directories go (default: a temp dir)")
    parser.add_argument("--shots", help="write the three screenshots into this directory")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="annotate-example-"))
    run_a, run_b = root / "run", root / "other"
    write_run(run_a, conversations=60, seed=1, fail_every=0)
    write_run(run_b, conversations=60, seed=2, fail_every=0)
    rng = random.Random(0)

    proc, url = serve(run_a, "--sample", "30", "--overlap", "0.4")
    try:
        rate(url, rng)
        proc_b, ab_url = serve(run_a, "--compare", str(run_b), "--sample", "16")
        try:
            compare(ab_url, rng, run_a / "annotate-ab-plan.json")
            judge(run_a, rng)
            cmd = [sys.executable, "-m", "soc_async.cli", "report", str(run_a)]
            subprocess.run([*cmd, "--compare", str(run_b)], check=True, env=env())
            if args.shots:
                shots(Path(args.shots), url, ab_url, run_a / "report.html")
        finally:
            proc_b.terminate()
            proc_b.wait()
    finally:
        proc.terminate()
        proc.wait()
    human = json.loads((run_a / "report.json").read_text())["human"]
    print(json.dumps(human, indent=1)[:200], "...")
    print(f"run directories under {root}")


if __name__ == "__main__":
    main()
