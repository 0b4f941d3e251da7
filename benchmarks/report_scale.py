"""``soc-async report`` on a large synthetic run directory: wall time and peak memory.

Builds a run directory of N conversations (default 100,000), N experiences and N/5
personas whose records obey every rule (so the checker does its full work) and whose
words come from a Zipf-distributed vocabulary (so the lexical and near-duplicate figures
see realistic text), then runs ``soc-async report DIR`` in a child process and reports
its wall time and peak RSS (``ru_maxrss`` of the child, from ``os.wait4``).

    python benchmarks/report_scale.py [--conversations 100000] [--dir DIR] [--keep]
        [--json out.json]

The directory goes to a temporary folder (removed unless --keep); ``--dir`` reuses or
writes one at a given path (kept).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import msgspec

from soc_async import config as config_mod
from soc_async.records import (
    Conversation,
    Experience,
    ExperienceMeta,
    Failure,
    Message,
    Persona,
    PersonaMeta,
    TopicSlot,
    Turn,
    Usage,
    encode_line,
    make_id,
)
from soc_async.store.runinfo import RunIdentity

SEED = 11
MAX_TURNS = 20
SECTIONS = (
    "Physical & Lifestyle", "Personality Overview", "Core Traits", "Emotional Profile",
    "Relationships", "Values", "Motivations & Fears", "Behavioral Patterns",
    "Communication Style", "Example Messages", "Summary",
)  # fmt: skip
PLACES = {
    "Europe": ["Porto, Portugal", "Lyon, France", "Kraków, Poland", "Leeds, United Kingdom"],
    "East Asia": ["Wuhan, Hubei, China", "Osaka, Japan", "Busan, South Korea"],
    "South Asia": ["Pune, Maharashtra, India", "Dhaka, Bangladesh", "Kandy, Sri Lanka"],
    "Africa": ["Lagos, Nigeria", "Nairobi, Kenya", "Addis Ababa, Ethiopia"],
    "Latin America": ["Belo Horizonte, Brazil", "Puebla, Mexico", "Medellín, Colombia"],
    "North America": ["Columbus, Ohio, United States", "Calgary, Alberta, Canada"],
}
GAPS = {"realtime": (0, 10), "delayed": (5, 300), "async": (60, 3000)}
TYPES = ("text",) * 17 + ("image", "sticker", "audio")


class Words:
    """Pseudo-words drawn with Zipf frequencies, as a language's words are."""

    def __init__(self, rng: random.Random, size: int = 6000) -> None:
        letters = "abcdefghijklmnoprstuvwy"
        vocab = {"".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(size * 2)}
        self.vocab = sorted(vocab)[:size]
        rng.shuffle(self.vocab)
        self.cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(self.vocab))))
        self.rng = rng

    def sentence(self, lo: int, hi: int) -> str:
        words = self.rng.choices(self.vocab, cum_weights=self.cum, k=self.rng.randint(lo, hi))
        return " ".join(words).capitalize() + "."


def age(rng: random.Random) -> int:
    while True:
        a = round(rng.gauss(25, 5))
        if 18 <= a <= 70:
            return a


def write_personas(f: BinaryIO, n: int, rng: random.Random, w: Words) -> dict[str, list[str]]:
    """Writes ``n`` cards; returns the persona ids by region, for pairing."""
    by_region: dict[str, list[str]] = {r: [] for r in PLACES}
    for i in range(n):
        region = rng.choice(list(PLACES))
        place = rng.choice(PLACES[region])
        name = f"{w.sentence(1, 1)[:-1]} {w.sentence(1, 1)[:-1]}"
        years = age(rng)
        lines = ["<character>", "**Basic Information**", f"**Name:** {name}",
                 f"**Age:** {years}", f"**Location:** {place}", ""]  # fmt: skip
        for title in SECTIONS:
            lines += [
                f"**{title}**",
                " ".join(w.sentence(8, 14) for _ in range(rng.randint(2, 4))),
                "",
            ]
        lines.append("</character>")
        pid = make_id(SEED, "personas", i)
        meta = PersonaMeta(
            iteration=i, model="synthetic-8b", region=region, subregion=place, name=name,
            gender=rng.choice(("female", "male")), age=years, time_taken=1.0,
            prompt_tokens=1500, completion_tokens=900,
        )  # fmt: skip
        f.write(encode_line(Persona(id=pid, persona_text="\n".join(lines), meta=meta)))
        by_region[region].append(pid)
    return by_region


