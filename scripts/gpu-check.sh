#!/usr/bin/env bash
# gpu-check.sh: rella's checks and benchmarks on a GPU machine, in phases that
# each fit one short device window (the machine has no Go toolchain and keeps
# nothing between windows).
#
# Here (with Go), first:
#   scripts/build-gpu.sh            # bin/rella-gpu and bin/cuda-gpu.test
#   scripts/gpu-check.sh --prepare  # fixtures and data into .devrun/shared; checks the size of bin + .devrun
# then send the tree with the ignored paths bin and .devrun, and run there:
#   scripts/gpu-check.sh PHASE [--budget SECONDS] [--layers N]
# PHASE (default budget):
#   correctness (300 s)  the machine, versions (driver, CUDA libraries, torch,
#       transformers, peft), library discovery; the cuda test suites, each in
#       its own process with a time limit (libraries chosen, NVRTC, every
#       kernel and GEMM against its CPU reference, the training kernels, the
#       engine and the trainer on stories260K against the CPU path; world
#       size 1 through NCCL against the plain trainer path), a suite
#       that fails is rerun with CUDA_LAUNCH_BLOCKING=1 (under
#       compute-sanitizer memcheck when present); HF transformers on
#       stories260K against the Go engine (f32 logits); PEFT's LoRA gradients
#       on stories260K against rella grads on the GPU; compute-sanitizer
#       memcheck of the forward kernels with what budget is left.
#   score-bench (480 s)  scoring speed, Go vs HF transformers, on a random
#       checkpoint of LLaMA-7B width with --layers of its 32 layers (default
#       8), made on the device by scripts/hf_bench.py inside the budget; the
#       logits of the two compared.
#   train-bench (480 s)  LoRA training throughput, Go (cuda TestTrainBench)
#       vs HF PEFT (hf_peft.py bench), on the same kind of checkpoint.
#   peft (480 s)  rella-trained adapters loaded by PEFT, a 50-step rella
#       train replayed in PEFT, first-step gradients Go vs PEFT (tiny random
#       checkpoint).
#   fp16 (300 s)  issue 13's checks (fp16 on this GPU stands in for the
#       V100's arithmetic: fp16 operands, f32 accumulation), each a cuda
#       suite rerun with CUDA_LAUNCH_BLOCKING=1 when it fails: the training
#       kernels incl. dequant_int8 against their Go references
#       (TestTrainKernelsOnDevice); one fp16 Trainer step with dynamic loss
#       scaling (2^16 must overflow, the step runs at the first finite
#       scale) against the f32 reference (TestFP16TrainerOnDevice); int8
#       scoring of 48 ML-1M prompts on tiny-vicuna vs unquantised half and
#       vs the CPU int8 engine, P(Yes) within 0.02 (TestInt8ScoringOnDevice);
#       device memory of a 2-layer 13B-shaped model, fp16 and int8, vs the
#       plan, and the 40-layer figure extrapolated
#       (TestInt8Memory13BShapeOnDevice); rella gpu-selftest --precision f16
#       (every kernel, the engine on stories260K in f32 and fp16).
#
# Output: with $OUT set, everything goes there (else .devrun/gpu-logs/PHASE-TIME):
# table.md, a markdown table that grows by one row as each step ends (so
# whatever finished comes back after a timeout), and one log per step. Every
# step has its own time limit, cut to what is left of the phase budget; a
# failed step is recorded and the next one runs. Exit status: 0 when every
# step passed, 1 when one failed or timed out, 3 when there is no GPU (the
# table says so; this takes seconds).
# Environment: RELLA_GPU_BIN (default bin/rella-gpu), RELLA_SHARED (default
# .devrun/shared), RELLA_GPU_WORK (checkpoints and scratch, default
# /tmp/rella-gpu-check; not under $OUT: they are large).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
shared="${RELLA_SHARED:-$root/.devrun/shared}"
bin="${RELLA_GPU_BIN:-$root/bin/rella-gpu}"
testbin="$(dirname "$bin")/cuda-gpu.test"

usage() { awk 'NR == 1 { next } /^#/ { print; next } { exit }' "${BASH_SOURCE[0]}"; }

