"""Options that several subcommands share, defined once."""

from __future__ import annotations

import argparse
from typing import Any


def add_server_options(p: argparse.ArgumentParser, *, when: str = "") -> None:
    """--config, --endpoint, --endpoints-file, --ready-timeout and --model: which config
    and which servers a command uses, and how long it waits for them. ``when`` names the
    option that makes the command talk to a server at all (report: --judge)."""
    p.add_argument(
        "--config", metavar="FILE", help="a TOML config file (docs/config.md; default: none)"
    )
    embedded = f"with {when} and no server given" if when else "none given"
    p.add_argument(
        "--endpoint",
        action="append",
        metavar="URL",
        help=f"a vLLM base URL such as http://127.0.0.1:8000, repeatable ({embedded}: "
        "start the embedded CPU server)",
    )
    p.add_argument(
        "--endpoints-file",
        metavar="FILE",
        help="use the engines `soc-async serve --endpoints-file FILE` started, waiting until "
        "they answer",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        metavar="S",
        help="seconds to wait for every endpoint's /health and model list (default: 900)",
    )
    p.add_argument(
        "--model",
        metavar="NAME",
        help="the served model name to ask for (default: the one the server serves)",
    )


def server_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config changes the options of :func:`add_server_options` make.

    Servers named on the command line replace those of the config (or of the run being
    resumed, whose servers were another job's): ``--endpoint`` alone drops a saved
    endpoints file, ``--endpoints-file`` alone drops saved endpoint URLs.
    """
    changes: dict[str, Any] = {
        "endpoints": args.endpoint,
        "endpoints_file": args.endpoints_file,
        "client.ready_timeout_s": args.ready_timeout,
        "model": args.model,
    }
    if args.endpoint and not args.endpoints_file:
        changes["endpoints_file"] = ""
    if args.endpoints_file and not args.endpoint:
        changes["endpoints"] = []
    return changes


def add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")


__all__ = ["add_server_options", "add_verbose", "server_overrides"]
