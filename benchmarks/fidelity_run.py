"""A default run's cards and experiences against the hand-written seeds.

Runs ``soc-async run`` with the default profile (sized for a real model) against the
fake server, whose scripted model writes seed-length cards and experiences
(``scripted:rich``) and refuses with HTTP 422 any reply the request's grammar would not
have allowed (``scripted:rich_checked``), with three persona models and two experience
models by weight. Then it measures the run directory against ``seeds/``:

- characters per card section, and per experience part (narrative, topic lines,
  events), generated against seed: median and max; replies the grammars refused;
- start dates: distinct start days of the experiences and distinct first ``d=`` of the
  conversations, their range, weekdays, and whether each narrative names its weekday;
- the model mix per stage against the configured weights;
- instant events: how many are attributed, and any given to a persona they do not name;
- occupations and bands sampled; how conversations ended; failures by reason;
- messages per turn by cadence against the configured pacing, and the ages against the
  configured age law (``--age-bands`` asks for a table of bands wider than the default
  N(25, 5)), by the report's own figures (report/pacing.py, report/ages.py).

    python benchmarks/fidelity_run.py [--out /tmp/fidelity-run] [--personas 300]
        [--experiences 1000] [--chats 1000] [--age-bands] [--json figures.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import msgspec

from soc_async.formats.character import SECTIONS
from soc_async.seeds import cards, persona_cards

PERSONA_MODELS = {"Kimi-K2-0905": 0.4, "Kimi-K2.5": 0.35, "GLM-5": 0.25}
EXPERIENCE_MODELS = {"Kimi-K2.5": 0.6, "GLM-5": 0.4}
TURN_MODELS = {"Kimi-K2.5": 0.5, "GLM-5": 0.5}


# A broader age law than the default N(25, 5), for --age-bands (persona.age_bands).
AGE_BANDS = [(18, 24, 0.25), (25, 34, 0.25), (35, 44, 0.2), (45, 54, 0.15), (55, 70, 0.15)]


def config_text(seed: int, age_bands: bool = False) -> str:
    lines = [
        'profile = "default"',
        f"seed = {seed}",
        "[concurrency]",
        "fixed = 64",
        "[client]",
        "timeout_s = 30.0",
        "backoff_base_s = 0.05",
        "backoff_max_s = 0.5",
    ]
    kinds = (("persona", PERSONA_MODELS), ("experience", EXPERIENCE_MODELS), ("turn", TURN_MODELS))
    for kind, models in kinds:
        for name, weight in models.items():
            lines += [f"[[calls.{kind}.models]]", f'name = "{name}"', f"weight = {weight}"]
    if age_bands:
        lines += ["[persona]", 'age_distribution = "bands"']
        for lo, hi, weight in AGE_BANDS:
            lines += ["[[persona.age_bands]]", f"min = {lo}", f"max = {hi}", f"weight = {weight}"]
    return "\n".join(lines) + "\n"


def pacing_and_ages(out: Path) -> dict[str, Any]:
    """Messages per turn by cadence and ages by band, against the run's config, as
    ``soc-async report`` computes them."""
    from soc_async import config as config_mod
    from soc_async.records import Conversation, Persona
    from soc_async.report.ages import AgesFigure
    from soc_async.report.pacing import PacingFigure
    from soc_async.store import read_records

    cfg = config_mod.load(out / "config.toml")
    pacing, ages = PacingFigure(cfg.chat), AgesFigure(cfg.persona)
    for _, c in read_records(out / "conversations.jsonl", (Conversation,)):
        pacing.conversation(c)
    for _, p in read_records(out / "personas.jsonl", (Persona,)):
        ages.persona(p)
    return {
        "pacing": msgspec.to_builtins(pacing.result()),
        "ages": msgspec.to_builtins(ages.result()),
    }


def pacing_and_ages_markdown(f: dict[str, Any]) -> list[str]:
    rows = ["", "| cadence | turns | 1 message | 2 messages | 3 messages | worst z |"]
    rows.append("|---|---|---|---|---|---|")
    for r in f["pacing"]["rows"]:
        cells = [
            f"{r['shares'].get(k, 0):.1%} ({r['target'].get(k, 0):.1%})" for k in ("1", "2", "3")
        ]
        rows.append(
            f"| {r['cadence']} | {r['turns']:,} | {' | '.join(cells)} | {r['worst_z']:.1f} |"
        )
    a = f["ages"]
    rows += ["", f"Ages: {a['law']}; {a['personas']:,} personas; total variation "
             f"{a['total_variation']:.3f}.", "", "| ages | personas | share | law | z |",
             "|---|---|---|---|---|"]  # fmt: skip
    for b in a["bands"]:
        z = "-" if b["z"] is None else f"{b['z']:+.1f}"
        rows.append(
            f"| {b['band']} | {b['personas']:,} | {b['share']:.1%} | {b['target']:.1%} | {z} |"
        )
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def card_sections(text: str) -> dict[str, str]:
    """Section text by header (the stored cards are in the canonical layout)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        header = re.fullmatch(r"\*\*([^*]+)\*\*", line.strip())
        if header and header.group(1) in SECTIONS:
            current = out.setdefault(header.group(1), [])
        elif current is not None and line.strip() != "</character>":
            current.append(line)
    return {h: "\n".join(v).strip() for h, v in out.items()}


