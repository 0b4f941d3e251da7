#!/usr/bin/env bash
# The GPU smoke test: one vLLM engine for MODEL on one GPU, 50 conversations, a short bench
# sweep up to the engine's batch size; prints tokens/s, the prefix-cache hit rate and the
# recommended concurrency, in about 10 minutes for an 8B model (`soc-async smoke`).
#
# Launch:  MODEL=Qwen/Qwen3-8B bash deploy/smoke-gpu.sh          (on a GPU node)
#          MODEL=Qwen/Qwen3-8B sbatch -p gpu -A myproject deploy/smoke-gpu.sh
# Needs:   soc-async with vLLM (pip install -e '.[gpu]', or VENV=...), and the model in
#          HF_HOME's cache (hf download "$MODEL" on a login node).
# Dry-run: DRY_RUN=1 MODEL=... bash deploy/smoke-gpu.sh   (prints the command, starts nothing)
#
# Settings: MODEL (required), OUT (smoke-<date>), CHATS (50), SWEEP (default: 16,64,256,...
# up to the batch), VLLM_ARGS (more vLLM flags), VENV (a virtualenv to activate), SOC_ASYNC.
#SBATCH --job-name=soc-async-smoke
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-gpu=8
#SBATCH --mem-per-gpu=64G
#SBATCH --time=00:30:00
#SBATCH --output=%x-%j.out
set -euo pipefail

MODEL=${MODEL:?set MODEL to a downloaded model, e.g. MODEL=Qwen/Qwen3-8B}
OUT=${OUT:-${SLURM_SUBMIT_DIR:-$PWD}/smoke-$(date +%Y%m%d-%H%M%S)}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
read -r -a soc <<<"${SOC_ASYNC:-soc-async}"
read -r -a vllm_args <<<"${VLLM_ARGS:-}"

cmd=("${soc[@]}" smoke --model "$MODEL" --out "$OUT" --chats "${CHATS:-50}")
if [[ -n ${SWEEP:-} ]]; then cmd+=(--sweep "$SWEEP"); fi
if ((${#vllm_args[@]})); then cmd+=(-- "${vllm_args[@]}"); fi

if [[ ${DRY_RUN:-0} == 1 ]]; then
  printf '%q' "${cmd[0]}"
  printf ' %q' "${cmd[@]:1}"
  printf '\n'
  exit 0
fi
if [[ -n ${VENV:-} ]]; then
  # shellcheck source=/dev/null
  source "$VENV/bin/activate"
fi
exec "${cmd[@]}"
