#!/usr/bin/env bash
# gpu-check.sh: every GPU check and benchmark of rella in one run, for the
# GPU machine (which has no Go toolchain and keeps nothing between runs).
#
# Here (with Go), first:
#   scripts/build-gpu.sh                 # bin/rella-gpu and bin/cuda-gpu.test
#   scripts/gpu-check.sh --prepare       # copies the stories260K fixture into .devrun/shared
# then send the tree with the ignored paths bin and .devrun to the GPU
# machine and run there:
#   scripts/gpu-check.sh [--shape 7b|small|tiny] [--samples N] [--reps N] [--no-bench]
#                        [--no-train] [--train-lens 512[,1024...]]
#
# It reports the driver, GPU, compute capability and glibc; finds cuBLAS and
# NVRTC (ldconfig, /usr/local/cuda*, python's nvidia wheels, torch/lib) and
# puts their folders on LD_LIBRARY_PATH; runs the device tests of package
# cuda (NVRTC compile, every kernel against its CPU reference, the engine on
# stories260K), rella gpu-selftest, and the scoring benchmark against HF
# transformers (scripts/hf_bench.py), then the LoRA training checks against
# HF PEFT (scripts/hf_peft.py; skipped with --no-train): rella-written
# adapters (rella train on a tiny random checkpoint, model.device cpu and
# gpu) loaded by peft and scored against rella's predictions, PEFT's own
# first-step gradients in bf16 vs f32, rella grads' (Go gpu f32/bf16, cpu
# f32) against them and each other, a 50-step PEFT loss curve, a 50-step
# rella train (gpu f32, training.record_batches) replayed in PEFT with the
# same data order and starting adapter against rella's log.jsonl, and
# training throughput of HF PEFT and of Go (cuda TestTrainBench) on the
# benchmark checkpoint. Full logs go to $RELLA_GPU_LOGS
# (default .devrun/gpu-logs/<time>); a short table comes last.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
shared="${RELLA_SHARED:-$root/.devrun/shared}"
shape=7b samples=64 reps=5 bench=1 minlen=256 maxlen=768 batch=8 train=1 trainlens=512
while [ $# -gt 0 ]; do
	case "$1" in
	--prepare)
		src="${2:-$root/../shared}"
		mkdir -p "$shared/fixtures"
		cp -r "$src/fixtures/stories260K" "$shared/fixtures/"
		mkdir -p "$shared/fixtures/tokenizer"
		cp -r "$src/fixtures/tokenizer/llama" "$shared/fixtures/tokenizer/" # rella train/tokenize for the PEFT checks
		echo "copied $src/fixtures/stories260K and tokenizer/llama to $shared/fixtures/ (carry .devrun and bin to the GPU machine)"
		exit 0 ;;
	--shape) shape="$2"; shift 2 ;;
	--samples) samples="$2"; shift 2 ;;
	--reps) reps="$2"; shift 2 ;;
	--min-len) minlen="$2"; shift 2 ;;
	--max-len) maxlen="$2"; shift 2 ;;
	--batch) batch="$2"; shift 2 ;;
	--no-bench) bench=""; shift ;;
	--no-train) train=""; shift ;;
	--train-lens) trainlens="$2"; shift 2 ;;
	-h|--help) sed -n '2,28p' "${BASH_SOURCE[0]}"; exit 0 ;;
	*) echo "gpu-check.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

logs="${RELLA_GPU_LOGS:-$root/.devrun/gpu-logs/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$logs"
bin="${RELLA_GPU_BIN:-$root/bin/rella-gpu}"
testbin="$(dirname "$bin")/cuda-gpu.test"
summary=()
row() { summary+=("$(printf '%-34s %s' "$1" "$2")"); }
say() { echo "== $*"; }

# --- machine -----------------------------------------------------------------
say "machine" | tee "$logs/machine.log"
{
	uname -a
	nvidia-smi || true
	nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv || true
	ldd --version 2>&1 | head -n1
} >>"$logs/machine.log" 2>&1
gpu="$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>/dev/null | head -n1)"
row "GPU (name, driver, cc, memory)" "${gpu:-nvidia-smi failed}"
glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
if [ -n "$glibc" ] && [ "$(printf '%s\n2.34\n' "$glibc" | sort -V | head -n1)" = "2.34" ]; then
	row "glibc >= 2.34" "ok ($glibc)"
