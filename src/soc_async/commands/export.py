"""``soc-async export``: a run directory as a dataset (soc-2602, soc-2508, spb, messages)."""

from __future__ import annotations

import argparse
from typing import Any

from soc_async.errors import EXIT_OK

FORMATS = ("soc-2602", "soc-2508", "spb", "messages")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write a run directory as a dataset: soc-2602 | soc-2508 | spb | messages",
        description="Write a run directory as a dataset that `datasets.load_dataset` reads: "
        "JSONL per split (Parquet too with --parquet) and a dataset card README.md. "
        "docs/export.md describes every format field by field.",
    )
    p.add_argument("dir", metavar="DIR", help="a run directory")
    p.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        dest="fmt",
        help="the row format of the dataset (docs/export.md)",
    )
    p.add_argument(
        "--out", required=True, metavar="OUT", help="the dataset directory to write (new or empty)"
    )
    p.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="NAME=FRACTION",
        help="hold out a split grouped by persona, e.g. validation=0.05 (repeatable)",
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the split (default: 0)"
    )
    p.add_argument(
        "--parquet",
        action="store_true",
        help="also write Parquet files next to the JSONL (needs pyarrow)",
    )
    p.add_argument("--license", metavar="ID", help="license id for the card, e.g. cc-by-4.0")
    m = p.add_argument_group("messages format")
    m.add_argument(
        "--timestamps",
        choices=("none", "prefix", "xml"),
        default="prefix",
        help="how a message shows its time (default prefix: [DD.MM HH:MM] text)",
    )
    m.add_argument(
        "--media",
        choices=("tag", "label", "text"),
        default="tag",
        help="how a media message reads (default tag: <image>...</image>)",
    )
    m.add_argument(
        "--events",
        action="store_true",
        help="put the speaker's private instant event into its assistant turn",
    )
    m.add_argument(
        "--system-template",
        metavar="FILE",
        help="a Jinja2 file for the system prompt of each sample (default: the built-in one)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from soc_async.export import MessagesOptions, export_run
    from soc_async.export.split import parse_splits

    options = MessagesOptions(
        timestamps=args.timestamps,
        media=args.media,
        events=args.events,
        system_template=args.system_template,
    )
    summary = export_run(
        args.dir,
        args.out,
        fmt=args.fmt,
        splits=parse_splits(args.split),
        seed=args.seed,
        parquet=args.parquet,
        messages=options,
        license=args.license,
    )
    rows = ", ".join(f"{split} {n:,}" for split, n in summary.rows.items())
    dropped = (
        f"; {summary.dropped:,} conversations left out by the split" if summary.dropped else ""
    )
    print(f"{summary.out}: {summary.format}: {rows} rows{dropped} in {summary.seconds:.1f}s")
    return EXIT_OK


__all__ = ["handle", "register"]
