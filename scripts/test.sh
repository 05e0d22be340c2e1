#!/usr/bin/env bash
# The project's test command (README, .ci/run): format check, vet, build,
# and every test. Needs only Go; tests that need ../shared skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" $unformatted >&2
  exit 1
fi
go vet ./...
go build ./...
go test -count=1 "$@" ./...
