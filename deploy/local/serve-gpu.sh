#!/usr/bin/env bash
# vLLM on this machine's GPUs, in the foreground until Ctrl-C: a workstation or an
# interactive allocation (inside `srun --pty bash` of a salloc, so it runs on the compute
# node); batch jobs use deploy/slurm/soc-async.sbatch.
#
# Launch:  MODEL=Qwen/Qwen2.5-7B-Instruct bash deploy/local/serve-gpu.sh [extra vLLM flags]
#   then:  soc-async run --endpoints-file engines.json --out runs/dev
#          (it waits until every engine answers, and routes each chat to one engine)
# Needs:   pip install -e '.[gpu]', and the model downloaded: hf download "$MODEL"
# Dry-run: DRY_RUN=1 bash deploy/local/serve-gpu.sh   (prints the command, starts nothing)
#
# Settings: MODEL (a Hugging Face name or a local path), HOST (127.0.0.1), PORT (8000:
# engines on 8000, 8010, ...), TP_SIZE (tensor-parallel size; default: from the model's
# config.json, one engine per GPU when it fits one), ENDPOINTS_FILE (engines.json: the
# engines' URLs for `soc-async run --endpoints-file`), SOC_ASYNC (the command).
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
ENDPOINTS_FILE=${ENDPOINTS_FILE:-engines.json}
read -r -a soc <<<"${SOC_ASYNC:-soc-async}"

# The layout (tensor-parallel size, engines, devices) is soc-async serve's: it reads the
# model's config.json, and refuses a TP_SIZE that cannot work before anything starts.
cmd=("${soc[@]}" serve --model "$MODEL" --host "$HOST" --port "$PORT"
  --endpoints-file "$ENDPOINTS_FILE")
if [[ -n ${TP_SIZE:-} ]]; then cmd+=(--tp "$TP_SIZE"); fi
if (($#)); then cmd+=(-- "$@"); fi

if [[ ${DRY_RUN:-0} == 1 ]]; then
  printf '%q' "${cmd[0]}"
  printf ' %q' "${cmd[@]:1}"
  printf '\n'
  exit 0
fi
exec "${cmd[@]}"
