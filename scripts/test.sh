#!/usr/bin/env bash
# The whole test suite, as README.md documents it. Starts what the tests need, runs every
# test of the workspace, and fails if any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --all-features --locked "$@"
