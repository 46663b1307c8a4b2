#!/usr/bin/env bash
# A local DynamoDB for the tests: moto's server, installed into a private virtual env.
#
#   bash scripts/moto.sh start   # installs moto if absent, starts it, prints the endpoint URL
#   bash scripts/moto.sh stop    # stops the server this script started
#   . scripts/moto.sh start      # the same, and also exports BATCHLOCK_TEST_DYNAMODB_ENDPOINT
#
# The server listens on 127.0.0.1 only, on MOTO_PORT or else a free port, and keeps its state in
# memory: every start is a clean DynamoDB. The venv lives under target/ so `cargo clean` removes
# it and git never sees it. Exits non-zero (and says why) if moto cannot be installed or started,
# so that a test run never silently goes on without its server.

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: start in a child shell, so that none of this script's shell options leak into
    # the caller's shell, and export the endpoint.
    if BATCHLOCK_TEST_DYNAMODB_ENDPOINT="$(bash "${BASH_SOURCE[0]}" start)"; then
        export BATCHLOCK_TEST_DYNAMODB_ENDPOINT
        echo "BATCHLOCK_TEST_DYNAMODB_ENDPOINT=$BATCHLOCK_TEST_DYNAMODB_ENDPOINT" >&2
        return 0
    fi
    return 1
fi

set -euo pipefail

moto_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
moto_dir="$moto_root/target/moto"
moto_venv="${MOTO_VENV:-$moto_root/target/moto-venv}"
# Pinned so that every developer and CI test against the same server behaviour.
moto_version="${MOTO_VERSION:-5.2.5}"

moto_log() { echo "moto.sh: $*" >&2; }

moto_install() {
    if [ -x "$moto_venv/bin/moto_server" ]; then
        return 0
    fi
    moto_log "installing moto[server]==$moto_version into $moto_venv (first run only)"
    python3 -m venv "$moto_venv"
    "$moto_venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version" >&2
}

moto_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

moto_start() {
    moto_install
    mkdir -p "$moto_dir"
    if [ -f "$moto_dir/pid" ] && kill -0 "$(cat "$moto_dir/pid")" 2>/dev/null; then
        moto_log "already running (pid $(cat "$moto_dir/pid"))"
        cat "$moto_dir/endpoint"
        return 0
    fi
    local port="${MOTO_PORT:-$(moto_free_port)}"
    local endpoint="http://127.0.0.1:$port"
    # moto_server.py is moto's own server with requests handled one at a time, so that a
    # conditional write is atomic as in DynamoDB (see the comment in that file).
    "$moto_venv/bin/python" "$moto_root/scripts/moto_server.py" 127.0.0.1 "$port" \
        >"$moto_dir/server.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$moto_dir/pid"
    echo "$endpoint" >"$moto_dir/endpoint"
    # Readiness: moto's own API answers once the server accepts requests. Bounded: 30 s.
    local i
    for i in $(seq 1 150); do
        if python3 - "$endpoint/moto-api/" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1).read()
PY
            moto_log "moto $moto_version ready at $endpoint (pid $pid, log $moto_dir/server.log)"
            echo "$endpoint"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            moto_log "moto_server exited during start-up; its log:"
            cat "$moto_dir/server.log" >&2
            rm -f "$moto_dir/pid" "$moto_dir/endpoint"
            return 1
        fi
        sleep 0.2
    done
    moto_log "moto_server did not answer at $endpoint/moto-api/ within 30 s"
    kill "$pid" 2>/dev/null || true
    rm -f "$moto_dir/pid" "$moto_dir/endpoint"
    return 1
}

moto_stop() {
    if [ -f "$moto_dir/pid" ]; then
        local pid
        pid="$(cat "$moto_dir/pid")"
        kill "$pid" 2>/dev/null || true
        rm -f "$moto_dir/pid" "$moto_dir/endpoint"
        moto_log "stopped (pid $pid)"
    fi
}

case "${1:-start}" in
    start) moto_start ;;
    stop) moto_stop ;;
    install) moto_install ;;
    *)
        echo "usage: $0 start|stop|install" >&2
        exit 2
        ;;
esac