# --- here: --prepare -------------------------------------------------------------
if [ "${1:-}" = "--prepare" ]; then
	src="${2:-$root/../shared}"
	[ -d "$src/fixtures/stories260K" ] || { echo "gpu-check.sh: no $src/fixtures/stories260K" >&2; exit 1; }
	rm -rf "$shared/fixtures"
	mkdir -p "$shared/fixtures/tokenizer"
	cp -r "$src/fixtures/stories260K" "$shared/fixtures/"
	cp -r "$src/fixtures/tokenizer/llama" "$shared/fixtures/tokenizer/" # rella train/prompts in the peft phase
	# fp16 phase: what tinyVicuna (cuda/fp16_gpu_test.go) links, not the
	# pytorch_model-*.bin shards (8 MB); the first $ml_users users of ML-1M
	# (ratings.dat is ordered by user; the full 12 MB does not fit the
	# carry): mlPrompts takes the first 48 test samples of whatever it reads.
	mkdir -p "$shared/fixtures/tiny-vicuna-bin"
	for f in model.fp16.safetensors.ref config.json tokenizer.model tokenizer_config.json special_tokens_map.json; do
		cp "$src/fixtures/tiny-vicuna-bin/$f" "$shared/fixtures/tiny-vicuna-bin/" || exit 1
	done
	ml_users=200
	rm -rf "$shared/data/ml-1m"
	mkdir -p "$shared/data/ml-1m"
	cp "$src/data/ml-1m/users.dat" "$src/data/ml-1m/movies.dat" "$shared/data/ml-1m/" || exit 1
	awk -F'::' -v n="$ml_users" '$1 + 0 <= n' "$src/data/ml-1m/ratings.dat" >"$shared/data/ml-1m/ratings.dat" || exit 1
	chmod -R u+w "$shared"
	for f in "$bin" "$testbin"; do
		[ -x "$f" ] || echo "gpu-check.sh: warning: $f is missing (run scripts/build-gpu.sh)" >&2
	done
	kb="$(du -skL "$root/.devrun" "$(dirname "$bin")" 2>/dev/null | awk '{s += $1} END {print s}')"
	echo "copied stories260K, tokenizer/llama and tiny-vicuna-bin (fp16 safetensors, config, tokenizer) to $shared/fixtures/"
	echo "copied ML-1M users.dat, movies.dat and the $(wc -l <"$shared/data/ml-1m/ratings.dat") ratings of users 1-$ml_users to $shared/data/ml-1m/"
	echo "carry .devrun and $(basename "$(dirname "$bin")"): $((kb / 1024)) MiB together (the carry limit is 64 MiB)"
	if [ "$kb" -gt $((60 * 1024)) ]; then
		echo "gpu-check.sh: too large to carry; remove old logs under .devrun/gpu-logs" >&2
		exit 1
	fi
	exit 0
fi

phase="${1:-}"
[ $# -gt 0 ] && shift
budget="" layers=8
while [ $# -gt 0 ]; do
	case "$1" in
	--budget) budget="$2"; shift 2 ;;
	--layers) layers="$2"; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	*) echo "gpu-check.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done
case "$phase" in
correctness|fp16) budget="${budget:-300}" ;;
score-bench|train-bench|peft) budget="${budget:-480}" ;;
-h|--help) usage; exit 0 ;;
*) echo "gpu-check.sh: want a PHASE: correctness, score-bench, train-bench, peft or fp16 (got '${phase}')" >&2; usage >&2; exit 2 ;;
esac
case "$budget$layers" in *[!0-9]*) echo "gpu-check.sh: --budget and --layers take whole numbers" >&2; exit 2 ;; esac

out="${OUT:-$root/.devrun/gpu-logs/$phase-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
table="$out/table.md"
# The phase runs in a child under timeout, so that the budget holds even if
# a step outlives its own limit; the parent adds a row when it is killed.
if [ -z "${RELLA_GPU_CHECK_CHILD:-}" ]; then
	RELLA_GPU_CHECK_CHILD=1 OUT="$out" timeout -k 5 $((budget + 15)) bash "${BASH_SOURCE[0]}" "$phase" --budget "$budget" --layers "$layers"
	rc=$?
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		printf '| phase | TIMEOUT | %s | killed at the phase budget (%s s) + 15 s |\n' $((budget + 15)) "$budget" >>"$table"
		echo "gpu-check.sh: phase $phase killed after $((budget + 15)) s; table: $table" >&2
	fi
	exit "$rc"
fi
start="$(date +%s)"
deadline=$((start + budget))
work="${RELLA_GPU_WORK:-/tmp/rella-gpu-check}"
mkdir -p "$work"
export RELLA_KERNEL_CACHE="$work/kernel-cache"
failures=0

{
	echo "# rella gpu-check: $phase"
	echo
	echo "Started $(date -u '+%Y-%m-%d %H:%M:%S') UTC on $(hostname 2>/dev/null || echo '?'); phase budget ${budget} s; logs beside this file."
	echo
	echo "| step | status | s | result |"
	echo "|---|---|---|---|"
} >"$table"

# row STEP STATUS SECONDS RESULT: one table row, written at once.
row() {
	local r="${4//|/\\|}"
	r="${r//$'\n'/ }"
	printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$r" >>"$table"
	printf '== %-40s %-8s %4ss  %s\n' "$1" "$2" "$3" "$r"
	case "$2" in FAIL|TIMEOUT|MISSING) failures=$((failures + 1)) ;; esac
}

left() { echo $((deadline - $(date +%s))); }