def pair(
    rng: random.Random, by_region: dict[str, list[str]], every: list[str]
) -> tuple[str, str, bool]:
    """Half the pairs from one region, as the experience stage draws them."""
    if rng.random() < 0.5:
        region = rng.choice([r for r, ids in by_region.items() if len(ids) >= 2])
        a, b = rng.sample(by_region[region], 2)
        return a, b, True
    a, b = rng.sample(every, 2)
    return a, b, False


def experience(
    i: int, rng: random.Random, w: Words, by_region: dict[str, list[str]], every: list[str]
) -> Experience:
    a, b, matched = pair(rng, by_region, every)
    style = rng.choice(("freeform", "semi-structured", "structured"))
    titles = [w.sentence(1, 3)[:-1] for _ in range(rng.randint(2, 4))]
    topics = [
        TopicSlot(title=f"{t} {k}", turns=rng.randint(1, 4), primary=k == 0 and style != "freeform")
        for k, t in enumerate(titles)
    ]
    nxt = topics[1].title if len(topics) > 1 else "end"
    return Experience(
        id=make_id(SEED, "experiences", i),
        persona_ids=[a, b],
        experience_text=" ".join(w.sentence(8, 16) for _ in range(rng.randint(6, 10))),
        style=style,  # type: ignore[arg-type]
        cadence=rng.choice(("realtime", "delayed", "async")),  # type: ignore[arg-type]
        topics=topics,
        initial_state=f"{topics[0].title}; {topics[0].turns}; {nxt}",
        instant_events=[w.sentence(5, 10) for _ in range(rng.randint(2, 5))],
        opener=rng.choice((a, b)),
        meta=ExperienceMeta(
            iteration=i,
            model="synthetic-8b",
            time_taken=2.0,
            region_matched=matched,
            prompt_tokens=2500,
            completion_tokens=600,
        ),
    )


def states(topics: list[TopicSlot], n: int) -> list[str]:
    lines = []
    for k, t in enumerate(topics):
        nxt = topics[k + 1].title if k + 1 < len(topics) else "end"
        for left in range(t.turns - 1, -1, -1):
            lines.append(f"{t.title}; {left} {'turn' if left == 1 else 'turns'} remaining; {nxt}")
    while len(lines) < n:
        lines.append(f"{topics[-1].title}; 0 turns remaining; end")
    return lines[:n]


def conversation(j: int, e: Experience, rng: random.Random, w: Words) -> Conversation:
    budget = sum(t.turns for t in e.topics)
    if e.style == "freeform":
        n, ended = min(MAX_TURNS, budget), "max_turns"
    elif rng.random() < 0.7:
        n, ended = budget, "exhausted"
    else:
        n, ended = MAX_TURNS, "max_turns"
    opener = e.opener
    other = e.persona_ids[1] if e.persona_ids[0] == opener else e.persona_ids[0]
    clock = datetime(2026, 3, 15, rng.randint(7, 20), rng.randint(0, 59))
    lo, hi = GAPS[e.cadence]
    turns = []
    for k, state in enumerate(states(e.topics, n)):
        messages = []
        for m in range(rng.randint(1, 3)):
            if k or m:
                clock += timedelta(minutes=rng.randint(lo, hi) if m == 0 else rng.randint(0, 3))
            kind = rng.choice(TYPES)
            text = w.sentence(3, 14) if kind == "text" else f"[{w.sentence(1, 3)[:-1]}]"
            messages.append(Message(t=f"{clock:%H:%M}", d=f"{clock:%d.%m}", type=kind, text=text))  # type: ignore[arg-type]
        event = w.sentence(4, 8) if rng.random() < 0.05 else None
        turns.append(
            Turn(
                sender=opener if k % 2 == 0 else other,
                state=state,
                messages=messages,
                instant_event=event,
            )
        )
    return Conversation(
        chat_id=make_id(SEED, "chats", j),
        experience_id=e.id,
        persona_ids=[opener, other],
        style=e.style,
        cadence=e.cadence,
        topics=e.topics,
        turns=turns,
        summary="",
        ended_by=ended,  # type: ignore[arg-type]
        model="synthetic-8b",
        usage=Usage(prompt=3000 * n, completion=60 * n, cached=2400 * n),
    )


