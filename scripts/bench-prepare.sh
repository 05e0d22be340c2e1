#!/usr/bin/env bash
# Benchmark: `rella prepare` on an ML-1M-sized ratings.dat (1,000,209 lines in
# the original format, 6,040 users, 3,706 movies), generated here with the
# real users.dat/movies.dat from ../shared/data/ml-1m. Prints wall time and
# peak memory (GNU time).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${RELLA_SHARED:-../shared}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ml-1m"
cp "$shared/data/ml-1m/users.dat" "$shared/data/ml-1m/movies.dat" "$work/ml-1m/"
python3 - "$work/ml-1m" <<'PY'
import random, sys
random.seed(1)
movies = [l.split("::")[0] for l in open(sys.argv[1] + "/movies.dat", encoding="latin-1")][:3706]
users, total = 6040, 1000209
# skewed per-user counts (>= 20) summing to exactly 1,000,209
w = [random.paretovariate(1.2) for _ in range(users)]
extra = total - 20 * users
counts = [min(20 + int(extra * x / sum(w)), 2314) for x in w]  # 2,314: ML-1M's largest user
i = 0
while sum(counts) < total:  # hand out what the cap and rounding left
    if counts[i % users] < 2314:
        counts[i % users] += 1
    i += 1
with open(sys.argv[1] + "/ratings.dat", "w") as f:
    for u, n in enumerate(counts, 1):
        t = 956703932 + random.randrange(10**7)
        for m in random.sample(movies, n):
            t += random.randrange(0, 400)
            f.write(f"{u}::{m}::{random.randint(1,5)}::{t}\n")
PY
wc -l < "$work/ml-1m/ratings.dat"
go build -o "$work/rella" ./cmd/rella
cat > "$work/run.yaml" <<YAML
output_dir: $work/out
data: {dataset: ml-1m, dir: $work/ml-1m}
YAML
/usr/bin/time -f "rella prepare: %e s wall, %M KB peak RSS" "$work/rella" prepare -c "$work/run.yaml" 2>&1 | tail -n 2
cat "$work/out/data/stats.json"