# cap S: S, or what is left of the budget (less a margin) if that is less; at least 1.
cap() {
	local l=$(($(left) - 3))
	[ "$l" -lt "$1" ] && set -- "$l"
	[ "$1" -lt 1 ] && set -- 1
	echo "$1"
}

# run LIMIT LOG CMD...: runs CMD with its output in $out/LOG, under a time
# limit of LIMIT seconds cut to what is left of the budget (less a margin
# for the table). Sets rc (124: timed out; 99: no budget left) and secs.
run() {
	local limit="$1" log="$2"
	shift 2
	local l
	l=$(($(left) - 3))
	[ "$l" -lt "$limit" ] && limit="$l"
	if [ "$limit" -lt 5 ]; then
		rc=99 secs=0
		echo "not run: phase budget spent" >"$out/$log"
		return
	fi
	local t0
	t0="$(date +%s)"
	timeout -k 5 "$limit" "$@" >"$out/$log" 2>&1
	rc=$?
	[ "$rc" = 137 ] && rc=124
	secs=$(($(date +%s) - t0))
	printf 'exit %s after %ss (limit %ss): %s\n' "$rc" "$secs" "$limit" "$(echo "$*" | head -n1 | cut -c1-300)" >>"$out/$log"
}

# status: the table status of the last run.
status() {
	case "$rc" in
	0) echo PASS ;;
	124) echo TIMEOUT ;;
	99) echo SKIP ;;
	*) echo FAIL ;;
	esac
}

# because: why the last run did not pass, for the result column.
because() {
	case "$rc" in
	0) ;;
	124) echo "time limit reached (see $1)" ;;
	99) echo "phase budget of ${budget}s spent" ;;
	*) echo "exit $rc (see $1): $(grep -v '^exit [0-9]* after' "$out/$1" | grep -iE 'error|fail|panic|traceback|cannot' | head -n 2 | cut -c1-200 | tr '\n' ' ')" ;;
	esac
}

# --- the machine ------------------------------------------------------------------
sanitizer=""
gpu_step() {
	local t0 smi
	t0="$(date +%s)"
	smi="$(timeout 10 nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>/dev/null | head -n1)"
	if [ -z "$smi" ]; then
		local why="nvidia-smi not found"
		command -v nvidia-smi >/dev/null && why="nvidia-smi lists no GPU: $(timeout 5 nvidia-smi -L 2>&1 | head -n1)"
		ls /dev/nvidia0 >/dev/null 2>&1 || why="$why; no /dev/nvidia0"
		row "GPU" "NO GPU" $(($(date +%s) - t0)) "$why: nothing of phase $phase can run on this machine"
		echo
		echo "table: $table"
		exit 3
	fi
	{
		uname -a
		timeout 10 nvidia-smi
		ldd --version 2>&1 | head -n1
		ls -l /dev/nvidia* 2>&1
	} >"$out/machine.log" 2>&1
	local cudav
	cudav="$(grep -o 'CUDA Version: *[0-9.]*' "$out/machine.log" | head -n1 | awk '{print $NF}')"
	row "GPU (name, driver, cc, memory)" INFO $(($(date +%s) - t0)) "$smi; driver supports CUDA ${cudav:-?}"
	driver_major="${cudav%%.*}"
	local glibc
	glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
	if [ -n "$glibc" ] && [ "$(printf '%s\n2.34\n' "$glibc" | sort -V | head -n1)" = "2.34" ]; then
		row "glibc >= 2.34 (the Go binary)" PASS 0 "$glibc"
	else
		row "glibc >= 2.34 (the Go binary)" FAIL 0 "${glibc:-unknown}"
	fi
	sanitizer="$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | sort -V | tail -n1)"
	for f in "$bin" "$testbin"; do
		[ -x "$f" ] || row "$(basename "$f")" MISSING 0 "build it here with scripts/build-gpu.sh and carry bin"
	done
}

