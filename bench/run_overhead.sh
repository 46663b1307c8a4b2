#!/usr/bin/env bash
# Wrapper overhead, supervisor memory and a 50-way start-up race on the SQLite default store.
# Writes its figures to stdout in Markdown; docs/benchmarks.md quotes a run of it.
#
#   bash bench/run_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time; }
cargo build --release --locked -q -p batchlock-cli
bin=$PWD/target/release/batchlock
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BATCHLOCK_STORE="sqlite:$work/locks.db"
export BATCHLOCK_LOG=warn

echo "## Machine"
echo
echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "- $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
echo "- load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "## Wrapper overhead (one hyperfine run, side by side)"
echo
"$bin" init >/dev/null
hyperfine -N --warmup 20 --runs 300 --export-markdown "$work/overhead.md" \
  -n 'true' 'true' \
  -n 'flock -n FILE true' "flock -n $work/flock.lock true" \
  -n 'batchlock run --key k -- true' "$bin run --key k -- true" >/dev/null
cat "$work/overhead.md"
echo
echo "## Supervisor peak RSS while the child sleeps 2 s"
echo
/usr/bin/time -v "$bin" run --key rss -- sleep 2 2> "$work/time.txt"
echo "- batchlock run -- sleep 2: max RSS $(awk -F': ' '/Maximum resident/{print $2}' "$work/time.txt") KiB"
/usr/bin/time -v sleep 2 2> "$work/time-sleep.txt"
echo "- bare sleep 2 for comparison: max RSS $(awk -F': ' '/Maximum resident/{print $2}' "$work/time-sleep.txt") KiB"
echo
echo "## 50 simultaneous runs on one key"
echo
echo "Each round starts 50 \`batchlock run --key race -- sleep 3\` at once. Exactly one may run;"
echo "the figure is the wall time until the other 49 have decided (skipped) and exited."
echo
for round in 1 2 3; do
  rm -f "$work/ran"
  start=$(date +%s%N)
  for i in $(seq 50); do
    "$bin" run --key race -- sh -c "echo x >> $work/ran; sleep 3" 2>/dev/null &
  done
  for i in $(seq 49); do wait -n; done
  end=$(date +%s%N)
  wait
  echo "- round $round: 49 skips decided in $(( (end - start) / 1000000 )) ms; runs that ran: $(wc -l < "$work/ran") (must be 1)"
done
