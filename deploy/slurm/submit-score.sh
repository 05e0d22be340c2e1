#!/usr/bin/env bash
# submit-score.sh: zero-shot scoring of one config as a Slurm job array of
# SHARDS tasks (one GPU each, score-shard.sbatch), and a merge job that
# starts only when every task succeeded (--dependency=afterok on the array).
#
#   deploy/slurm/submit-score.sh CONFIG SHARDS [key=value ...]
#   deploy/slurm/submit-score.sh configs/ml1m-zeroshot.yaml 8 model.path=/models/vicuna-13b-v1.3
#
# Task i runs `rella score -c CONFIG --shard auto`, which reads its shard
# i/SHARDS from SLURM_ARRAY_TASK_ID and the array's bounds (RELLA_SHARDS is
# exported too, as a cross-check). The merge job writes the same
# predictions.jsonl and metrics.json an unsharded run writes. If a task
# fails, submit again: finished shards are skipped. Keep the array 0-based
# and without gaps or steps (--shard auto refuses those). A config with
# retrieval.enabled (SUBR) needs the item embeddings first: run
# `rella embed -c CONFIG` (or `embed --shard` tasks and a merge) before.
#
# Environment: RELLA (the command, default "rella"; e.g.
# RELLA="apptainer exec --nv rella.sif rella"), SBATCH_* for sbatch defaults
# (SBATCH_PARTITION, SBATCH_ACCOUNT).
set -euo pipefail

if [ $# -lt 2 ]; then
	sed -n '2,20p' "$0" >&2
	exit 2
fi
cfg="$1"
shards="$2"
shift 2
case "$shards" in '' | *[!0-9]* | 0) echo "submit-score.sh: SHARDS must be a positive integer, got '$shards'" >&2; exit 2 ;; esac
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# --parsable prints "jobid" or "jobid;cluster".
array="$(sbatch --parsable --array="0-$((shards - 1))" --export="ALL,RELLA_SHARDS=$shards" \
	"$here/score-shard.sbatch" "$cfg" "$@")"
array="${array%%;*}"
merge="$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes \
	"$here/merge.sbatch" "$cfg" "$@")"
merge="${merge%%;*}"
echo "scoring: job array $array (tasks 0-$((shards - 1))); merge: job $merge, after every task succeeded"
