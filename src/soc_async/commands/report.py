"""``soc-async report DIR``: the dataset measured, as report.html and report.json."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from soc_async.commands.options import add_server_options, add_verbose
from soc_async.errors import EXIT_OK, InputError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="measure a run directory's dataset: report.html and report.json",
        description=(
            "Read a run directory (or a merged one), streaming its files, and write "
            "report.html (self-contained) and report.json: counts and failures, rules, "
            "demographics, experiences, chat shape, naturalness, duplicates, archetype "
            "drift, and with --judge a sample scored by the served model. docs/report.md "
            "explains every figure."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="a run directory, or one written by merge")
    p.add_argument("--out", metavar="FILE", help="the HTML report (default: DIR/report.html)")
    p.add_argument("--json", metavar="FILE", help="the JSON report (default: DIR/report.json)")
    p.add_argument(
        "--judge",
        type=int,
        default=0,
        metavar="N",
        help="score N sampled conversations with the served model (judge.jsonl beside "
        "the report keeps verdicts: a rerun judges only what is missing)",
    )
    p.add_argument(
        "--judge-seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the sample --judge scores (default: 0)",
    )
    p.add_argument(
        "--judge-cards",
        type=int,
        default=None,
        metavar="M",
        help="read the temperament and coping style of M sampled persona cards with the "
        "served model (the archetype call kind; default: the N of --judge; archetypes.jsonl "
        "beside the report keeps readings)",
    )
    p.add_argument(
        "--compare",
        metavar="B",
        help="print the differences that matter against B: a report.json or a run directory",
    )
    add_server_options(p, when="--judge/--judge-cards")
    add_verbose(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    import msgspec

    from soc_async.report import build_report, render, write_report

    run_dir = Path(args.dir)
    html = Path(args.out) if args.out else run_dir / "report.html"
    json_path = Path(args.json) if args.json else run_dir / "report.json"
    if args.judge < 0:
        raise InputError(f"--judge {args.judge}: expected a number of conversations >= 0")
    cards = args.judge if args.judge_cards is None else args.judge_cards
    if cards < 0:
        raise InputError(f"--judge-cards {cards}: expected a number of cards >= 0")
    judge, readings = None, None
    if args.judge or cards:
        judge, readings = _judge(args, run_dir, html.parent, cards)
    report = build_report(run_dir, judge=judge, archetype_judge=readings)
    report.human = _human(run_dir, html.parent)
    write_report(report, html=html, json=json_path)
    rules = report.rules.conversations
    print(
        f"{html} and {json_path}: {report.counts.conversations:,} conversations, "
        f"{rules.hits:,} of {rules.total:,} pass every rule"
        + (f"; {judge.judged} judged" if judge is not None else "")
        + (f"; {readings.read} cards read" if readings is not None else "")
    )
    if args.compare:
        other = _other(Path(args.compare))
        mine = msgspec.json.decode(msgspec.json.encode(report))
        print(render(mine, other, (str(run_dir), args.compare)))
        print_ab(report.human, args.compare, other)
    return EXIT_OK


def _judge(args: argparse.Namespace, run_dir: Path, where: Path, cards: int) -> tuple[Any, Any]:
    """The judged conversations' section (None with --judge 0) and the cards' readings
    (None with no cards to read), asked in one session of the served model."""
    from soc_async import config as config_mod
    from soc_async.commands.options import server_overrides
    from soc_async.report.archetype_judging import (
        ARCHETYPE_FILE,
        ArchetypeStore,
        read_archetypes,
    )
    from soc_async.report.judging import JUDGE_FILE, JudgeStore, judge_sample
    from soc_async.run.app import with_gateway
    from soc_async.store.rundata import RunData

    data = RunData(run_dir)  # a RunDirError before any server starts
    # The run's own config file (a merged run's first shard's), unless --config names one.
    path = args.config or (data.config_source if data.config_text is not None else None)
    cfg = config_mod.resolve(path, server_overrides(args))
    store = JudgeStore(where / JUDGE_FILE)
    readings = ArchetypeStore(where / ARCHETYPE_FILE)

    async def work(gateway: Any) -> tuple[Any, Any]:
        judged = (
            await judge_sample(
                gateway,
                gateway.config,
                gateway.facts,
                run_dir,
                store,
                n=args.judge,
                seed=args.judge_seed,
            )
            if args.judge
            else None
        )
        read = (
            await read_archetypes(
                gateway,
                run_dir,
                gateway.config,
                gateway.facts,
                readings,
                n=cards,
                seed=args.judge_seed,
            )
            if cards
            else None
        )
        return judged, read

    return with_gateway(cfg, work)


def _human(run_dir: Path, where: Path) -> Any:
    """What people said in ``soc-async annotate`` (None without annotations.jsonl)."""
    from soc_async.report.human import human_section
    from soc_async.report.judging import JUDGE_FILE

    return human_section(run_dir, judge_file=where / JUDGE_FILE)


def print_ab(human: Any, compare: str, other: dict[str, Any]) -> None:
    """The blind A/B answers against the compared run, where people gave any."""
    from soc_async.report.human import ab_lines

    key = other.get("meta", {}).get("run_key")
    lines = ab_lines(human, compare, key if isinstance(key, str) else None)
    if lines:
        print("\n".join(lines))


def _other(path: Path) -> dict[str, Any]:
    """The report to compare with: a report.json, or a run directory measured now."""
    import msgspec

    from soc_async.report import build_report

    if path.is_dir():
        return msgspec.json.decode(msgspec.json.encode(build_report(path)))
    try:
        data = msgspec.json.decode(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"--compare {path}: no such file or directory") from None
    except msgspec.DecodeError as exc:
        raise InputError(f"--compare {path}: not a report.json ({exc})") from exc
    if not isinstance(data, dict) or "meta" not in data:
        raise InputError(f"--compare {path}: not a report.json (no meta)")
    return data


__all__ = ["handle", "register"]
