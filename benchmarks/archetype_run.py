"""Archetype drift, measured and countered: personas-only runs against the fake server.

Runs ``soc-async personas -n N`` against the fake server twice, with the same seed: once
with the archetype monitor on (the default) and once with ``[archetypes] hint = false``.
The scripted model is ``scripted:drifting``: seed-length cards that write the coping
style their prompt asks for, except that three cards in ten take the style it has
written most so far, unless the prompt's hint warns it off (a model converging on one
archetype). Then ``soc-async report --judge-cards M`` has the scripted model read a
seeded sample of each run's cards through the ``archetype`` call kind, and the figures
are taken from report.json:

- per table (temperament, coping): the drawn count of each row against its weight, the
  largest |z| of any row in any window (standard errors of independent draws), and
  whether every drawn row is within 3 standard errors of its weight in every window;
- the share of cards whose written (keywords) and judged coping match the drawn one,
  the first-to-last window distance of the drawn, written and judged mixes, and the
  share of prompts that carried the monitor's hint.

    python benchmarks/archetype_run.py [--personas 5000] [--judge-cards 1000]
        [--out /tmp/archetype-run] [--reply soc_async.testing.scripted:drifting]
        [--json archetypes.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def config_text(seed: int, hint: bool) -> str:
    return "\n".join(
        [
            'profile = "default"',
            f"seed = {seed}",
            "[concurrency]",
            "fixed = 64",
            "[client]",
            "timeout_s = 30.0",
            "backoff_base_s = 0.05",
            "backoff_max_s = 0.5",
            "[archetypes]",
            f"hint = {'true' if hint else 'false'}",
            "",
        ]
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def soc_async(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "soc_async.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    if done.returncode != 0:
        sys.exit(f"soc-async {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def one_run(out: Path, *, reply: str, seed: int, hint: bool, n: int, cards: int) -> dict[str, Any]:
    """A fresh fake server per run, so the drifting writer starts with no favourite."""
    if out.exists():
        shutil.rmtree(out)
    cfg = out.with_suffix(".toml")
    cfg.write_text(config_text(seed, hint))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "soc_async.testing.fake_server", "--port", str(port),
         "--reply", reply, "--no-record"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        t0 = time.monotonic()
        soc_async("personas", "-n", str(n), "--config", str(cfg), "--endpoint", url,
                  "--out", str(out))  # fmt: skip
        run_s = time.monotonic() - t0
        t0 = time.monotonic()
        soc_async("report", str(out), "--judge-cards", str(cards), "--endpoint", url)
        report_s = time.monotonic() - t0
    finally:
        server.terminate()
        server.wait(30)
    report = json.loads((out / "report.json").read_text())
    return {"hint": hint, "run_s": round(run_s, 1), "report_s": round(report_s, 1),
            "archetypes": report["archetypes"]}  # fmt: skip


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def markdown(runs: list[dict[str, Any]]) -> str:
    first = runs[0]["archetypes"]
    lines = [
        f"Windows of {first['window_size']} iterations, {len(first['tables'][0]['windows'])} "
        f"windows, {first['personas']:,} personas per run.",
        "",
    ]
    for table in first["tables"]:
        total = sum(table["drawn"].values())
        lines += [
            f"| {table['name']} | weight | drawn | drawn share |",
            "|---|---|---|---|",
        ]
        for label, w in table["weights"].items():
            n = table["drawn"].get(label, 0)
            lines.append(f"| {label} | {_pct(w)} | {n:,} | {_pct(n / total if total else None)} |")
        lines += [
            "",
            f"Largest |z| of a drawn row in any window: {_num(table['max_abs_z'], 2)}; every "
            f"row within 3 SE in every window: {'yes' if table['within_3se'] else 'no'}.",
            "",
        ]
    lines += [
        "| coping, scripted:drifting | monitor on | monitor off |",
        "|---|---|---|",
    ]
    cols = [r["archetypes"] for r in runs]
    coping = [next(t for t in a["tables"] if t["name"] == "coping") for a in cols]

    def row(label: str, values: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    row("prompts that carried the hint", [_pct(a["hinted"]["value"]) for a in cols])
    row("written coping matches the drawn one (keywords)",
        [_pct(t["written_match"]["value"]) for t in coping])  # fmt: skip
    judged = [t["judged_match"] for t in coping]
    row("judged coping matches the drawn one (sample)",
        [f"{_pct(j['value'])} of {j['total']}" for j in judged])  # fmt: skip
    row("first-to-last window distance, drawn", [_num(t["drawn_drift"]) for t in coping])
    row("first-to-last window distance, written", [_num(t["written_drift"]) for t in coping])
    row("first-to-last window distance, judged", [_num(t["judged_drift"]) for t in coping])
    row("most written style: share of cards (its weight)", [_top(t) for t in coping])
    row(
        "drawn rows within 3 SE, every window", ["yes" if t["within_3se"] else "no" for t in coping]
    )
    row("run / report seconds", [f"{r['run_s']:.0f} / {r['report_s']:.0f}" for r in runs])
    return "\n".join(lines)


def _yes(x: bool | None) -> str:
    return "—" if x is None else ("yes" if x else "no")


def _top(table: dict[str, Any]) -> str:
    written = {k: v for k, v in table["written"].items() if k != "unclear"}
    if not written:
        return "—"
    label = max(written, key=lambda k: written[k])
    total = sum(table["written"].values())
    return f"{label} {_pct(written[label] / total)} ({_pct(table['weights'][label])})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/archetype-run"))
    p.add_argument("--personas", type=int, default=5000)
    p.add_argument("--judge-cards", type=int, default=1000)
    p.add_argument("--seed", type=int, default=2602)
    p.add_argument("--reply", default="soc_async.testing.scripted:drifting")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    runs = [
        one_run(args.out.with_name(f"{args.out.name}-{'on' if hint else 'off'}"), reply=args.reply,
                seed=args.seed, hint=hint, n=args.personas, cards=args.judge_cards)
        for hint in (True, False)
    ]  # fmt: skip
    print(markdown(runs))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
