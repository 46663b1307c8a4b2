#!/usr/bin/env bash
# DynamoDB store figures for docs/benchmarks.md: the round trip of one conditional PutItem
# through the SDK against moto, and the time from process start to the first request when the
# process has no AWS environment. Loopback only; bounded (a few hundred calls).
#
#   bash bench/dynamodb_roundtrip.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."

iterations="${1:-500}"
nice -n 10 cargo build --release --locked -p batchlock-dynamodb --example dynamodb_roundtrip >&2
bin="target/release/examples/dynamodb_roundtrip"

trap 'bash scripts/moto.sh stop; [ -n "${blackhole_pid:-}" ] && kill "$blackhole_pid" 2>/dev/null || true' EXIT
endpoint="$(bash scripts/moto.sh start)"

echo "## round trip ($iterations calls, after 20 warm-up calls)"
"$bin" roundtrip "$endpoint" "$iterations"

# A clean environment: no AWS_* variables, an empty HOME (no ~/.aws), only PATH.
empty_home="$(mktemp -d)"
clean() { env -i PATH="$PATH" HOME="$empty_home" "$@"; }
t0() { date +%s%N; }

echo "## start-up, AWS_EC2_METADATA_DISABLED=true, no credentials anywhere"
for i in 1 2 3; do
    clean AWS_EC2_METADATA_DISABLED=true BATCHLOCK_BENCH_T0_NS="$(t0)" "$bin" startup "$endpoint"
done

echo "## start-up, AWS_EC2_METADATA_DISABLED=true, static credentials from the config"
for i in 1 2 3; do
    clean AWS_EC2_METADATA_DISABLED=true BATCHLOCK_BENCH_T0_NS="$(t0)" "$bin" startup "$endpoint" --static-credentials
done

# Outside AWS the instance metadata address either refuses or swallows packets. Traffic may
# only go to loopback here, so the metadata endpoint is pointed at a local port that accepts
# connections and never answers: the worst case of a host where the metadata address hangs.
blackhole_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
python3 - "$blackhole_port" <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(128)
held = []
deadline = time.time() + 120
s.settimeout(1)
while time.time() < deadline:
    try:
        held.append(s.accept()[0])
    except OSError:
        pass
PY
blackhole_pid=$!
sleep 0.3
echo "## start-up, metadata NOT disabled, metadata endpoint hangs (simulated on 127.0.0.1), static credentials"
clean AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:$blackhole_port" \
    BATCHLOCK_BENCH_T0_NS="$(t0)" "$bin" startup "$endpoint" --static-credentials
echo "## start-up, metadata NOT disabled, metadata endpoint hangs (simulated on 127.0.0.1), no credentials"
clean AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:$blackhole_port" \
    BATCHLOCK_BENCH_T0_NS="$(t0)" "$bin" startup "$endpoint"
rm -rf "$empty_home"
