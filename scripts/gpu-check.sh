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
#
# It reports the driver, GPU, compute capability and glibc; finds cuBLAS and
# NVRTC (ldconfig, /usr/local/cuda*, python's nvidia wheels, torch/lib) and
# puts their folders on LD_LIBRARY_PATH; runs the device tests of package
# cuda (NVRTC compile, every kernel against its CPU reference, the engine on
# stories260K), rella gpu-selftest, and the scoring benchmark against HF
# transformers (scripts/hf_bench.py). Full logs go to $RELLA_GPU_LOGS
# (default .devrun/gpu-logs/<time>); a short table comes last.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
shared="${RELLA_SHARED:-$root/.devrun/shared}"
shape=7b samples=64 reps=5 bench=1 minlen=256 maxlen=768 batch=8
while [ $# -gt 0 ]; do
	case "$1" in
	--prepare)
		src="${2:-$root/../shared}"
		mkdir -p "$shared/fixtures"
		cp -r "$src/fixtures/stories260K" "$shared/fixtures/"
		echo "copied $src/fixtures/stories260K to $shared/fixtures/ (carry .devrun and bin to the GPU machine)"
		exit 0 ;;
	--shape) shape="$2"; shift 2 ;;
	--samples) samples="$2"; shift 2 ;;
	--reps) reps="$2"; shift 2 ;;
	--min-len) minlen="$2"; shift 2 ;;
	--max-len) maxlen="$2"; shift 2 ;;
	--batch) batch="$2"; shift 2 ;;
	--no-bench) bench=""; shift ;;
	-h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}"; exit 0 ;;
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

echo
echo "logs: $logs"
printf '%s\n' "${summary[@]}" | tee "$logs/summary.txt"
