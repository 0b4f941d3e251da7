#!/usr/bin/env bash
# The test command of the README: sets up .venv (scripts/setup.sh, idempotent) and runs
# the linters and the whole test suite, the end-to-end test against a real vLLM CPU
# server included. Extra arguments go to pytest (e.g. -k chat, -m "not vllm").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Debian packages the tests use: shellcheck lints the deploy scripts; chromium renders the
# report and the viewer (driven by playwright, which never downloads a browser of its own);
# slurm-wlm and munge make the one-node SLURM cluster the deploy/slurm tests submit to
# (tests/deploy/slurm_cluster.py; the daemons live in /usr/sbin).
need=()
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
PATH=$PATH:/usr/sbin command -v slurmctld >/dev/null 2>&1 || need+=(slurm-wlm)
PATH=$PATH:/usr/sbin command -v munged >/dev/null 2>&1 || need+=(munge)
if ((${#need[@]})) && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1
  } || echo "warning: could not install ${need[*]}" >&2
fi
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
