"""The ``soc-async`` command: arguments into a config, the config into a run, and every
error into one line and an exit code, here and nowhere else.

Exit codes: 0 done, 1 the run failed, 2 bad usage or bad input, 130 interrupted after a
clean flush.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from soc_async import config as config_mod
from soc_async import logs
from soc_async import merge as merge_cmd
from soc_async.bench import cli as bench_cli
from soc_async.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    InputError,
    Interrupted,
    SocError,
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit code 2, like every input error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message} (see {self.prog} --help)")


def _common_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file (docs/config.md)")
    p.add_argument(
        "--endpoint",
        action="append",
        metavar="URL",
        help="vLLM base URL, repeatable; none: start the embedded server",
    )
    p.add_argument("--out", metavar="DIR", help="run directory")
    p.add_argument("--model", help="served model name (default: what the server serves)")
    p.add_argument("--concurrency", type=int, metavar="N", help="fixed requests in flight")
    p.add_argument("--seed", type=int)
    p.add_argument("--max-turns", type=int, metavar="N", help="turn limit per chat")
    p.add_argument("--shard", metavar="I/N", help="this task's share of the run's ids")
    p.add_argument("--no-grammar", action="store_true", help="send no grammars")
    p.add_argument("--print-config", action="store_true", help="print the effective config")
    p.add_argument("-v", "--verbose", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="soc-async", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run personas, experiences and chats")
    _common_run_args(run)
    run.add_argument("--personas", type=int, metavar="N")
    run.add_argument("--experiences", type=int, metavar="N")
    run.add_argument("--chats", type=int, metavar="N")
    run.add_argument("--resume", metavar="DIR", help="continue the run in DIR")

    personas = sub.add_parser("personas", help="the persona stage alone")
    _common_run_args(personas)
    personas.add_argument("-n", type=int, required=True, metavar="N")

    experiences = sub.add_parser("experiences", help="the experience stage alone")
    _common_run_args(experiences)
    experiences.add_argument("-n", type=int, required=True, metavar="N")
    experiences.add_argument("--personas", required=True, metavar="FILE")

    chats = sub.add_parser("chats", help="the chat stage alone")
    _common_run_args(chats)
    chats.add_argument("-n", type=int, metavar="N", help="default: every experience")
    chats.add_argument("--experiences", required=True, metavar="FILE")
    chats.add_argument("--personas", metavar="FILE", help="default: beside --experiences")

    status = sub.add_parser("status", help="counts, failures by reason, throughput")
    status.add_argument("dir", metavar="DIR")

    merge_cmd.add_parser(sub)
    bench_cli.add_parser(sub)

    serve = sub.add_parser("serve", help="a local vLLM server in the foreground")
    serve.add_argument("--model", default="", help="name or path; default: embedded (CPU)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- extra vLLM arguments")
    serve.add_argument("-v", "--verbose", action="store_true")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "endpoints": args.endpoint,
        "out": args.out,
        "model": args.model,
        "concurrency.fixed": args.concurrency,
        "seed": args.seed,
        "chat.max_turns": args.max_turns,
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


# `soc-async run` with no config and no endpoint is the embedded default job: vLLM's CPU
# build with a 135M model, so it keeps chats short enough to finish in a few minutes.
EMBEDDED_MAX_TURNS = 8


def resolve_config(args: argparse.Namespace) -> config_mod.RunConfig:
    """The effective config: the resumed run's own, or the file's, then the flags on top."""
    if args.command == "run" and not (args.resume or args.config or args.endpoint):
        base = config_mod.override(
            config_mod.load(None), {"chat.max_turns": EMBEDDED_MAX_TURNS}, "embedded default"
        )
        return config_mod.override(base, _overrides(args))
    if getattr(args, "resume", None):
        path = Path(args.resume) / "config.toml"
        if not path.is_file():
            raise InputError(f"{args.resume}: not a run directory (no config.toml to resume)")
        base = config_mod.load(path)
        base = config_mod.override(base, {"out": str(Path(args.resume))}, str(path))
    else:
        base = config_mod.load(args.config)
    return config_mod.override(base, _overrides(args))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
    except SocError as exc:
        code = _report(exc)
    except BaseExceptionGroup as group:
        # Task groups wrap what their tasks raised: report our own error, if one is there.
        ours = _first_soc_error(group)
        if ours is None:
            raise
        code = _report(ours)
    except KeyboardInterrupt:
        print("soc-async: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.exit(code)


def _report(exc: SocError) -> int:
    print(f"soc-async: error: {exc}", file=sys.stderr)
    return exc.exit_code


def _first_soc_error(group: BaseExceptionGroup) -> SocError | None:
    for exc in group.exceptions:
        if isinstance(exc, SocError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (found := _first_soc_error(exc)):
            return found
    return None


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(verbose=getattr(args, "verbose", False))
    if args.command == "status":
        return _status(args.dir)
    if args.command == "merge":
        return merge_cmd.run(args)
    if args.command == "bench":
        return bench_cli.run(args)
    if args.command == "serve":
        import os

        from soc_async.app import serve

        extra = [a for a in args.vllm_args if a != "--"]
        return serve(
            model=args.model,
            host=args.host,
            port=args.port,
            extra=extra,
            api_key=os.environ.get("SOC_ASYNC_API_KEY"),
        )
    cfg = resolve_config(args)
    if args.print_config:
        print(config_mod.dump(cfg), end="")
        return EXIT_OK
    return _run(args, cfg)


def _status(path: str) -> int:
    from rich.console import Console

    from soc_async import status

    Console().print(status.render(status.collect(Path(path))))
    return EXIT_OK


def _run(args: argparse.Namespace, cfg: config_mod.RunConfig) -> int:
    from soc_async.app import execute

    imports: dict[str, Path] = {}
    if args.command == "experiences":
        imports["personas"] = _existing(args.personas, "--personas")
    elif args.command == "chats":
        exp = _existing(args.experiences, "--experiences")
        imports["experiences"] = exp
        imports["personas"] = _existing(
            args.personas or str(exp.with_name("personas.jsonl")), "--personas"
        )
    resume = bool(getattr(args, "resume", None))
    try:
        summary = execute(
            cfg,
            imports=imports,
            resume=resume,
            chats_from_imports=args.command == "chats" and args.n is None,
        )
    except Interrupted as exc:
        print(f"soc-async: {exc}", file=sys.stderr)
        print(f"resume with: soc-async run --resume {shlex.quote(cfg.out)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary)
    return EXIT_OK


def _existing(path: str, flag: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{flag} {path}: no such file (expected a .jsonl file of a run)")
    return p


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["build_parser", "main", "resolve_config"]
