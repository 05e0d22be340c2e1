#!/usr/bin/env bash
# The project's test command (README, .ci/run): format check, vet, build,
# and every test. Needs Go, and g++ for cuda/kernelexec (which executes the
# CUDA kernel source on the CPU); tests that need ../shared skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."

# g++ from Debian's packages when it is missing, as root or in CI (quietly,
# only then); there, cuda/kernelexec must run rather than skip. (The harness
# has its own fiber runtime: no TBB / libtbb-dev needed.)
if [ "$(id -u)" = 0 ] || [ -n "${CI:-}" ]; then
  if ! command -v g++ >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "scripts/test.sh: installing g++ (cuda/kernelexec)" >&2
    { $sudo apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends g++ >/dev/null; } ||
      { echo "scripts/test.sh: could not install g++; cuda/kernelexec cannot run" >&2; exit 1; }
  fi
  export RELLA_KERNELEXEC_REQUIRED=1
fi
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" $unformatted >&2
  exit 1
fi
go vet ./...
go build ./...
go test -count=1 "$@" ./...
