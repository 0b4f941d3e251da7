"""``soc-async run`` and the single-stage commands ``personas``, ``experiences``, ``chats``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from soc_async import config as config_mod
from soc_async.commands.options import add_server_options, add_verbose, server_overrides
from soc_async.errors import EXIT_INTERRUPTED, EXIT_OK, InputError, Interrupted
from soc_async.store import CONFIG, check_stage_inputs

# A run that starts the embedded CPU server (no endpoint, no server.model) gets this
# profile of defaults unless its config names one: src/soc_async/profiles/embedded-cpu.toml.
EMBEDDED_PROFILE = config_mod.EMBEDDED_PROFILE


def _generation_options(p: argparse.ArgumentParser, *, chats: bool) -> None:
    """The options every generating command takes; ``chats``: those about chat turns too."""
    add_server_options(p)
    p.add_argument("--out", metavar="DIR", help="the run directory to write (default: runs/latest)")
    p.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="hold N requests in flight instead of letting the adaptive controller choose",
    )
    p.add_argument(
        "--seed", type=int, metavar="N", help="seed of every random draw of the run (default: 0)"
    )
    if chats:
        p.add_argument(
            "--max-turns", type=int, metavar="N", help="at most N turns per conversation"
        )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="write only shard I of N (0-based) of the run's ids, for a job array",
    )
    p.add_argument(
        "--no-grammar",
        action="store_true",
        help="send no grammars (the model's replies are only validated, not constrained)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective config as TOML and exit without generating",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics (soc_async_*) on PORT while the run lasts "
        "(0: a free port, logged; default: off)",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the address --metrics-port listens on (default: 127.0.0.1; 0.0.0.0 for every "
        "interface)",
    )
    add_verbose(p)


def register(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="generate personas, experiences and chats into a run directory",
        description="Generate a dataset: personas, then experiences, then chats. With no "
        "--endpoint, --endpoints-file or server in the config, starts the embedded CPU "
        "server for a small demo run and stops it at the end.",
    )
    _generation_options(run, chats=True)
    run.add_argument("--personas", type=int, metavar="N", help="how many personas to write in all")
    run.add_argument(
        "--experiences", type=int, metavar="N", help="how many experiences to write in all"
    )
    run.add_argument(
        "--chats", type=int, metavar="N", help="how many conversations to write in all"
    )
    run.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR with its own config (the other flags apply on top)",
    )
    run.set_defaults(handler=handle)

    personas = sub.add_parser(
        "personas",
        help="the persona stage alone",
        description="Write N persona cards into a run directory (personas.jsonl), and "
        "nothing else.",
    )
    _generation_options(personas, chats=False)
    personas.add_argument(
        "-n", type=int, required=True, metavar="N", help="how many personas to write"
    )
    personas.set_defaults(handler=handle)

    experiences = sub.add_parser(
        "experiences",
        help="the experience stage alone",
        description="Pair the personas of a personas.jsonl and write N experiences into a "
        "run directory (experiences.jsonl, with the personas they use).",
    )
    _generation_options(experiences, chats=False)
    experiences.add_argument(
        "-n", type=int, required=True, metavar="N", help="how many experiences to write"
    )
    experiences.add_argument(
        "--personas-file",
        required=True,
        metavar="FILE",
        help="the personas.jsonl whose personas are paired",
    )
    _allow_torn(experiences)
    experiences.set_defaults(handler=handle)

    chats = sub.add_parser(
        "chats",
        help="the chat stage alone",
        description="Write conversations for the experiences of an experiences.jsonl into a "
        "run directory (conversations.jsonl).",
    )
    _generation_options(chats, chats=True)
    chats.add_argument(
        "-n",
        type=int,
        metavar="N",
        help="how many conversations to write (default: one per experience)",
    )
    chats.add_argument(
        "--experiences-file",
        required=True,
        metavar="FILE",
        help="the experiences.jsonl to write conversations for",
    )
    chats.add_argument(
        "--personas-file",
        metavar="FILE",
        help="the personas.jsonl those experiences name (default: the personas.jsonl "
        "beside --experiences-file)",
    )
    _allow_torn(chats)
    chats.set_defaults(handler=handle)


def _allow_torn(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-torn",
        action="store_true",
        help="leave out a torn last line of an input file (one copied while being written)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {
        **server_overrides(args),
        "out": args.out,
        "concurrency.fixed": args.concurrency,
        "seed": args.seed,
        "chat.max_turns": getattr(args, "max_turns", None),
        "shard": args.shard,
    }
    if args.command == "run":
        changes |= {
            "targets.personas": args.personas,
            "targets.experiences": args.experiences,
            "targets.chats": args.chats,
        }
    elif args.command == "personas":
        changes |= {"targets.personas": args.n, "targets.experiences": 0, "targets.chats": 0}
    elif args.command == "experiences":
        changes |= {"targets.personas": 0, "targets.experiences": args.n, "targets.chats": 0}
    elif args.command == "chats":
        changes |= {"targets.personas": 0, "targets.experiences": 0, "targets.chats": args.n}
    if args.no_grammar:
        for kind in config_mod.CALL_KINDS:
            changes[f"calls.{kind}.grammar"] = False
    return changes


def resolve_config(args: argparse.Namespace) -> config_mod.RunConfig:
    """The effective config (:func:`soc_async.config.resolve`): the resumed run's own,
    or the file's, then the flags on top."""
    changes = _overrides(args)
    path = args.config
    if getattr(args, "resume", None):
        path = Path(args.resume) / CONFIG
        if not path.is_file():
            raise InputError(f"{args.resume}: not a run directory (no {CONFIG} to resume)")
        changes["out"] = args.out or str(Path(args.resume))
    return config_mod.resolve(path, changes)


def handle(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    if args.print_config:
        print(config_mod.dump(cfg), end="")
        return EXIT_OK
    imports = _checked_inputs(args)
    from soc_async.run.app import execute

    resume = bool(getattr(args, "resume", None))
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise InputError(f"--metrics-port: expected a port number 0-65535, got {args.metrics_port}")
    metrics_at = None if args.metrics_port is None else (args.metrics_host, args.metrics_port)
    try:
        summary = execute(
            cfg,
            imports=imports,
            resume=resume,
            chats_from_imports=args.command == "chats" and args.n is None,
            allow_torn=getattr(args, "allow_torn", False),
            metrics_at=metrics_at,
        )
    except Interrupted as exc:
        print(f"soc-async: {exc}", file=sys.stderr)
        print(f"resume with: soc-async run --resume {shlex.quote(cfg.out)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary)
    return EXIT_OK


def _checked_inputs(args: argparse.Namespace) -> dict[str, Path]:
    """The input files of a single-stage command, read whole and checked before any
    server is asked or the output directory exists (InputError naming FILE:LINE)."""
    imports: dict[str, Path] = {}
    if args.command == "experiences":
        imports["personas"] = _existing(args.personas_file, "--personas-file")
    elif args.command == "chats":
        exp = _existing(args.experiences_file, "--experiences-file")
        imports["experiences"] = exp
        imports["personas"] = _existing(
            args.personas_file or str(exp.with_name("personas.jsonl")), "--personas-file"
        )
    if imports:
        check_stage_inputs(
            personas=imports.get("personas"),
            experiences=imports.get("experiences"),
            min_personas=2 if args.command == "experiences" else 0,
            allow_torn=args.allow_torn,
        )
    return imports


def _existing(path: str, flag: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{flag} {path}: no such file (expected a .jsonl file of a run)")
    return p


__all__ = ["EMBEDDED_PROFILE", "handle", "register", "resolve_config"]
