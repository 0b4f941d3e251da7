"""Options that several subcommands share, defined once."""

from __future__ import annotations

import argparse
from typing import Any

from soc_async import config as config_mod


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
    """The config changes the options of :func:`add_server_options` make
    (:func:`soc_async.config.server_changes`)."""
    return config_mod.server_changes(
        args.endpoint, args.endpoints_file, args.ready_timeout, args.model
    )


def add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


__all__ = ["add_server_options", "add_verbose", "server_overrides"]