else
	row "glibc >= 2.34" "NO (${glibc:-unknown}): the Go binary needs 2.34"
fi

# --- libraries -------------------------------------------------------------------
# find_lib NAME: the folders that hold NAME.so.<major>, newest major first.
pydirs() {
	python3 - <<'EOF' 2>/dev/null
import site, sys, os
ds = set(site.getsitepackages() + [site.getusersitepackages()])
try:
    import torch
    ds.add(os.path.dirname(os.path.dirname(torch.__file__)))
except Exception:
    pass
print("\n".join(d for d in ds if os.path.isdir(d)))
EOF
}
find_lib() {
	local name="$1"
	{
		ldconfig -p 2>/dev/null | awk -v n="$name.so." 'index($1, n) == 1 {print $NF}'
		find /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu /usr/lib64 -maxdepth 4 -name "$name.so.*" 2>/dev/null
		for d in $(pydirs); do
			find "$d/nvidia" "$d/torch/lib" -maxdepth 4 -name "$name.so.*" 2>/dev/null
		done
	} | grep -E "$name\.so\.[0-9]+(\.[0-9]+)?$" | sort -u | tee -a "$logs/machine.log"
}
say "libraries" | tee -a "$logs/machine.log"
libpath=""
for lib in libcublas libnvrtc; do
	found="$(find_lib "$lib")"
	first=""
	for major in 13 12 11; do
		[ -n "$first" ] || first="$(echo "$found" | grep -E "\.so\.$major(\.[0-9]+)?$" | head -n1)"
	done
	[ -n "$first" ] || first="$(echo "$found" | head -n1)"
	if [ -n "$first" ]; then
		row "$lib" "$first"
		libpath="${libpath:+$libpath:}$(dirname "$first")"
	else
		row "$lib" "NOT FOUND"
	fi
done
export LD_LIBRARY_PATH="${libpath}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$logs/machine.log"
export RELLA_KERNEL_CACHE="$root/.devrun/kernel-cache"

# --- device tests of package cuda ------------------------------------------------------
if [ -x "$testbin" ]; then
	say "go tests (cuda, tag rellagpu)"
	(cd "$root/cuda" && RELLA_REQUIRE_GPU=1 RELLA_SHARED="$shared" "$testbin" -test.v -test.count=1 \
		-test.run 'Symbols|NVRTC|LaunchArguments|OnDevice|EngineStories|ForwardRefStories|KernelSource|AttentionTiled' >"$logs/cuda-test.log" 2>&1)
	rc=$?
	row "cuda device tests" "$([ $rc = 0 ] && echo PASS || echo "FAIL (rc $rc)") $(grep -c '^--- PASS' "$logs/cuda-test.log") passed, $(grep -c '^--- FAIL' "$logs/cuda-test.log") failed, $(grep -c '^--- SKIP' "$logs/cuda-test.log") skipped"
else
	row "cuda device tests" "MISSING $testbin (run scripts/build-gpu.sh here)"
fi

# --- HF benchmark (python) first, so its GPU memory is free for Go --------------
benchdir=""
if [ -n "$bench" ]; then
	benchdir="${RELLA_BENCH_DIR:-/tmp/rella-bench-$shape}"
	say "HF transformers scoring ($shape)"
	python3 "$root/scripts/hf_bench.py" --out "$benchdir" --shape "$shape" --samples "$samples" \
		--min-len "$minlen" --max-len "$maxlen" --batch "$batch" --reps "$reps" >"$logs/hf-bench.log" 2>&1
	rc=$?
	hfline="$(grep '^BENCH hf_scoring' "$logs/hf-bench.log" | tail -n1)"
	row "HF scoring" "${hfline:-FAIL (rc $rc, see hf-bench.log)}"
	[ -n "$hfline" ] || benchdir=""
fi

