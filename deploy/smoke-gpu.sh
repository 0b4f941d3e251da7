#!/usr/bin/env bash
# The GPU smoke test: the preflight (soc-async doctor's checks), one vLLM engine for MODEL on
# one GPU, 50 conversations, a short bench sweep around the requests its KV cache holds;
# prints tokens/s, the prefix-cache hit rate and the recommended concurrency within a time
# budget (BUDGET_S, 600 s, engine start included), rewriting smoke.json after each phase.
#
# Launch:  MODEL=Qwen/Qwen3-8B bash deploy/smoke-gpu.sh          (on a GPU node)
#          MODEL=Qwen/Qwen3-8B sbatch -p gpu -A myproject deploy/smoke-gpu.sh
# Needs:   soc-async with vLLM (pip install -e '.[gpu]', or VENV=...), and the model in
#          HF_HOME's cache (hf download "$MODEL" on a login node).
# Dry-run: DRY_RUN=1 MODEL=... bash deploy/smoke-gpu.sh   (prints the command, starts nothing)
#
# Settings: MODEL (required), OUT (smoke-<date>), CHATS (50), SWEEP (default: around the KV
# cache's capacity in requests), BUDGET_S (600), VLLM_ARGS (more vLLM flags), VENV (a
# virtualenv to activate), SOC_ASYNC.
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
if [[ -n ${BUDGET_S:-} ]]; then cmd+=(--budget-s "$BUDGET_S"); fi
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