def experience_parts(text: str) -> dict[str, list[int]]:
    """Characters of the narrative, of each topic line and of each event line."""
    narrative = text.split("Conversation style:")[0].removeprefix("<experience>").strip()
    topics, events, where = [], [], None
    for line in text.splitlines():
        if line.startswith("The conversation will likely cover"):
            where = topics
        elif line.startswith("Possible instant events"):
            where = events
        elif line.startswith("- ") and where is not None:
            where.append(len(line) - 2)
        elif not line.strip():
            where = None if where is topics else where
    return {"narrative": [len(narrative)], "topic line": topics, "event": events}


def spread(values: list[int]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.0f} / {max(values)}"


def measure(out: Path) -> dict[str, Any]:
    personas = read_jsonl(out / "personas.jsonl")
    experiences = read_jsonl(out / "experiences.jsonl")
    conversations = read_jsonl(out / "conversations.jsonl")
    failures = read_jsonl(out / "failures.jsonl")

    seed_sections: dict[str, list[int]] = {h: [] for h in SECTIONS}
    for text in persona_cards():
        for h, body in card_sections(text).items():
            seed_sections[h].append(len(body))
    run_sections: dict[str, list[int]] = {h: [] for h in SECTIONS}
    for p in personas:
        for h, body in card_sections(p["persona_text"]).items():
            run_sections[h].append(len(body))
    seed_parts: dict[str, list[int]] = {}
    for text in cards("experiences", ".txt"):
        for k, v in experience_parts(text).items():
            seed_parts.setdefault(k, []).extend(v)
    run_parts: dict[str, list[int]] = {}
    for e in experiences:
        for k, v in experience_parts(e["experience_text"]).items():
            run_parts.setdefault(k, []).extend(v)

    starts = [date.fromisoformat(e["start_date"]) for e in experiences if e.get("start_date")]
    weekday_named = sum(
        f"It is {date.fromisoformat(e['start_date']):%A}," in e["experience_text"]
        for e in experiences
    )
    first_days = {c["turns"][0]["messages"][0]["d"] for c in conversations if c["turns"]}

    def mix(records: list[dict[str, Any]], key: str) -> dict[str, float]:
        counts = Counter(r["meta"]["model"] if key == "meta" else r["model"] for r in records)
        total = sum(counts.values()) or 1
        return {m: round(n / total, 3) for m, n in counts.most_common()}

    owners = {e["id"]: dict(zip(e["instant_events"], e["event_personas"], strict=True))
              for e in experiences}  # fmt: skip
    given = wrong = attributed = 0
    for c in conversations:
        for t in c["turns"]:
            if t["instant_event"] is not None:
                owner = owners[c["experience_id"]][t["instant_event"]]
                given += 1
                attributed += owner is not None
                wrong += owner not in (None, t["sender"])
    all_events = [o for e in experiences for o in e["event_personas"]]

    return {
        "counts": {
            "personas": len(personas),
            "experiences": len(experiences),
            "conversations": len(conversations),
            "failures": len(failures),
        },
        "failures_by_reason": dict(Counter(f["reason"] for f in failures).most_common()),
        "grammar_refusals": sum(f["reason"] == "request:http_422" for f in failures),
        "card_sections": {
            h: {"seeds": spread(seed_sections[h]), "run": spread(run_sections[h])} for h in SECTIONS
        },
        "card_chars": {
            "seeds": spread([len(t) for t in persona_cards()]),
            "run": spread([len(p["persona_text"]) for p in personas]),
        },
        "experience_parts": {
            k: {"seeds": spread(seed_parts.get(k, [])), "run": spread(run_parts.get(k, []))}
            for k in ("narrative", "topic line", "event")
        },
        "start_dates": {
            "distinct_start_days": len(set(starts)),
            "first": min(starts).isoformat() if starts else None,
            "last": max(starts).isoformat() if starts else None,
            "weekdays": dict(sorted(Counter(d.strftime("%a") for d in starts).items())),
            "narratives_naming_their_weekday": weekday_named,
            "distinct_first_d_of_conversations": len(first_days),
        },
        "model_mix": {
            "personas": mix(personas, "meta"),
            "persona weights": PERSONA_MODELS,
            "experiences": mix(experiences, "meta"),
            "experience weights": EXPERIENCE_MODELS,
            "conversations": mix(conversations, "model"),
            "conversation weights": TURN_MODELS,
        },
        "events": {
            "events_written": len(all_events),
            "attributed_share": round(sum(o is not None for o in all_events) / len(all_events), 3)
            if all_events
            else 0,
            "given_in_turns": given,
            "given_attributed": attributed,
            "given_to_the_other_person": wrong,
        },
        "personas": {
            "distinct_occupations": len({p["meta"]["occupation"] for p in personas}),
            "students": sum(p["meta"]["occupation"] == "student" for p in personas),
            "bands": dict(Counter(p["meta"]["band"] for p in personas).most_common()),
        },
        "ended_by": dict(Counter(c["ended_by"] for c in conversations).most_common()),
        "turns_median": statistics.median([len(c["turns"]) for c in conversations])
        if conversations
        else 0,
        **pacing_and_ages(out),
    }