# --- rella gpu-selftest ----------------------------------------------------------------
if [ -x "$bin" ]; then
	say "rella gpu-selftest"
	args=()
	[ -d "$shared/fixtures/stories260K" ] && args+=(--model "$shared/fixtures/stories260K")
	[ -n "$benchdir" ] && args+=(--bench "$benchdir" --reps "$reps")
	"$bin" gpu-selftest "${args[@]}" >"$logs/selftest.log" 2>"$logs/selftest.stderr"
	rc=$?
	row "gpu-selftest" "$([ $rc = 0 ] && echo PASS || echo "FAIL (rc $rc)") $(grep -c '^PASS' "$logs/selftest.log") checks passed, $(grep -c '^FAIL' "$logs/selftest.log") failed"
	goline="$(grep '^BENCH go_scoring' "$logs/selftest.log" | tail -n1)"
	[ -n "$goline" ] && row "Go scoring" "$goline"
	if [ -n "${hfline:-}" ] && [ -n "$goline" ]; then
		g="$(echo "$goline" | sed -n 's/.*samples_per_s=\([0-9.]*\).*/\1/p')"
		h="$(echo "$hfline" | sed -n 's/.*samples_per_s=\([0-9.]*\).*/\1/p')"
		row "Go/HF samples per second" "$(awk -v g="$g" -v h="$h" 'BEGIN{ if (h > 0) printf "%.2f (%s / %s)", g/h, g, h }')"
	fi
	hfcmp="$(grep 'vs HF transformers' "$logs/selftest.log" | tail -n1)"
	[ -n "$hfcmp" ] && row "Go vs HF logits" "$(echo "$hfcmp" | awk '{print $1, $NF}')"
else
	row "gpu-selftest" "MISSING $bin (run scripts/build-gpu.sh here)"
fi

