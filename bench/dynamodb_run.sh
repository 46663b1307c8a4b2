#!/usr/bin/env bash
# `batchlock run` on the DynamoDB store, end to end, against moto on 127.0.0.1: wrapper overhead
# (hyperfine, `true` vs `batchlock run --key k -- true`), the round trip of one raw conditional
# PutItem on the same server (the unit the overhead is compared with), and the supervisor's
# peak RSS. All in one run, so the three figures share the machine's state. Prints Markdown;
# docs/benchmarks.md quotes a run of it.
#
#   bash bench/dynamodb_run.sh [RUNS]     # RUNS: hyperfine runs per command (default 100)
#
# Target: overhead <= 2 store round trips + 3 ms (acquire and release-and-record are one round
# trip each; 3 ms for process start, configuration and the child's spawn); RSS < 25 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-100}"
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time; }
nice -n 10 cargo build --release --locked -q -p batchlock-cli
nice -n 10 cargo build --release --locked -q -p batchlock-dynamodb --example dynamodb_roundtrip
bin="$PWD/target/release/batchlock"
roundtrip="$PWD/target/release/examples/dynamodb_roundtrip"

work="$(mktemp -d)"
trap 'bash scripts/moto.sh stop; rm -rf "$work"' EXIT
endpoint="$(bash scripts/moto.sh start)"

# What `batchlock` sees: the table, the local endpoint, dummy credentials, and no instance
# metadata (outside AWS it would otherwise wait for it; see docs/dynamodb.md).
export BATCH_LOCK_TABLE="batchlock-bench-run-$$"
export AWS_ENDPOINT_URL="$endpoint"
export AWS_REGION=ap-northeast-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_EC2_METADATA_DISABLED=true
export BATCHLOCK_LOG=warn
unset BATCHLOCK_STORE

echo "## Machine"
echo
echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "- $(nproc) cores ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
echo "- load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- server: moto $(target/moto-venv/bin/python -c 'import moto; print(moto.__version__)') at $endpoint (scripts/moto_server.py)"
echo
"$bin" init >"$work/init.txt"
echo "- table: \`$BATCH_LOCK_TABLE\` ($(tr -d '\n' <"$work/init.txt"))"
echo

echo "## Wrapper overhead ($runs runs each, after 10 warm-up runs)"
echo
hyperfine -N --warmup 10 --runs "$runs" --export-json "$work/overhead.json" \
    --export-markdown "$work/overhead.md" \
    -n 'true' 'true' \
    -n 'batchlock run --key k -- true' "$bin run --key k -- true" >/dev/null
cat "$work/overhead.md"
echo

echo "## Round trips on the same server, right after (raw conditional PutItem; the run's two store calls)"
echo
"$roundtrip" roundtrip "$endpoint" 300 | tee "$work/rt.txt"
echo

# CPU time does not depend on how busy the machine is, unlike wall time: it tells the client's
# own work apart from waiting for the server or for a CPU.
if command -v perf >/dev/null; then
    echo "## CPU time (perf stat, 30 runs each; the whole process tree, child included)"
    echo
    for cmd in "true" "$bin --version" "$bin run --key k -- true"; do
        cpu="$(perf stat -r 30 -x, -e task-clock $cmd 2>&1 >/dev/null | awk -F, '/task-clock/{printf "%.2f", $1}')"
        echo "- \`${cmd/#$bin/batchlock}\`: $cpu ms CPU"
    done
    echo
fi

echo "## Supervisor peak RSS while the child sleeps 2 s"
echo
/usr/bin/time -v "$bin" run --key rss -- sleep 2 2>"$work/time.txt"
rss_kib="$(awk -F': ' '/Maximum resident/{print $2}' "$work/time.txt")"
echo "- batchlock run --key rss -- sleep 2: max RSS $rss_kib KiB"
echo

echo "## Verdict"
echo
python3 - "$work/overhead.json" "$work/rt.txt" "$rss_kib" <<'PY'
import json, re, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
rt_text = open(sys.argv[2]).read()
rt_ms = float(re.search(r"PutItem round trip.*?median ([0-9.]+) ms", rt_text).group(1))
calls = re.search(r"try_acquire.*?median ([0-9.]+) ms.*?release_and_record.*?median ([0-9.]+) ms"
                  r".*?two plain calls.*?median ([0-9.]+) ms", rt_text)
acquire_ms, end_ms, two_calls_ms = (float(calls.group(i)) for i in (1, 2, 3))
rss_mib = int(sys.argv[3]) / 1024
bare = results["true"]
run = results["batchlock run --key k -- true"]
overhead_ms = (run["mean"] - bare["mean"]) * 1000
target_ms = 2 * rt_ms + 3
print(f"- overhead = mean(batchlock run) - mean(true) = {run['mean'] * 1000:.2f} ms - "
      f"{bare['mean'] * 1000:.2f} ms = **{overhead_ms:.2f} ms** "
      f"(median {(run['median'] - bare['median']) * 1000:.2f} ms)")
print(f"- in store round trips (median conditional PutItem {rt_ms:.2f} ms): "
      f"{overhead_ms / rt_ms:.1f} RT, or 2 RT + {overhead_ms - 2 * rt_ms:.2f} ms")
print(f"- target 2 RT + 3 ms = {target_ms:.2f} ms: "
      f"{'met' if overhead_ms <= target_ms else 'MISSED'}")
rest = overhead_ms - acquire_ms - end_ms
print(f"- the run's own store calls on this server: try_acquire {acquire_ms:.2f} ms + "
      f"release_and_record {end_ms:.2f} ms = {acquire_ms + end_ms:.2f} ms "
      f"({(acquire_ms + end_ms) / rt_ms:.1f} PutItem RT); the remaining {rest:.2f} ms is "
      f"everything else: process start, AWS config and TLS roots, spawning and reaping the "
      f"child, exit, and waiting for a CPU")
print(f"- the end of a run as one transaction: {end_ms:.2f} ms; as two plain calls: "
      f"{two_calls_ms:.2f} ms")
print(f"- peak RSS {rss_mib:.1f} MiB, target < 25 MiB: {'met' if rss_mib < 25 else 'MISSED'}")
PY