versions_step() {
	run 60 versions.log python3 -c '
import importlib, sys
from importlib import metadata
print("python", sys.version.split()[0])
for m in ("torch", "transformers", "peft", "safetensors", "numpy"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", None) or metadata.version(m))
    except Exception as e:
        print(m, "MISSING", type(e).__name__)
try:
    import torch
    print("torch.cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "cuda available", torch.cuda.is_available())
except Exception as e:
    print("torch.cuda", "MISSING", type(e).__name__)
'
	local v st
	v="$(grep -v '^exit [0-9]* after' "$out/versions.log" | tr '\n' ';' | sed 's/;$//; s/;/; /g')"
	[ -n "$sanitizer" ] && v="$v; compute-sanitizer $("$sanitizer" --version 2>/dev/null | grep -o 'Version [0-9.]*' | head -n1)"
	st="$(status)"
	if [ "$st" = PASS ]; then
		st=INFO
		grep -qE '^(torch|transformers|peft|safetensors) MISSING' "$out/versions.log" && st=FAIL
	fi
	row "versions" "$st" "$secs" "$v$( [ "$rc" = 0 ] || echo " $(because versions.log)")"
}

# libraries: every libcublas / libnvrtc on the machine (ldconfig, CUDA
# toolkits, Python's NVIDIA wheels, torch/lib); the folders of those of the
# newest major the driver supports, and older, go on LD_LIBRARY_PATH (never
# a newer major). The binding chooses among them (TestLibraries says which).
libraries_step() {
	local t0 found dirs="" lib f m
	t0="$(date +%s)"
	local pydirs
	pydirs="$(timeout "$(cap 20)" python3 -c '
import site, os
ds = set(site.getsitepackages() + [site.getusersitepackages()])
try:
    import torch
    ds.add(os.path.dirname(os.path.dirname(torch.__file__)))
except Exception:
    pass
print("\n".join(d for d in ds if os.path.isdir(d)))' 2>/dev/null)"
	found="$({
		ldconfig -p 2>/dev/null | awk '{print $NF}' | grep -E '/lib(cublas|nvrtc)\.so\.'
		find /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu /usr/lib64 -maxdepth 4 \( -name 'libcublas.so.*' -o -name 'libnvrtc.so.*' \) 2>/dev/null
		for d in $pydirs; do
			find "$d/nvidia" "$d/torch/lib" -maxdepth 4 \( -name 'libcublas.so.*' -o -name 'libnvrtc.so.*' \) 2>/dev/null
		done
	} | grep -E 'lib(cublas|nvrtc)\.so\.[0-9]+(\.[0-9]+)?$' | sort -u)"
	echo "$found" >"$out/libraries.log"
	local summary=""
	for lib in libcublas libnvrtc; do
		local names=""
		for f in $(echo "$found" | grep "/$lib\.so\."); do
			m="$(basename "$f" | sed "s/^$lib\.so\.\([0-9]*\).*/\1/")"
			names="$names $(basename "$f")@$(dirname "$f")"
			if [ -z "${driver_major:-}" ] || [ "$m" -le "$driver_major" ]; then
				case ":$dirs:" in *":$(dirname "$f"):"*) ;; *) dirs="${dirs:+$dirs:}$(dirname "$f")" ;; esac
			else
				echo "skipped (newer than the driver's CUDA $driver_major): $f" >>"$out/libraries.log"
			fi
		done
		summary="$summary$lib:${names:- none};"
	done
	export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$out/libraries.log"
	if echo "$found" | grep -q libcublas && echo "$found" | grep -q libnvrtc; then
		row "libraries found" INFO $(($(date +%s) - t0)) "$summary"
	else
		row "libraries found" FAIL $(($(date +%s) - t0)) "$summary (see libraries.log)"
	fi
}

# suite NAME LIMIT REGEX [NOTES]: the cuda tests matching REGEX in their own
# process; on failure once more with CUDA_LAUNCH_BLOCKING=1, under
# compute-sanitizer memcheck when it is there. The test log lines matching
# the extended regex NOTES (their measured figures) go into the row.
suite() {
	local name="$1" limit="$2" re="$3" notes="${4:-}" log
	log="go-$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-').log"
	if [ ! -x "$testbin" ]; then
		row "go: $name" MISSING 0 "$testbin"
		return
	fi
	run "$limit" "$log" env RELLA_REQUIRE_GPU=1 RELLA_SHARED="$shared" bash -c 'cd "$1/cuda" && shift && exec "$@"' _ "$root" \
		"$testbin" -test.v -test.count=1 -test.run "$re"
	local counts lib
	counts="$(grep -c -- '^--- PASS' "$out/$log") passed, $(grep -c -- '^--- FAIL' "$out/$log") failed, $(grep -c -- '^--- SKIP' "$out/$log") skipped"
	lib="$(grep -o 'LIB .*' "$out/$log" | sed 's/^LIB //' | tr '\n' ';')"
	[ "$rc" = 99 ] && counts="not run"
	if [ -n "$notes" ]; then
		notes="$(grep -E '^\s+\S+_test\.go:[0-9]+: ' "$out/$log" | grep -E -- "$notes" | sed -E 's/^\s+//' | head -n 4 | tr '\n' ';' | sed 's/;$//')"
	fi
	row "go: $name" "$(status)" "$secs" "$counts${lib:+; $lib}${notes:+; $notes}$( [ "$rc" = 0 ] || echo "; $(because "$log")")"
	if [ "$rc" != 0 ] && [ "$rc" != 99 ]; then
		local how="CUDA_LAUNCH_BLOCKING=1" pre=()
		if [ -n "$sanitizer" ]; then
			how="$how, compute-sanitizer memcheck"
			pre=("$sanitizer" --tool memcheck --print-limit 20 --error-exitcode 86)
		fi
		run "$limit" "${log%.log}-rerun.log" env CUDA_LAUNCH_BLOCKING=1 RELLA_REQUIRE_GPU=1 RELLA_SHARED="$shared" \
			bash -c 'cd "$1/cuda" && shift && exec "$@"' _ "$root" "${pre[@]}" "$testbin" -test.v -test.count=1 -test.run "$re"
		row "go: $name (rerun: $how)" "$(status)" "$secs" "$(grep -c -- '^--- FAIL' "$out/${log%.log}-rerun.log") failed; $(grep -m1 -E '=========.*(Invalid|Error|error)' "$out/${log%.log}-rerun.log" | cut -c1-200) $(because "${log%.log}-rerun.log")"
	fi
}