def markdown(f: dict[str, Any]) -> str:
    rows = [
        "| card section | seeds: median / max chars | run: median / max chars |",
        "|---|---|---|",
    ]
    for h, v in f["card_sections"].items():
        rows.append(f"| {h} | {v['seeds']} | {v['run']} |")
    rows.append(f"| whole card | {f['card_chars']['seeds']} | {f['card_chars']['run']} |")
    rows += ["", "| experience part | seeds | run |", "|---|---|---|"]
    for k, v in f["experience_parts"].items():
        rows.append(f"| {k} | {v['seeds']} | {v['run']} |")
    s = f["start_dates"]
    rows += [
        "",
        f"Counts: {f['counts']}; failures by reason: {f['failures_by_reason']}; "
        f"replies the grammars refused: {f['grammar_refusals']}.",
        f"Start dates: {s['distinct_start_days']} distinct days from {s['first']} to {s['last']}; "
        f"weekdays {s['weekdays']}; narratives naming their start's weekday: "
        f"{s['narratives_naming_their_weekday']}; distinct first d= of conversations: "
        f"{s['distinct_first_d_of_conversations']}.",
        f"Model mix: {f['model_mix']}.",
        f"Events: {f['events']}.",
        f"Personas: {f['personas']}.",
        f"Ended by: {f['ended_by']}; median turns {f['turns_median']}.",
        *pacing_and_ages_markdown(f),
    ]
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/fidelity-run"))
    p.add_argument("--personas", type=int, default=300)
    p.add_argument("--experiences", type=int, default=1000)
    p.add_argument("--chats", type=int, default=1000)
    p.add_argument("--seed", type=int, default=2602)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--age-bands", action="store_true", help="draw ages from AGE_BANDS")
    p.add_argument("--measure-only", action="store_true", help="measure an existing --out")
    args = p.parse_args()

    if not args.measure_only:
        if args.out.exists():
            shutil.rmtree(args.out)
        cfg = args.out.with_suffix(".toml")
        cfg.write_text(config_text(args.seed, args.age_bands))
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "soc_async.testing.fake_server", "--port", str(port),
             "--reply", "soc_async.testing.scripted:rich_checked", "--no-record"],
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
            run = subprocess.run(
                [sys.executable, "-m", "soc_async.cli", "run", "--config", str(cfg),
                 "--endpoint", url, "--out", str(args.out),
                 "--personas", str(args.personas), "--experiences", str(args.experiences),
                 "--chats", str(args.chats)],
                capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"},
            )  # fmt: skip
            elapsed = time.monotonic() - t0
        finally:
            server.terminate()
            server.wait(30)
        print(run.stdout.strip())
        if run.returncode != 0:
            sys.exit(f"soc-async run failed ({run.returncode}): {run.stderr[-2000:]}")
        print(f"run took {elapsed:.0f} s")
    figures = measure(args.out)
    print(markdown(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
