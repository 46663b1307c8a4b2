#!/usr/bin/env bash
# Benchmark imgcheck against lychee and a one-at-a-time checker, all against loopback servers
# started here (crates/imgcheck/examples/bench_server.rs). Prints the figures that
# docs/benchmarks.md records. Loopback only; the server stops by itself after --lifetime.
#
#   bash bench/imgcheck.sh            # 50,000 distinct URLs, 5 ports
#   URLS=5000 bash bench/imgcheck.sh  # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

URLS=${URLS:-50000}
HOSTS=${HOSTS:-5}
SAMPLE=${SAMPLE:-1000}          # records for the one-at-a-time baseline
CONCURRENCY=${CONCURRENCY:-256}
PER_HOST=${PER_HOST:-64}
TIMEOUT=${TIMEOUT:-2}           # seconds, connect and whole request, for every tool
RETRIES=${RETRIES:-1}
OUT=${OUT:-target/bench-imgcheck}
LYCHEE=${LYCHEE:-lychee}

mkdir -p "$OUT"
nice -n 10 cargo build --release --locked -p imgcheck --bin imgcheck --example bench_server

if ! command -v "$LYCHEE" >/dev/null; then
  echo "lychee not found: installing it (slow)" >&2
  nice -n 10 cargo install lychee --locked || echo "lychee could not be installed" >&2
fi

target/release/examples/bench_server --urls "$URLS" --hosts "$HOSTS" --sample "$SAMPLE" \
  --out-dir "$OUT" --lifetime 3600 >"$OUT/server.log" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q ready "$OUT/server.log" && break; sleep 0.1; done
PORT=$(sed -n 's/.*ports=\[\([0-9]*\).*/\1/p' "$OUT/server.log")

stats() { curl -s "http://127.0.0.1:$PORT/__stats"; }

echo "== machine"; nproc; uname -a; date -u
echo "== input: $(($(wc -l <"$OUT/records.csv") - 1)) records, $URLS distinct URLs, $HOSTS ports"
echo "   concurrency=$CONCURRENCY per-host=$PER_HOST timeout=${TIMEOUT}s retries=$RETRIES"

run_imgcheck() { # name input extra-args...
  local name=$1 input=$2; shift 2
  local before; before=$(stats)
  set +e
  /usr/bin/time -v target/release/imgcheck "$input" --no-progress \
    --concurrency "$CONCURRENCY" --per-host "$PER_HOST" \
    --connect-timeout "${TIMEOUT}s" --timeout "${TIMEOUT}s" --max-retries "$RETRIES" \
    -o "$OUT/$name.jsonl" "$@" 2>"$OUT/$name.stderr"
  local code=$?
  set -e
  echo "== $name (exit $code)"
  grep '^imgcheck:' "$OUT/$name.stderr"
  grep -E 'Elapsed \(wall|Maximum resident' "$OUT/$name.stderr"
  echo "   server requests: before [$before] after [$(stats)]"
}

run_imgcheck imgcheck-full "$OUT/records.csv"
run_imgcheck imgcheck-answering "$OUT/answering.csv"
CONCURRENCY=1 PER_HOST=1 run_imgcheck naive-sample "$OUT/sample.csv"

run_lychee() { # name input
  local name=$1 input=$2
  local before; before=$(stats)
  set +e
  # Same global and per-host limits, timeout and retries as imgcheck, and no per-host pacing
  # (lychee waits 50ms between requests to one host by default; imgcheck does not pace).
  /usr/bin/time -v "$LYCHEE" --no-progress --max-concurrency "$CONCURRENCY" \
    --host-concurrency "$PER_HOST" --host-request-interval 0ms --timeout "$TIMEOUT" \
    --max-retries "$RETRIES" --retry-wait-time 1 \
    --format json --output "$OUT/$name.json" "$input" 2>"$OUT/$name.stderr"
  local code=$?
  set -e
  echo "== $name: $("$LYCHEE" --version) (exit $code)"
  grep -E 'Elapsed \(wall|Maximum resident' "$OUT/$name.stderr"
  python3 - "$OUT/$name.json" <<'PY' || true
import json, sys
d = json.load(open(sys.argv[1]))
keys = ("total", "unique", "cached", "successful", "errors", "timeouts", "duration")
print("  ", {k: d.get(k) for k in keys})
PY
  echo "   server requests: before [$before] after [$(stats)]"
}

if command -v "$LYCHEE" >/dev/null; then
  run_lychee lychee-full "$OUT/urls.txt"
  run_lychee lychee-answering "$OUT/answering.txt"
else
  echo "== lychee: not available"
fi