# nccl_step: the trainer's data-parallel path with a one-rank NCCL group
# (gradients all-reduced on the GPU by ncclAllReduce) against the plain
# single-process path, bit for bit (ncclcomm-gpu.test). libnccl.so.2 from
# RELLA_NCCL_LIBRARY, the loader's cache or Python's nvidia-nccl wheel.
nccl_step() {
	local tb log=go-nccl-world-1.log lib
	tb="$(dirname "$bin")/ncclcomm-gpu.test"
	if [ ! -x "$tb" ]; then
		row "go: NCCL world size 1 vs plain trainer" MISSING 0 "$tb"
		return
	fi
	lib="${RELLA_NCCL_LIBRARY:-$({
		ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 / {print $NF}'
		timeout 20 python3 -c 'import site, glob; print("\n".join(p for d in site.getsitepackages() for p in glob.glob(d + "/nvidia/nccl/lib/libnccl.so.2")))' 2>/dev/null
	} | head -n1)}"
	run 60 "$log" env RELLA_REQUIRE_GPU=1 RELLA_NCCL_LIBRARY="$lib" "$tb" -test.v -test.count=1 -test.run '^TestNCCLWorldOneEqualsPlain$'
	row "go: NCCL world size 1 vs plain trainer" "$(status)" "$secs" "$(grep -c -- '^--- PASS' "$out/$log") passed, $(grep -c -- '^--- FAIL' "$out/$log") failed; ${lib:-libnccl.so.2 from the loader path}$( [ "$rc" = 0 ] || echo "; $(because "$log")")"
}

