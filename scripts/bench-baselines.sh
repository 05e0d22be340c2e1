#!/usr/bin/env bash
# Benchmark: every ID-based CTR baseline (rella baseline) on the shared real
# data: ML-1M (ratings of users 1-2999) with configs/ml1m-baselines.yaml and
# the BookCrossing sample with configs/bookcrossing-baselines.yaml (its parts
# join into only 57 samples: a smoke test, not a measurement) and the ML-25M
# sample (users 1-74) with configs/ml25m-baselines.yaml. For each
# model: test AUC, log loss, accuracy (from metrics.json), best epoch, wall
# time and peak RSS (GNU time -v). Prints a Markdown table.
#
# usage: scripts/bench-baselines.sh [ml1m|bookcrossing|ml25m|all] [model ...]
# env:   RELLA_SHARED (default ../shared), OUT (default a temporary folder, kept)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${RELLA_SHARED:-../shared}
which=${1:-all}
shift || true
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(deepfm dcnv2 din sim sasrec)
out=${OUT:-$(mktemp -d /tmp/rella-bench-baselines.XXXXXX)}
mkdir -p "$out"
go build -o "$out/rella" ./cmd/rella
echo "# $(date -u +%F) $(nproc) cores, $(uname -m); results under $out" >&2

run() { # dataset preset datadir
	local name=$1 preset=$2 dir=$3 m
	for m in "${models[@]}"; do
		local run="$out/$name"
		/usr/bin/time -v -o "$run-$m.time" "$out/rella" baseline -c "$preset" --model "$m" \
			data.dir="$dir" output_dir="$run" >"$run-$m.stdout" 2>"$run-$m.log"
		python3 - "$name" "$m" "$run/baseline/test-$m/metrics.json" "$run/baseline/test-$m/log.jsonl" "$run-$m.time" <<'PY'
import json, re, sys
name, model, metrics, log, tfile = sys.argv[1:]
m = json.load(open(metrics))
epochs = [json.loads(l) for l in open(log)]
best = max((e for e in epochs if e["best"]), key=lambda e: e["epoch"])["epoch"]
t = open(tfile).read()
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
parts = [float(x) for x in wall.split(":")]
secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
print(f"| {name} | {model} | {m['auc']:.4f} | {m['logloss']:.4f} | {m['acc']:.4f} | {m['n']} | {best}/{len(epochs)} | {secs:.0f} s | {rss/1024:.0f} MB |")
PY
	done
}

echo "| data | model | test AUC | log loss | accuracy | n | best/run epochs | wall | peak RSS |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
case $which in
ml1m | all) run ml1m configs/ml1m-baselines.yaml "$shared/data/ml-1m" ;;
esac
case $which in
bookcrossing | all) run bookcrossing configs/bookcrossing-baselines.yaml "$shared/data/bookcrossing-sample" ;;
esac
case $which in
ml25m | all) run ml25m configs/ml25m-baselines.yaml "$shared/data/ml-25m-sample" ;;
esac
