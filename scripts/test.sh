#!/usr/bin/env bash
# The whole test suite, as README.md documents it. Starts what the tests need, runs every
# test of the workspace, and fails if any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# The DynamoDB store's tests need a DynamoDB: moto, on a free port of 127.0.0.1. Stopped on
# every exit path; if it cannot start, this script fails rather than run the tests without it.
trap 'bash scripts/moto.sh stop' EXIT
BATCHLOCK_TEST_DYNAMODB_ENDPOINT="$(bash scripts/moto.sh start)"
export BATCHLOCK_TEST_DYNAMODB_ENDPOINT

# The incident replay (crates/batchlock-deploy-tests) drives the built binary; a test cannot
# build it itself without waiting on this cargo's own lock.
cargo build -p batchlock-cli --locked
cargo test --workspace --all-features --locked "$@"
