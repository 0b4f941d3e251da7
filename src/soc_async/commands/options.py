"""Options that several subcommands share, defined once."""

from __future__ import annotations

import argparse
from typing import Any


def add_server_options(p: argparse.ArgumentParser) -> None:
    """--config, --endpoint, --endpoints-file, --ready-timeout and --model: which config
    and which servers a command uses, and how long it waits for them."""
    p.add_argument("--config", metavar="FILE", help="TOML config file (docs/config.md)")
    p.add_argument(
        "--endpoint",
        action="append",
        metavar="URL",
        help="vLLM base URL, repeatable; none: start the embedded CPU server",
    )
    p.add_argument(
        "--endpoints-file",
        metavar="FILE",
        help="the engines `soc-async serve --endpoints-file FILE` started (waited for)",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        metavar="S",
        help="seconds to wait for every endpoint's /health and model list (default 900)",
    )
    p.add_argument("--model", help="served model name (default: what the server serves)")


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
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


__all__ = ["add_server_options", "add_verbose", "server_overrides"]
