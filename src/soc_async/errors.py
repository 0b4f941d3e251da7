"""The project's own exceptions, and the exit code each one maps to.

    SocError                     base; ``exit_code`` says how the CLI ends
    ├── InputError (2)           bad usage or bad input: config, seeds, files, arguments
    │   ├── ConfigError          a config file or flag; names the file, the key, the expectation
    │   ├── SeedError            a seed data file
    │   └── RunDirError          a run directory that cannot be used or resumed
    ├── ServerError (1)          a vLLM server that will not start, dies, or cannot be reached
    │   └── ServerStartError     start failed; carries the tail of the server's log
    ├── RequestError (1)         one request that failed for good (after retries, or a 4xx)
    │   └── RetriesExhausted     transient failures outlasted the retry budget
    └── Interrupted (130)        SIGINT/SIGTERM after a clean flush

Library errors are wrapped at the boundary with ``raise ... from exc``; the CLI turns a
``SocError`` into one line on stderr and its exit code, in one place.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class SocError(Exception):
    """Base of every error soc-async raises on purpose."""

    exit_code: int = EXIT_FAILED


class InputError(SocError):
    """Bad usage or bad input: the user must change something before running again."""

    exit_code = EXIT_USAGE


class ConfigError(InputError):
    """A config file or command-line value is unknown, mistyped or out of range."""


class SeedError(InputError):
    """A seed data file (regions, names, hand-written cards) is missing or malformed."""


class RunDirError(InputError):
    """A run directory is missing, belongs to another run, or cannot be resumed."""


class ServerError(SocError):
    """A vLLM server will not start, died, or cannot be reached."""


class ServerStartError(ServerError):
    """A managed server failed to become healthy; the message ends with its log tail."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        text = (
            message if not log_tail else f"{message}\n--- server log (last lines) ---\n{log_tail}"
        )
        super().__init__(text)


class RequestError(SocError):
    """One request failed for good: a 4xx other than 429, or an unusable reply."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        attempts: int = 1,
        reason: str | None = None,
    ) -> None:
        self.status = status
        self.attempts = attempts
        # A short stable code for failure records: ``http_400``, ``timeout``, ...
        self.reason = reason or (f"http_{status}" if status is not None else "error")
        super().__init__(message)


class RetriesExhausted(RequestError):
    """Transient failures (connection, timeout, 429, 5xx) outlasted the retry budget.

    ``reason`` is the stable cause of the last attempt (``timeout``, ``connection``,
    ``http_503``, ``bad_json``, ...); the message adds where and what, when known."""

    def __init__(
        self,
        reason: str,
        *,
        detail: str = "",
        status: int | None = None,
        attempts: int = 1,
        endpoint: str | None = None,
    ) -> None:
        where = f" at {endpoint}" if endpoint else ""
        message = f"{reason} after {attempts} attempts{where}: {detail}" if detail else reason
        super().__init__(message, status=status, attempts=attempts, reason=reason)


class Interrupted(SocError):
    """The run was stopped by SIGINT or SIGTERM after flushing what it had."""

    exit_code = EXIT_INTERRUPTED


_AT_RE = re.compile(r" - at `\$\.?([^`]*)`$")


def validation_key(exc: Exception) -> tuple[str, str]:
    """(dotted key, what was expected) from a msgspec validation message such as
    "Expected `int`, got `str` - at `$.targets.chats`", for one-line input errors."""
    text = str(exc)
    match = _AT_RE.search(text)
    key = match.group(1) if match else ""
    what = _AT_RE.sub("", text)
    unknown = re.match(r"Object contains unknown field `([^`]*)`", what)
    if unknown:
        key = f"{key}.{unknown.group(1)}" if key else unknown.group(1)
        what = "unknown key"
    elif what.startswith("Object missing required field"):
        field = what.split("`")[1] if "`" in what else ""
        key = f"{key}.{field}" if key else field
        what = "required key missing"
    return key or "(top level)", what[:1].lower() + what[1:]


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The exception to report for a task group's failure: an interrupt first, then the
    first of the project's own errors, else the group itself.

    Task groups wrap what their tasks raise; the CLI turns a ``SocError`` into one line
    and an exit code, so it must see the error, not the group around it.
    """
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for kind in (KeyboardInterrupt, SocError):
        found = next((e for e in leaves if isinstance(e, kind)), None)
        if found is not None:
            return found
    return group