def build(path: Path, conversations: int) -> dict[str, int]:
    """The synthetic run directory at ``path``; returns its record counts."""
    rng = random.Random(SEED)
    w = Words(rng)
    path.mkdir(parents=True, exist_ok=True)
    cfg = config_mod.from_dict(
        # min_turns 1 and an overtime past max_turns: the chats below end as chats did
        # before those settings (short freeform plans, structured chats to max_turns).
        {"seed": SEED,
         "chat": {"max_turns": MAX_TURNS, "min_turns": 1, "max_overtime_turns": MAX_TURNS},
         "targets": {"personas": max(10, conversations // 5), "experiences": conversations,
                     "chats": conversations}},
        "report_scale",
    )  # fmt: skip
    (path / "config.toml").write_text(config_mod.dump(cfg))
    (path / "run.json").write_bytes(msgspec.json.encode(RunIdentity.new(SEED)) + b"\n")
    n_personas = max(10, conversations // 5)
    with (path / "personas.jsonl").open("wb") as f:
        by_region = write_personas(f, n_personas, rng, w)
    every = [pid for ids in by_region.values() for pid in ids]
    failures = 0
    with (
        (path / "experiences.jsonl").open("wb") as ef,
        (path / "conversations.jsonl").open("wb") as cf,
        (path / "failures.jsonl").open("wb") as ff,
    ):
        for j in range(conversations):
            e = experience(j, rng, w, by_region, every)
            ef.write(encode_line(e))
            if rng.random() < 0.02:
                failures += 1
                reason = rng.choice(("retries_exhausted:state_mismatch", "request:timeout"))
                failed = Failure(
                    id=make_id(SEED, "chats", j), stage="chats", reason=reason, attempts=4
                )
                ff.write(encode_line(failed))
                continue
            cf.write(encode_line(conversation(j, e, rng, w)))
    return {
        "personas": n_personas,
        "experiences": conversations,
        "conversations": conversations - failures,
        "failures": failures,
    }


def measure(path: Path, out: Path) -> dict[str, float]:
    """Wall time and peak RSS of ``soc-async report`` run as a child process."""
    cmd = [sys.executable, "-m", "soc_async.cli", "report", str(path),
           "--out", str(out / "report.html"), "--json", str(out / "report.json")]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"soc-async report failed:\n{stderr.decode()[-2000:]}")
    kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mib": round(kib / 1024, 1),
        "summary": stdout.decode().strip(),  # type: ignore[dict-item]
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conversations", type=int, default=100_000)
    p.add_argument("--dir", type=Path, help="where the synthetic run goes (kept)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="soc-report-scale-"))
    run = base / "run" if args.dir is None else base
    try:
        t0 = time.perf_counter()
        if (run / "run.json").exists() and args.dir is not None:
            counts = {"reused": 1}
        else:
            counts = build(run, args.conversations)
        built_s = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in run.glob("*.jsonl"))
        figures = measure(
            run, base / "out" if args.dir is None else base.with_name(base.name + "-report")
        )
        result = {
            "conversations": args.conversations,
            "records": counts,
            "data_mib": round(size / 2**20, 1),
            "build_s": round(built_s, 1),
            **figures,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}",
        }
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
