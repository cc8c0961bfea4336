#!/usr/bin/env bash
# Runs the whole test suite from a clean clone: installs what the tests need, then cargo test.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export PB_BIN="$("$ROOT/scripts/install-pocketbase.sh")"
if [ -x "$ROOT/scripts/install-test-deps.sh" ]; then "$ROOT/scripts/install-test-deps.sh"; fi
mkdir -p "$ROOT/test-artifacts"
# Integration tests spawn PocketBase, coolify-sim and the bridge; two threads suit a 2-core machine.
cargo test --locked --no-fail-fast --all-targets -- --test-threads="${TEST_THREADS:-2}" "$@"
