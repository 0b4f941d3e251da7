#!/usr/bin/env bash
# Submits one logical run as a job array of SHARDS GPU nodes (task i writes shard i/SHARDS
# into RUN_DIR/shard-i) and a merge job that starts once every task has ended, however it
# ended (afterany); the merge job then checks that every shard finished its run and ends
# with an error naming the shards that did not. An afterok dependency would leave the
# merge pending forever (DependencyNeverSatisfied) behind a task that failed or stopped
# requeueing itself at MAX_REQUEUES.
#
# Launch:  SHARDS=8 RUN_DIR=$SCRATCH/soc/run1 CONFIG=$PWD/run.toml MODEL=Qwen/Qwen2.5-7B-Instruct \
#            bash deploy/slurm/submit-array.sh [more sbatch flags for the array, e.g. -p gpu]
# Dry-run: DRY_RUN=1 SHARDS=8 RUN_DIR=... bash deploy/slurm/submit-array.sh
#          (prints the two sbatch commands, submits nothing)
#
# Every other setting of soc-async.sbatch (MODEL, SERVERS, TP_SIZE, VENV, ...) is passed
# on from this environment (--export=ALL). Each task resumes its own shard when requeued.
# The merge job gets the same partition, account, QOS and cluster as the array (from the
# sbatch flags given here), and MERGE_ARGS (e.g. "-p cpu" to move it elsewhere) after them.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHARDS=${SHARDS:?set SHARDS to the number of array tasks (shards)}
RUN_DIR=${RUN_DIR:?set RUN_DIR to the run directory on shared storage}
[[ $SHARDS =~ ^[1-9][0-9]*$ ]] || { echo "submit-array.sh: SHARDS must be >= 1" >&2; exit 2; }
# Absolute paths: the jobs start in their own directories.
case $RUN_DIR in /*) ;; *) RUN_DIR=$PWD/$RUN_DIR ;; esac
if [[ -n ${CONFIG:-} ]]; then
  case $CONFIG in /*) ;; *) CONFIG=$PWD/$CONFIG ;; esac
fi
export RUN_DIR CONFIG

# Where the jobs run and who pays: the merge job must keep these, or it lands in the
# default partition and account (often refused, or billed to the wrong project).
placement=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    -p | -A | -q | -M | --partition | --account | --qos | --clusters)
      ((i + 1 < ${#args[@]})) && placement+=("${args[i]}" "${args[i + 1]}")
      i=$((i + 1))
      ;;
    --partition=* | --account=* | --qos=* | --clusters=* | -p?* | -A?* | -q?* | -M?*)
      placement+=("${args[i]}")
      ;;
  esac
done
read -r -a merge_extra <<<"${MERGE_ARGS:-}"

array=(sbatch --parsable --array="0-$((SHARDS - 1))" --export=ALL "$@" "$here/soc-async.sbatch")
merge_cmd=(sbatch --parsable --export=ALL "${placement[@]}" "${merge_extra[@]}")
if [[ ${DRY_RUN:-0} == 1 ]]; then
  printf '%q' "${array[0]}"
  printf ' %q' "${array[@]:1}"
  printf '\n%q' "${merge_cmd[0]}"
  printf ' %q' "${merge_cmd[@]:1}"
  printf ' --dependency=afterany:<array job id> %q\n' "$here/merge.sbatch"
  exit 0
fi
job=$("${array[@]}")
job=${job%%;*}  # "id;cluster" on federated clusters
merge=$("${merge_cmd[@]}" --dependency="afterany:$job" "$here/merge.sbatch")
echo "array job ${job} (${SHARDS} shards in ${RUN_DIR}); merge job ${merge%%;*} -> ${RUN_DIR}/merged"
echo "watch: squeue -j ${job},${merge%%;*}; progress: soc-async status ${RUN_DIR}/shard-0"