# --- LoRA training against HF PEFT (scripts/hf_peft.py) ------------------------------
peft="$root/scripts/hf_peft.py"
tok="$shared/fixtures/tokenizer/llama"
# adapter_check DEVICE DTYPE TOL: rella train (3 steps on the synthetic
# dataset) writes a PEFT adapter for the tiny checkpoint; peft loads it
# (every tensor checked), its logits are checked against a hand merge, and
# P(Yes) of the first 16 test prompts against rella's own predictions.jsonl
# (same adapter, rella's engine on DEVICE/DTYPE; HF in float32).
adapter_check() {
	local dev="$1" dtype="$2" tol="$3" d="$work/rella-$1-$2" rc line
	mkdir -p "$d"
	cat >"$d/config.yaml" <<EOF
seed: 7
output_dir: $d/run
stages: [prepare, train]
generate: {data: true, data_users: 40, data_items: 60}
data: {dataset: ml-1m, dir: $d/run/source, history_len: 3, max_eval_samples: 16}
model: {path: $tiny, tokenizer: $tok, device: $dev, dtype: $dtype, batch_size: 8}
lora: {lora_r: 8, lora_alpha: 16, lora_dropout: 0.05, lora_target_modules: [q_proj, v_proj]}
training: {learning_rate: 5.0e-2, max_steps: 3, batch_size: 8, micro_batch_size: 4, lr_scheduler: constant}
retrieval: {enabled: false, train_type: original, train_samples: 16}
EOF
	"$bin" train -c "$d/config.yaml" >"$d/train.log" 2>&1
	rc=$?
	if [ $rc != 0 ] || [ ! -f "$d/run/adapter/adapter_model.safetensors" ]; then
		row "rella adapter -> peft ($dev $dtype)" "FAIL: rella train rc $rc (see $d/train.log)"
		return
	fi
	"$bin" prompts -c "$d/config.yaml" --split test --limit 16 >"$d/prompts.jsonl" 2>>"$d/train.log" &&
		python3 "$peft" vicuna <"$d/prompts.jsonl" >"$d/wrapped.jsonl" 2>>"$d/train.log" &&
		"$bin" tokenize --tokenizer "$tok" --bos <"$d/wrapped.jsonl" >"$d/ids.jsonl" 2>>"$d/train.log"
	rc=$?
	if [ $rc != 0 ]; then
		row "rella adapter -> peft ($dev $dtype)" "FAIL: prompts/tokenize rc $rc (see $d/train.log)"
		return
	fi
	python3 "$peft" load-adapter --model "$tiny" --adapter "$d/run/adapter" --seqs "$d/ids.jsonl" \
		--rella-pred "$d/run/train/test-recency/predictions.jsonl" --tol "$tol" --out "$d/peft" >"$d/load-adapter.log" 2>&1
	rc=$?
	line="$(grep '^CHECK peft_load_adapter' "$d/load-adapter.log" | tail -n1)"
	[ -n "$line" ] || line="CHECK peft_load_adapter FAIL (rc $rc, see $d/load-adapter.log)"
	row "rella adapter -> peft ($dev $dtype)" "${line#CHECK peft_load_adapter }"
}
# curve_check DEVICE DTYPE: rella train (50 steps, lr 1e-3 linear, dropout
# 0, 16 training prompts in micro-batches of 4, 2 per step) with
# training.record_batches, then hf_peft.py curve replaying its data order
# (train/batches.json) from its starting adapter (train/lora_init.safetensors)
# and comparing the losses with rella's train/log.jsonl.
curve_check() {
	local dev="$1" dtype="$2" d="$work/curve-rella-$1-$2" rc line
	mkdir -p "$d"
	cat >"$d/config.yaml" <<EOF
seed: 7
output_dir: $d/run
stages: [prepare, train]
generate: {data: true, data_users: 40, data_items: 60}
data: {dataset: ml-1m, dir: $d/run/source, history_len: 3, max_eval_samples: 16}
model: {path: $tiny, tokenizer: $tok, device: $dev, dtype: $dtype, batch_size: 8}
lora: {lora_r: 8, lora_alpha: 16, lora_dropout: 0, lora_target_modules: [q_proj, v_proj]}
training: {learning_rate: 1.0e-3, max_steps: 50, batch_size: 8, micro_batch_size: 4, lr_scheduler: linear, eval_steps: 50, record_batches: true}
retrieval: {enabled: false, train_type: original, train_samples: 16}
EOF
	"$bin" train -c "$d/config.yaml" >"$d/train.log" 2>&1
	rc=$?
	if [ $rc != 0 ] || [ ! -f "$d/run/train/batches.json" ] || [ ! -f "$d/run/train/lora_init.safetensors" ]; then
		row "rella vs PEFT 50-step curve ($dev $dtype)" "FAIL: rella train rc $rc (see $d/train.log)"
		return
	fi
	python3 "$peft" curve --model "$tiny" --data "$d/run/train/batches.json" --lora-init "$d/run/train/lora_init.safetensors" \
		--steps 50 --total-steps 50 --lr 1e-3 --scheduler linear --dtype float32 --compare-log "$d/run/train/log.jsonl" \
		--out "$d/curve" >"$d/curve.log" 2>&1
	line="$(grep '^CHECK peft_curve' "$d/curve.log" | tail -n1)"
	[ -n "$line" ] || line="CHECK peft_curve_float32 FAIL (see $d/curve.log)"
	row "rella vs PEFT 50-step curve ($dev $dtype)" "${line#CHECK peft_curve_float32 }"
}
# go_grads DEVICE DTYPE: rella grads on the PEFT step's batch and starting
# adapter (initarg), into $work/go-DEVICE-DTYPE.
go_grads() {
	local d="$work/go-$1-$2" line
	"$bin" grads --model "$tiny" --batch "$work/data.json" "${initarg[@]}" --device "$1" --dtype "$2" \
		--out "$d" >"$d.log" 2>&1
	line="$(grep "^CHECK go_grads_$1_$2 " "$d.log" | tail -n1)"
	[ -n "$line" ] && line="${line#CHECK go_grads_$1_$2 }" || line="FAIL (see $d.log)"
	row "Go grads $1 $2 (tiny, 32 ex.)" "$line"
}
# grads_compare LABEL A B TOL MIN_COS: hf_peft.py compare of $work/A against
# $work/B (the reference), and their per-token losses (loss.json loss_mean)
# within 1e-2 over the same number of labelled tokens.
grads_compare() {
	local label="$1" a="$work/$2" b="$work/$3" tol="$4" cos="$5" log="$work/compare-$2-$3.log" line loss
	if [ ! -f "$a/grads.safetensors" ] || [ ! -f "$b/grads.safetensors" ]; then
		row "$label" "SKIP: no $2 or $3 grads.safetensors"
		return
	fi
	python3 "$peft" compare --a "$a/grads.safetensors" --b "$b/grads.safetensors" --tol "$tol" --min-cos "$cos" >"$log" 2>&1
	line="$(grep '^CHECK grads_compare' "$log" | tail -n1)"
	loss="$(python3 -c '
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
na, nb = a.get("n_tokens", a.get("tokens")), b.get("n_tokens", b.get("tokens"))
d = abs(a["loss_mean"] - b["loss_mean"])
verdict = "PASS" if d <= 1e-2 and na == nb else "FAIL"
print("loss %s mean %.6f vs %.6f (|d| %.2e, tokens %s/%s)" % (verdict, a["loss_mean"], b["loss_mean"], d, na, nb))
' "$a/loss.json" "$b/loss.json" 2>>"$log")"
	[ -n "$line" ] && line="${line#CHECK grads_compare }" || line="compare FAIL (see $log)"
	row "$label" "$line; ${loss:-loss FAIL (see $log)}"
}
if [ -n "$train" ]; then
	work="$logs/peft"
	mkdir -p "$work"
	say "LoRA training vs HF PEFT"
	# (a) rella-written adapters loaded by peft, on a tiny random checkpoint
	# (RELLA_PEFT_MODEL: use this checkpoint instead of making one).
	tiny="${RELLA_PEFT_MODEL:-$work/tiny-model}"
	[ -f "$tiny/config.json" ] || python3 "$peft" make-model --shape tiny --out "$tiny" >"$work/make-model.log" 2>&1
	if [ ! -f "$tiny/config.json" ]; then
		row "rella adapter -> peft" "FAIL: no tiny checkpoint (see $work/make-model.log)"
	elif [ ! -x "$bin" ]; then
		row "rella adapter -> peft" "MISSING $bin (run scripts/build-gpu.sh here)"
	elif [ ! -f "$tok/tokenizer.model" ] && [ ! -f "$tok/tokenizer.json" ]; then
		row "rella adapter -> peft" "MISSING $tok (run scripts/gpu-check.sh --prepare here)"
	else
		adapter_check cpu float32 1e-3
		adapter_check gpu float32 1e-3
		adapter_check gpu bf16 3e-2
		curve_check gpu float32
	fi
	# (b) PEFT's first-step gradients in bf16 against f32 (how far bf16 alone
	# moves them: the scale for Go's bf16 bound), starting from the rella
	# adapter, and a 50-step PEFT loss curve on a fixed data order.
	init="$work/rella-cpu-float32/run/adapter/adapter_model.safetensors"
	if [ -f "$tiny/config.json" ] && python3 "$peft" make-data --out "$work/data.json" --examples 32 \
		--min-len 48 --max-len 96 --label-last 4 --steps 50 --micro-batch 4 --accum 2 >"$work/step.log" 2>&1; then
		initarg=()
		[ -f "$init" ] && initarg=(--lora-init "$init")
		for dt in float32 bf16; do
			python3 "$peft" step --model "$tiny" --batch "$work/data.json" --dtype "$dt" "${initarg[@]}" \
				--out "$work/step-$dt" >>"$work/step.log" 2>&1
		done
		[ -f "$init" ] || initarg=(--lora-init "$work/step-float32/lora_init.safetensors")
		line="$(grep '^CHECK peft_step_float32' "$work/step.log" | tail -n1)"
		[ -n "$line" ] || line="CHECK peft_step_float32 FAIL (see $work/step.log)"
		row "PEFT step f32 (tiny, 32 ex.)" "${line#CHECK peft_step_float32 }"
		python3 "$peft" compare --a "$work/step-bf16/grads.safetensors" --b "$work/step-float32/grads.safetensors" \
			--tol 0.1 --min-cos 0.99 >>"$work/step.log" 2>&1
		line="$(grep '^CHECK grads_compare' "$work/step.log" | tail -n1)"
		[ -n "$line" ] || line="CHECK grads_compare FAIL (see $work/step.log)"
		row "PEFT grads bf16 vs f32" "${line#CHECK grads_compare }"
		python3 "$peft" curve --model "$tiny" --data "$work/data.json" --steps 50 --lr 1e-3 --dtype float32 \
			"${initarg[@]}" --out "$work/curve" >"$work/curve.log" 2>&1
		line="$(grep '^CHECK peft_curve' "$work/curve.log" | tail -n1)"
		[ -n "$line" ] || line="CHECK peft_curve_float32 FAIL (see $work/curve.log)"
		row "PEFT 50-step curve (tiny)" "${line#CHECK peft_curve_float32 }"
		# Go's first-step gradients (rella grads) on the same batch and
		# starting adapter: the GPU trainer in f32 against the CPU (Gorgonia)
		# engine (rel < 1e-4), and f32 and bf16 against PEFT (cosine >= 0.99,
		# per-token loss within 1e-2). Both sides sum the loss over the
		# labelled tokens and save the gradient of that sum.
		if [ ! -x "$bin" ]; then
			row "Go grads vs PEFT" "MISSING $bin (run scripts/build-gpu.sh here)"
		elif [ ${#initarg[@]} = 0 ] || [ ! -f "${initarg[1]}" ]; then
			row "Go grads vs PEFT" "SKIP: no starting adapter (see $work/step.log)"
		else
			go_grads cpu float32
			go_grads gpu float32
			go_grads gpu bf16
			grads_compare "Go grads gpu f32 vs cpu f32" go-gpu-float32 go-cpu-float32 1e-4 0.9999
			grads_compare "Go grads gpu f32 vs PEFT f32" go-gpu-float32 step-float32 1 0.99
			grads_compare "Go grads gpu bf16 vs PEFT f32" go-gpu-bf16 step-float32 1 0.99
			grads_compare "Go grads gpu bf16 vs PEFT bf16" go-gpu-bf16 step-bf16 1 0.99
		fi
	else
		row "PEFT step / curve" "FAIL (see $work/step.log)"
	fi
	# (c) training throughput on the benchmark checkpoint: HF PEFT, then Go.
	if [ -n "$benchdir" ]; then
		python3 "$peft" bench --model "$benchdir" --micro-batch 8 --steps "$((reps + 5))" --warmup 2 \
			--seq-lens "$trainlens" --out "$work/bench" >"$logs/hf-train-bench.log" 2>&1
		for L in ${trainlens//,/ }; do
			hl="$(grep "^BENCH hf_train_lossgrad .* len=$L " "$logs/hf-train-bench.log" | tail -n1)"
			row "HF PEFT train ($shape, 8x$L)" "${hl:-FAIL (see hf-train-bench.log)}"
			gl=""
			if [ -x "$testbin" ]; then
				(cd "$root/cuda" && RELLA_TRAIN_BENCH_DIR="$benchdir" RELLA_TRAIN_BENCH_BATCH=8 RELLA_TRAIN_BENCH_LEN="$L" \
					RELLA_TRAIN_BENCH_REPS="$reps" "$testbin" -test.v -test.count=1 -test.run '^TestTrainBench$' \
					>"$logs/go-train-bench-$L.log" 2>&1)
				gl="$(grep -o 'BENCH go_train_lossgrad.*' "$logs/go-train-bench-$L.log" | tail -n1)"
			fi
			row "Go train ($shape, 8x$L)" "${gl:-FAIL (see go-train-bench-$L.log)}"
			if [ -n "$hl" ] && [ -n "$gl" ]; then
				g="$(echo "$gl" | sed -n 's/.* tokens_per_s=\([0-9.]*\).*/\1/p')"
				h="$(echo "$hl" | sed -n 's/.* tokens_per_s=\([0-9.]*\).*/\1/p')"
				row "Go/HF train tokens/s (8x$L)" "$(awk -v g="$g" -v h="$h" 'BEGIN{ if (h > 0) printf "%.2f (%s / %s)", g/h, g, h }')"
			fi
		done
	fi
fi

echo
echo "logs: $logs"
printf '%s\n' "${summary[@]}" | tee "$logs/summary.txt"
