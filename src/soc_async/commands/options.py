"""Options that several subcommands share, defined once."""

from __future__ import annotations

import argparse


def add_server_options(p: argparse.ArgumentParser) -> None:
    """--config, --endpoint and --model: which config and which servers a command uses."""
    p.add_argument("--config", metavar="FILE", help="TOML config file (docs/config.md)")
    p.add_argument(
        "--endpoint",
        action="append",
        metavar="URL",
        help="vLLM base URL, repeatable; none: start the embedded CPU server",
    )
    p.add_argument("--model", help="served model name (default: what the server serves)")


def add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


__all__ = ["add_server_options", "add_verbose"]
