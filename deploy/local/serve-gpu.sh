#!/usr/bin/env bash
# A local vLLM on this machine's GPUs, in the foreground until Ctrl-C: a workstation or
# an interactive allocation (salloc); batch jobs use deploy/slurm/soc-async.sbatch.
#
# Launch:  MODEL=Qwen/Qwen2.5-7B-Instruct bash deploy/local/serve-gpu.sh [extra vLLM flags]
#   then:  soc-async run --endpoint http://127.0.0.1:8000 --out runs/dev
# Needs:   pip install -e '.[gpu]'
# Dry-run: DRY_RUN=1 bash deploy/local/serve-gpu.sh   (prints the command, starts nothing)
#
# Settings: MODEL (a Hugging Face name or a local path), HOST (127.0.0.1), PORT (8000),
# TP_SIZE (tensor-parallel size; default: every visible GPU), SOC_ASYNC (the command).
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
if [[ -z ${TP_SIZE:-} ]]; then
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    IFS=, read -r -a gpus <<<"$CUDA_VISIBLE_DEVICES"
    TP_SIZE=${#gpus[@]}
  elif command -v nvidia-smi >/dev/null 2>&1; then
    TP_SIZE=$(nvidia-smi -L | grep -c '^GPU' || true)
  fi
  # vLLM's tensor-parallel size must divide the model's attention heads: 1, 2, 4 or 8.
  case ${TP_SIZE:-1} in 0 | 1) TP_SIZE=1 ;; 2 | 3) TP_SIZE=2 ;; 4 | 5 | 6 | 7) TP_SIZE=4 ;; *) TP_SIZE=8 ;; esac
fi
read -r -a soc <<<"${SOC_ASYNC:-soc-async}"

cmd=("${soc[@]}" serve --model "$MODEL" --host "$HOST" --port "$PORT"
  -- --tensor-parallel-size "$TP_SIZE" "$@")

if [[ ${DRY_RUN:-0} == 1 ]]; then
  printf '%q' "${cmd[0]}"
  printf ' %q' "${cmd[@]:1}"
  printf '\n'
  exit 0
fi
exec "${cmd[@]}"
