"""The longest event-loop stall while a run of many records resumes.

Builds a run directory with N personas, N experiences and N conversations (synthetic
records of realistic size) plus a journal of chats in progress, then resumes it with the
real Pipeline (targets already met, so no model call is made) while a watcher task
measures how late the loop wakes it (sleeps of 5 ms). Also times the same reading done
inline, which is how long the loop stalled when that work ran on it.

    python benchmarks/resume_stall.py --records 100000

Figures go to docs/performance.md ("Resume of a large run").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from soc_async import config as config_mod
from soc_async.config import RunFacts
from soc_async.records import (
    Conversation,
    Experience,
    ExperienceMeta,
    Message,
    Persona,
    PersonaMeta,
    TopicSlot,
    Turn,
    Usage,
    encode_line,
    make_id,
)
from soc_async.run.pipeline import Pipeline, read_finished
from soc_async.run.progress import RunCounters
from soc_async.scheduler.runner import StopSignal
from soc_async.store import RunDir, RunIdentity

SEED = 3
CARD = ("**Core Traits:**\n- steady, a little wry, keeps lists\n" * 40)[:2400]
EXPERIENCE = ("They met at a night course and still trade notes on Sundays. " * 14)[:900]


def build(path: Path, n: int) -> None:
    run = RunDir.create(path, f"seed = {SEED}\n", RunIdentity.new(SEED))
    run.release()
    meta = PersonaMeta(
        iteration=0, model="m", region="Europe", subregion="Lyon, France", name="Ana Silva",
        gender="female", age=27, time_taken=1.0,
    )  # fmt: skip
    with (path / "personas.jsonl").open("wb") as f:
        for i in range(n):
            f.write(encode_line(Persona(id=make_id(SEED, "personas", i), persona_text=CARD,
                                        meta=meta)))  # fmt: skip
    topics = [
        TopicSlot(title="weekend plans", turns=4, primary=True),
        TopicSlot(title="rent", turns=3),
    ]
    with (path / "experiences.jsonl").open("wb") as f:
        for i in range(n):
            a, b = make_id(SEED, "personas", i), make_id(SEED, "personas", (i + 1) % n)
            f.write(encode_line(Experience(
                id=make_id(SEED, "experiences", i), persona_ids=[a, b], experience_text=EXPERIENCE,
                style="structured", cadence="realtime", topics=topics,
                initial_state="weekend plans; 3 turns remaining; next",
                instant_events=["the tram stops", "a parcel arrives"], opener=a,
                meta=ExperienceMeta(iteration=i, model="m", time_taken=1.0),
            )))  # fmt: skip
    message = Message(t="10:05", d="04.05", type="text", text="on my way, wait for me")
    turns = [
        Turn(sender="p", state=f"weekend plans; {3 - k} turns remaining; next",
             messages=[message, message])
        for k in range(7)
    ]  # fmt: skip
    with (path / "conversations.jsonl").open("wb") as f:
        for i in range(n):
            f.write(encode_line(Conversation(
                chat_id=make_id(SEED, "chats", i), experience_id=make_id(SEED, "experiences", i),
                persona_ids=["a", "b"], style="structured", cadence="realtime", topics=topics,
                turns=turns, summary="", ended_by="exhausted", model="m", usage=Usage(),
            )))  # fmt: skip


class _NoModel:
    async def complete(self, *args: object, **kwargs: object) -> object:
        raise AssertionError("a resume with every target met asks the model nothing")


async def resume(path: Path, n: int) -> dict[str, float]:
    cfg = config_mod.from_dict(
        {"seed": SEED, "out": str(path), "endpoints": ["http://127.0.0.1:9"],
         "targets": {"personas": n, "experiences": n, "chats": n}}
    )  # fmt: skip
    run = RunDir.open(path)
    worst = {"resume": 0.0, "shutdown": 0.0}
    phase = "resume"
    done = False
    close = run.aclose

    async def closing() -> None:  # the run's end: writers drain, what was read is freed
        nonlocal phase
        phase = "shutdown"
        await close()

    run.aclose = closing  # type: ignore[method-assign]

    async def watch() -> None:
        while not done:
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            late = time.perf_counter() - t0 - 0.005
            worst[phase] = max(worst[phase], late)

    # asyncio's debug mode names every callback that itself ran longer than this: the
    # loop's own blocking, apart from time the process waited for a CPU.
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.02
    blocked: list[tuple[str, float]] = []

    class _Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found = re.search(r"took ([0-9.]+) seconds", record.getMessage())
            if found:
                blocked.append((phase, float(found.group(1))))

    logging.getLogger("asyncio").addHandler(_Slow())
    watcher = asyncio.create_task(watch())
    pipeline = Pipeline(cfg, run, _NoModel(), facts=RunFacts(model="m"), stop=StopSignal(),
                        counters=RunCounters())  # type: ignore[arg-type]  # fmt: skip
    await pipeline.run()
    done = True
    await watcher
    run.release()
    for when, seconds in blocked:
        worst[f"{when}_blocked"] = max(worst.get(f"{when}_blocked", 0.0), seconds)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="soc-resume-"))
    try:
        path = root / "run"
        t0 = time.perf_counter()
        build(path, args.records)
        size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
        print(f"built {args.records:,} records of each kind ({size:,.0f} MiB) "
              f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        run = RunDir.open(path)
        t0 = time.perf_counter()
        read_finished(run)
        inline = time.perf_counter() - t0
        run.release()
        worst = asyncio.run(resume(path, args.records))
        print(f"reading the directory inline (the old stall): {inline:.2f} s")
        print(f"longest event-loop stall while resuming: {worst['resume'] * 1000:.0f} ms "
              f"(longest callback: {worst.get('resume_blocked', 0) * 1000:.0f} ms)")  # fmt: skip
        print(f"longest stall at the run's end (writers closed): {worst['shutdown'] * 1000:.0f} ms")
        print(f"peak RSS: {_peak_rss_mib():.0f} MiB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if os.name == "posix" else 0


if __name__ == "__main__":
    main()