# field KEY LINE: the value of key=value in LINE.
field() { echo "$2" | sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p"; }

# ratio A B: A/B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }

preamble() {
	gpu_step
	versions_step
	libraries_step
}

# --- phases -------------------------------------------------------------------------
stories="$shared/fixtures/stories260K"

correctness() {
	preamble
	suite "libraries chosen (TestLibraries)" 30 '^TestLibraries$'
	suite "NVRTC compile, symbols, launch arguments" 60 '^(TestNVRTCCompile|TestSymbols|TestLaunchArgumentsMatchKernels|TestTrainLaunchArgumentsMatchKernels)$'
	suite "kernels and GEMMs vs references" 60 '^TestKernelsOnDevice$'
	suite "training kernels vs references" 60 '^TestTrainKernelsOnDevice$'
	suite "engine on stories260K vs CPU" 60 '^TestEngineStories$'
	suite "trainer on stories260K vs CPU" 60 '^TestTrainerStoriesOnDevice$'
	nccl_step

	# HF transformers on stories260K (f32) against the Go engine (f32).
	local hf="$work/hf-stories" line rel
	if [ ! -f "$stories/config.json" ]; then
		row "HF vs Go logits (stories260K)" MISSING 0 "$stories (run scripts/gpu-check.sh --prepare here)"
	else
		rm -rf "$hf"
		run 90 hf-stories.log python3 "$root/scripts/hf_bench.py" --model "$stories" --dtype float32 --out "$hf" \
			--samples 16 --min-len 8 --max-len 200 --batch 4 --reps 3
		line="$(grep '^BENCH hf_scoring' "$out/hf-stories.log" | tail -n1)"
		row "HF transformers f32 scoring (stories260K)" "$(status)" "$secs" "${line:-$(because hf-stories.log)}"
		if [ -n "$line" ] && [ -x "$bin" ]; then
			run 90 go-vs-hf-stories.log "$bin" gpu-selftest --model "$stories" --bench "$hf" --precision f32 --reps 3
			local st
			st="$(status)"
			rel="$(grep 'vs HF transformers' "$out/go-vs-hf-stories.log" | tail -n1 | awk '{print $NF}')"
			row "rella gpu-selftest (kernels, engine on stories260K)" "$st" "$secs" "$(grep -c '^PASS' "$out/go-vs-hf-stories.log") passed, $(grep -c '^FAIL' "$out/go-vs-hf-stories.log") failed; $(grep -m1 'INFO kernels' "$out/go-vs-hf-stories.log" | cut -c6-) $(because go-vs-hf-stories.log)"
			if [ -n "$rel" ]; then
				if awk -v r="$rel" 'BEGIN { exit !(r + 0 <= 1e-4) }'; then st=PASS; else st=FAIL; fi
				row "Go f32 vs HF f32 logits (stories260K, 16 seqs)" "$st" 0 "relative error $rel (bound 1e-4)"
			else
				row "Go f32 vs HF f32 logits (stories260K, 16 seqs)" FAIL 0 "no comparison line in go-vs-hf-stories.log"
			fi
		fi
	fi

	# PEFT's LoRA gradients on stories260K (f32, dropout 0) against rella
	# grads on the GPU (f32 and bf16), same batch and starting adapter.
	local peft="$root/scripts/hf_peft.py" d="$work/peft-stories"
	if [ -f "$stories/config.json" ] && [ -x "$bin" ]; then
		rm -rf "$d" && mkdir -p "$d"
		run 60 peft-stories.log bash -c '
			python3 "$1" make-data --out "$2/data.json" --examples 8 --min-len 24 --max-len 64 --label-last 8 --vocab 512 &&
			python3 "$1" step --model "$3" --batch "$2/data.json" --dtype float32 --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --out "$2/peft"' \
			_ "$peft" "$d" "$stories"
		line="$(grep '^CHECK peft_step_float32' "$out/peft-stories.log" | tail -n1)"
		row "PEFT f32 step (stories260K, LoRA on all 7 modules)" "$(status)" "$secs" "${line:-$(because peft-stories.log)}"
		if [ -f "$d/peft/lora_init.safetensors" ]; then
			local dt tol cos
			for dt in float32 bf16; do
				tol=1e-3 cos=0.99999
				[ "$dt" = bf16 ] && tol=0.1 cos=0.99
				run 45 "go-grads-stories-$dt.log" bash -c '
					"$1" grads --model "$2" --batch "$3/data.json" --lora-init "$3/peft/lora_init.safetensors" --device gpu --dtype "$4" \
						--targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --out "$3/go-$4" &&
					python3 "$5" compare --a "$3/go-$4/grads.safetensors" --b "$3/peft/grads.safetensors" --tol "$6" --min-cos "$7"' \
					_ "$bin" "$stories" "$d" "$dt" "$peft" "$tol" "$cos"
				line="$(grep '^CHECK grads_compare' "$out/go-grads-stories-$dt.log" | tail -n1)"
				row "Go gpu $dt vs PEFT f32 LoRA grads (stories260K)" "$(status)" "$secs" "${line:-$(because "go-grads-stories-$dt.log")}; bounds rel $tol, cosine $cos"
			done
		fi
	fi

	# Memory errors in the forward kernels, with what is left of the budget.
	if [ -n "$sanitizer" ] && [ -x "$testbin" ]; then
		if [ "$(left)" -ge 40 ]; then
			run "$(($(left) - 5))" sanitizer-kernels.log env RELLA_REQUIRE_GPU=1 bash -c 'cd "$1/cuda" && shift && exec "$@"' _ "$root" \
				"$sanitizer" --tool memcheck --print-limit 20 --error-exitcode 86 "$testbin" -test.v -test.count=1 -test.run '^TestKernelsOnDevice$'
			row "compute-sanitizer memcheck: forward kernels" "$(status)" "$secs" "$(grep -m1 'ERROR SUMMARY' "$out/sanitizer-kernels.log") $(because sanitizer-kernels.log)"
		else
			row "compute-sanitizer memcheck: forward kernels" SKIP 0 "less than 40 s of the budget left"
		fi
	else
		row "compute-sanitizer memcheck" SKIP 0 "compute-sanitizer not found"
	fi
}

score_bench() {
	preamble
	local ck="$work/bench-7bw-${layers}l" hl gl rel
	rm -rf "$ck"
	run 240 hf-scoring.log python3 "$root/scripts/hf_bench.py" --out "$ck" --shape 7b --layers "$layers" \
		--samples 64 --min-len 256 --max-len 768 --batch 8 --reps 5
	hl="$(grep '^BENCH hf_scoring' "$out/hf-scoring.log" | tail -n1)"
	row "checkpoint + HF scoring (7B width, $layers of 32 layers, bf16, sdpa)" "$(status)" "$secs" \
		"${hl:-$(because hf-scoring.log)} $(grep -m1 '^INFO hf' "$out/hf-scoring.log" | cut -c1-220)"
	if [ ! -f "$ck/seqs.json" ]; then
		return # no checkpoint to time Go on
	fi
	if [ ! -x "$bin" ]; then
		row "Go scoring" MISSING 0 "$bin"
		return
	fi
	run 200 go-scoring.log "$bin" gpu-selftest --bench "$ck" --reps 5
	gl="$(grep '^BENCH go_scoring' "$out/go-scoring.log" | tail -n1)"
	row "Go scoring (7B width, $layers of 32 layers, bf16)" "$(status)" "$secs" "${gl:-$(because go-scoring.log)}"
	rel="$(grep 'vs HF transformers' "$out/go-scoring.log" | tail -n1)"
	[ -n "$rel" ] && row "Go vs HF scoring logits ($layers layers)" "$(echo "$rel" | awk '{print $1}')" 0 "relative error $(echo "$rel" | awk '{print $NF}') (bound 5e-2: two bf16 implementations)"
	if [ -n "$gl" ] && [ -n "$hl" ]; then
		row "Go/HF samples per second ($layers layers)" INFO 0 \
			"$(ratio "$(field samples_per_s "$gl")" "$(field samples_per_s "$hl")") ($(field samples_per_s "$gl") / $(field samples_per_s "$hl"))"
	fi
}

train_bench() {
	preamble
	local ck="$work/train-7bw-${layers}l" hl gl L=512
	rm -rf "$ck"
	run 150 make-model.log python3 "$root/scripts/hf_peft.py" make-model --shape 7b --layers "$layers" --out "$ck"
	row "checkpoint (7B width, $layers of 32 layers, bf16, made on the GPU)" "$(status)" "$secs" "$(grep -m1 '^INFO' "$out/make-model.log") $(because make-model.log)"
	[ -f "$ck/config.json" ] || return
	run 150 hf-train.log python3 "$root/scripts/hf_peft.py" bench --model "$ck" --micro-batch 8 --steps 5 --warmup 2 \
		--seq-lens "$L" --out "$work/hf-train"
	hl="$(grep "^BENCH hf_train_lossgrad" "$out/hf-train.log" | tail -n1)"
	row "HF PEFT forward+backward (8x$L, $layers layers, r 8 q,v)" "$(status)" "$secs" "${hl:-$(because hf-train.log)}"
	if [ -x "$testbin" ]; then
		run 150 go-train.log env RELLA_TRAIN_BENCH_DIR="$ck" RELLA_TRAIN_BENCH_BATCH=8 RELLA_TRAIN_BENCH_LEN="$L" RELLA_TRAIN_BENCH_REPS=5 \
			bash -c 'cd "$1/cuda" && shift && exec "$@"' _ "$root" "$testbin" -test.v -test.count=1 -test.run '^TestTrainBench$'
		gl="$(grep -o 'BENCH go_train_lossgrad.*' "$out/go-train.log" | tail -n1)"
		row "Go LossGrad (8x$L, $layers layers, r 8 q,v)" "$(status)" "$secs" "${gl:-$(because go-train.log)}"
	else
		row "Go LossGrad" MISSING 0 "$testbin"
	fi
	if [ -n "$hl" ] && [ -n "$gl" ]; then
		row "Go/HF training tokens per second ($layers layers)" INFO 0 \
			"$(ratio "$(field tokens_per_s "$gl")" "$(field tokens_per_s "$hl")") ($(field tokens_per_s "$gl") / $(field tokens_per_s "$hl"))"
	fi
}

# peft: rella-written adapters loaded by PEFT, a rella train replayed in
# PEFT, first-step gradients Go vs PEFT, on a tiny random checkpoint.
peft_phase() {
	preamble
	local peft="$root/scripts/hf_peft.py" tok="$shared/fixtures/tokenizer/llama" tiny="$work/tiny-model" w="$work/peft" line
	rm -rf "$w" && mkdir -p "$w"
	if [ ! -f "$tiny/config.json" ]; then
		run 90 make-tiny.log python3 "$peft" make-model --shape tiny --out "$tiny"
		row "tiny random checkpoint" "$(status)" "$secs" "$(because make-tiny.log)"
	fi
	if [ ! -f "$tiny/config.json" ] || [ ! -x "$bin" ] || [ ! -f "$tok/tokenizer.model" ]; then
		row "PEFT checks" MISSING 0 "need $tiny/config.json, $bin and $tok (scripts/gpu-check.sh --prepare)"
		return
	fi
	# adapter DEVICE DTYPE TOL: rella train (3 steps) writes a PEFT adapter;
	# PEFT loads it and P(Yes) of 16 test prompts must match rella's.
	adapter() {
		local dev="$1" dtype="$2" tol="$3" d="$w/rella-$1-$2"
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
		run 90 "adapter-$dev-$dtype.log" bash -c '
			"$1" train -c "$2/config.yaml" &&
			"$1" prompts -c "$2/config.yaml" --split test --limit 16 >"$2/prompts.jsonl" &&
			python3 "$3" vicuna <"$2/prompts.jsonl" >"$2/wrapped.jsonl" &&
			"$1" tokenize --tokenizer "$4" --bos <"$2/wrapped.jsonl" >"$2/ids.jsonl" &&
			python3 "$3" load-adapter --model "$5" --adapter "$2/run/adapter" --seqs "$2/ids.jsonl" \
				--rella-pred "$2/run/train/test-recency/predictions.jsonl" --tol "$6" --out "$2/peft"' _ "$bin" "$d" "$peft" "$tok" "$tiny" "$tol"
		line="$(grep '^CHECK peft_load_adapter' "$out/adapter-$dev-$dtype.log" | tail -n1)"
		row "rella adapter -> PEFT ($dev $dtype)" "$(status)" "$secs" "${line#CHECK peft_load_adapter }$(because "adapter-$dev-$dtype.log")"
	}
	adapter cpu float32 1e-3
	adapter gpu float32 1e-3
	adapter gpu bf16 3e-2
	# A 50-step rella train (gpu f32, dropout 0, record_batches) replayed in PEFT.
	local d="$w/curve"
	mkdir -p "$d"
	cat >"$d/config.yaml" <<EOF
seed: 7
output_dir: $d/run
stages: [prepare, train]
generate: {data: true, data_users: 40, data_items: 60}
data: {dataset: ml-1m, dir: $d/run/source, history_len: 3, max_eval_samples: 16}
model: {path: $tiny, tokenizer: $tok, device: gpu, dtype: float32, batch_size: 8}
lora: {lora_r: 8, lora_alpha: 16, lora_dropout: 0, lora_target_modules: [q_proj, v_proj]}
training: {learning_rate: 1.0e-3, max_steps: 50, batch_size: 8, micro_batch_size: 4, lr_scheduler: linear, eval_steps: 50, record_batches: true}
retrieval: {enabled: false, train_type: original, train_samples: 16}
EOF
	run 150 curve.log bash -c '
		"$1" train -c "$2/config.yaml" &&
		python3 "$3" curve --model "$4" --data "$2/run/train/batches.json" --lora-init "$2/run/train/lora_init.safetensors" \
			--steps 50 --total-steps 50 --lr 1e-3 --scheduler linear --dtype float32 --compare-log "$2/run/train/log.jsonl" --out "$2/peft"' \
		_ "$bin" "$d" "$peft" "$tiny"
	line="$(grep '^CHECK peft_curve' "$out/curve.log" | tail -n1)"
	row "rella gpu f32 vs PEFT 50-step curve" "$(status)" "$secs" "${line:-$(because curve.log)}"
}

# fp16: issue 13's device checks (fp16 training with dynamic loss scaling,
# int8 weight-only base weights, memory of a 13B-shaped int8 model).
fp16_phase() {
	preamble
	local f miss=""
	for f in fixtures/stories260K/config.json fixtures/tiny-vicuna-bin/model.fp16.safetensors.ref data/ml-1m/ratings.dat; do
		[ -f "$shared/$f" ] || miss="$miss $shared/$f"
	done
	# The tests skip without their files; a skip must not read as a pass.
	[ -n "$miss" ] && row "fixtures and data" MISSING 0 "$miss (run scripts/gpu-check.sh --prepare here and carry .devrun)"
	suite "training kernels incl. dequant_int8 vs references" 60 '^TestTrainKernelsOnDevice$' 'dequant|bit-exact'
	suite "fp16 Trainer step + dynamic loss scaling vs f32 (stories260K)" 45 '^TestFP16TrainerOnDevice$' 'overflowed'
	suite "int8 scoring vs half and CPU int8 (48 ML-1M prompts, tiny-vicuna)" 60 '^TestInt8ScoringOnDevice$' 'worst'
	suite "13B-shaped int8 device memory vs plan (2 layers)" 90 '^TestInt8Memory13BShapeOnDevice$' 'device memory|extrapolated'
	if [ ! -x "$bin" ]; then
		row "rella gpu-selftest --precision f16" MISSING 0 "$bin"
	elif [ -f "$stories/config.json" ]; then
		run 45 selftest-f16.log "$bin" gpu-selftest --model "$stories" --precision f16
		row "rella gpu-selftest --precision f16 (kernels, engine on stories260K in f32 and fp16)" "$(status)" "$secs" \
			"$(grep -c '^PASS' "$out/selftest-f16.log") passed, $(grep -c '^FAIL' "$out/selftest-f16.log") failed; $(grep '^FAIL' "$out/selftest-f16.log" | head -n 2 | cut -c1-160 | tr '\n' ' ')$(because selftest-f16.log)"
	fi
}

case "$phase" in
correctness) correctness ;;
fp16) fp16_phase ;;
score-bench) score_bench ;;
train-bench) train_bench ;;
peft) peft_phase ;;
esac

{
	echo
	echo "Ended $(date -u '+%H:%M:%S') UTC after $(($(date +%s) - start)) s of ${budget} s; $failures step(s) failed, timed out or missing."
} >>"$table"
echo
echo "table: $table"
[ "$failures" = 0 ]
