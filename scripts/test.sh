#!/usr/bin/env bash
# The project's test command (README, .ci/run): format check, vet, build,
# and every test. Needs Go, and g++ for cuda/kernelexec (which executes the
# CUDA kernel source on the CPU); OpenBLAS (libopenblas0-pthread) for the
# CPU engine's BLAS-path tests; tests that need ../shared skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."

# g++ and OpenBLAS from Debian's packages when they are missing, as root or
# in CI (quietly, only then); there, cuda/kernelexec must run rather than
# skip, and the CPU engine's tests must exercise the BLAS path
# (RELLA_BLAS_REQUIRED=1) as well as the gonum one. (The harness has its own
# fiber runtime: no TBB / libtbb-dev needed.)
if [ "$(id -u)" = 0 ] || [ -n "${CI:-}" ]; then
  missing=()
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  ldlibs=$( (/sbin/ldconfig -p || ldconfig -p) 2>/dev/null || true)
  grep -q 'libopenblas\.so\.0 ' <<<"$ldlibs" || missing+=(libopenblas0-pthread)
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "scripts/test.sh: installing ${missing[*]} (cuda/kernelexec, the CPU engine's BLAS path)" >&2
    { $sudo apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
      { echo "scripts/test.sh: could not install ${missing[*]}" >&2; exit 1; }
  fi
  export RELLA_KERNELEXEC_REQUIRED=1 RELLA_BLAS_REQUIRED=1
fi
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" $unformatted >&2
  exit 1
fi
go vet ./...
go build ./...
go test -count=1 "$@" ./...
# The CPU engine's tests once more on gonum's GEMM (the run above uses a
# BLAS library where one loads): both paths must meet the same references.
RELLA_BLAS=none go test -count=1 "$@" ./cpu/...
