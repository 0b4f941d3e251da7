#!/usr/bin/env bash
# The test command of the README: sets up .venv (scripts/setup.sh, idempotent) and runs
# the linters and the whole test suite, the end-to-end test against a real vLLM CPU
# server included. Extra arguments go to pytest (e.g. -k chat, -m "not vllm").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v shellcheck >/dev/null 2>&1; then
  # The deploy scripts are linted by the tests; Debian's package has the linter.
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq shellcheck >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq shellcheck >/dev/null 2>&1
    } || echo "warning: could not install shellcheck" >&2
  fi
fi
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
