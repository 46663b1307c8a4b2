#!/usr/bin/env bash
# Builds batchlock and runs the main job on the embedded default store (SQLite): two
# overlapping runs of one key. The first runs; the second is skipped and says who holds it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p batchlock-cli
bin=target/release/batchlock
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A private database for the demo, so it leaves nothing behind; without --store, batchlock
# uses ~/.local/state/batchlock/locks.db.
export BATCHLOCK_STORE="sqlite:$work/locks.db"

echo "== first run holds missing_images_check for 3 seconds"
"$bin" run --key missing_images_check --timeout 1m -- \
  sh -c 'echo "  [job] started with fencing token $BATCHLOCK_FENCING_TOKEN"; sleep 3; echo "  [job] done"' &
first=$!
sleep 1
echo "== status while it runs"
"$bin" status
echo "== a second run of the same key is skipped"
"$bin" run --key missing_images_check -- sh -c 'echo "  [job] THIS MUST NOT PRINT"'
echo "  second run exit code: $?"
wait "$first"
echo "  first run exit code: $?"
echo "== a run that hangs is killed at its timeout (exit 124)"
"$bin" run --key xml_articles --timeout 2s --kill-grace 1s -- sleep 600 || echo "  exit code: $?"
echo "== history"
"$bin" history
