"""Options that several subcommands share, defined once."""

from __future__ import annotations

import argparse
from typing import Any

from soc_async import config as config_mod


def add_server_options(p: argparse.ArgumentParser, *, when: str = "") -> None:
    """--config, --endpoint, --endpoints-file, --ready-timeout and --model: which config
    and which servers a command uses, and how long it waits for them. ``when`` names the
    option that makes the command talk to a server at all (report: --judge)."""
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"a TOML config file (docs/config.md) for the calls of {when} (default: the run's own)"
        if when
        else "a TOML config file (docs/config.md; default: none)",
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
    """The config changes the options of :func:`add_server_options` make
    (:func:`soc_async.config.server_changes`)."""
    return config_mod.server_changes(
        args.endpoint, args.endpoints_file, args.ready_timeout, args.model
    )


def add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")


__all__ = ["add_server_options", "add_verbose", "server_overrides"]
