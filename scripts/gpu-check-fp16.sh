#!/usr/bin/env bash
# gpu-check-fp16.sh: the device checks of issue 13 (fp16 training with dynamic
# loss scaling, int8 base weights, memory of a 13B-shaped int8 model), for the
# GPU machine (no Go toolchain there). fp16 on an H100/H200 stands in for the
# V100's arithmetic (fp16 operands, f32 accumulation). The rows are meant to
# be folded into scripts/gpu-check.sh; until then run this one on its own.
#
# Here (with Go), first:
#   scripts/build-gpu.sh                 # bin/rella-gpu and bin/cuda-gpu.test
#   scripts/gpu-check-fp16.sh --prepare  # copies stories260K, tiny-vicuna-bin and ml-1m into .devrun/shared
# then, with bin and .devrun carried to the GPU machine:
#   scripts/gpu-check-fp16.sh
#
# Rows (each a go test of package cuda, tag rellagpu, RELLA_REQUIRE_GPU=1):
#   kernels incl. dequant_int8   TestTrainKernelsOnDevice: every training kernel against its
#                                Go reference in f32 and the half type; dequant_int8 bit-exact
#   fp16 step + loss scaling     TestFP16TrainerOnDevice: 2^16 overflows, the step runs at the
#                                first finite scale, unscaled gradients vs f32 (2%, cos 0.9995)
#   int8 scoring vs half         TestInt8ScoringOnDevice: 48 ML-1M prompts, real tokenizer,
#                                P(Yes) within 0.02 of unquantised and of the CPU int8 engine
#   13B-shaped int8 memory       TestInt8Memory13BShapeOnDevice: measured device memory of a
#                                2-layer 13B-shaped model, fp16 and int8, vs the plan
#   fp16 gpu-selftest            rella gpu-selftest --precision f16 (kernels and engine in fp16)
# Full logs go to $RELLA_GPU_LOGS (default .devrun/gpu-logs-fp16/<time>); a short table
# comes last. Exit status 1 when a row failed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
shared="${RELLA_SHARED:-$root/.devrun/shared}"
case "${1:-}" in
--prepare)
	src="${2:-$root/../shared}"
	mkdir -p "$shared/fixtures" "$shared/data"
	cp -r "$src/fixtures/stories260K" "$src/fixtures/tiny-vicuna-bin" "$shared/fixtures/"
	cp -r "$src/data/ml-1m" "$shared/data/"
	echo "copied stories260K, tiny-vicuna-bin and data/ml-1m from $src to $shared (carry .devrun and bin to the GPU machine)"
	exit 0 ;;
-h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}"; exit 0 ;;
"") ;;
*) echo "gpu-check-fp16.sh: unknown argument $1" >&2; exit 2 ;;
esac

logs="${RELLA_GPU_LOGS:-$root/.devrun/gpu-logs-fp16/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$logs"
bin="${RELLA_GPU_BIN:-$root/bin/rella-gpu}"
testbin="$(dirname "$bin")/cuda-gpu.test"
export RELLA_KERNEL_CACHE="$root/.devrun/kernel-cache"
# cuBLAS and NVRTC from the usual places (as gpu-check.sh finds them).
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
	$(python3 -c 'import nvidia, os; p = nvidia.__path__[0]; print(" ".join(os.path.join(p, s, "lib") for s in ("cublas", "cuda_nvrtc")))' 2>/dev/null); do
	[ -d "$d" ] && LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv >"$logs/machine.log" 2>&1 || true

summary=() failed=0
row() { summary+=("$(printf '%-30s %s' "$1" "$2")"); }
gotest() { # name pattern
	local log="$logs/$(echo "$1" | tr ' +' '__').log"
	if [ ! -x "$testbin" ]; then
		row "$1" "MISSING $testbin (run scripts/build-gpu.sh here)"; failed=1; return
	fi
	(cd "$root/cuda" && RELLA_REQUIRE_GPU=1 RELLA_SHARED="$shared" timeout 900 "$testbin" -test.v -test.count=1 -test.run "$2" >"$log" 2>&1)
	local rc=$?
	local note
	note="$(grep -E '^\s+\S+_test.go:[0-9]+: ' "$log" | grep -E 'overflowed|worst|device memory|extrapolated|bit-exact' | sed -E 's/^\s+//' | head -n 4 | tr '\n' ';')"
	if [ $rc = 0 ]; then row "$1" "PASS $note"; else row "$1" "FAIL (rc $rc, $log) $note"; failed=1; fi
}

gotest "kernels incl. dequant_int8" '^TestTrainKernelsOnDevice$'
gotest "fp16 step + loss scaling" '^TestFP16TrainerOnDevice$'
gotest "int8 scoring vs half" '^TestInt8ScoringOnDevice$'
gotest "13B-shaped int8 memory" '^TestInt8Memory13BShapeOnDevice$'
if [ -x "$bin" ]; then
	"$bin" gpu-selftest --precision f16 --model "$shared/fixtures/stories260K" >"$logs/selftest-f16.log" 2>&1
	rc=$?
	if [ $rc = 0 ]; then row "fp16 gpu-selftest" "PASS"; else row "fp16 gpu-selftest" "FAIL (rc $rc, $logs/selftest-f16.log)"; failed=1; fi
else
	row "fp16 gpu-selftest" "MISSING $bin"; failed=1
fi

echo "== issue 13 device checks ($(nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader 2>/dev/null | head -n 1)); logs in $logs"
printf '%s\n' "${summary[@]}"
exit $failed
