#!/usr/bin/env bash
# Runs the whole test suite from a clean clone: installs what the tests need, then cargo test.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export PB_BIN="$("$ROOT/scripts/install-pocketbase.sh")"
if [ -x "$ROOT/scripts/install-test-deps.sh" ]; then "$ROOT/scripts/install-test-deps.sh"; fi
mkdir -p "$ROOT/test-artifacts" "$ROOT/target"
LOG="$ROOT/target/test-output.log"
rm -f "$ROOT/target/reliability-table.md"
# No crate in two major versions without a written reason (scripts/duplicate-deps-allowed.txt); the tests
# run either way, the suite fails if this does.
deps_status=0
"$ROOT/scripts/check-duplicate-deps.sh" || deps_status=$?
# Integration tests spawn PocketBase, coolify-sim and the bridge; two threads suit a 2-core machine.
set +e
cargo test --locked --no-fail-fast --workspace --all-targets -- --test-threads="${TEST_THREADS:-2}" "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
if [ -f "$ROOT/target/reliability-table.md" ]; then
  echo
  echo "Reliability suite (see docs/RELIABILITY.md):"
  cat "$ROOT/target/reliability-table.md"
fi
if [ "$deps_status" != 0 ]; then
  echo "check-duplicate-deps.sh failed (see its lines at the start)"
  [ "$status" != 0 ] || status=$deps_status
fi
passed=$(grep -E '^test result:' "$LOG" | awk '{p += $4} END {print p + 0}')
failed=$(grep -E '^test result:' "$LOG" | awk '{f += $6} END {print f + 0}')
echo
echo "$passed passed, $failed failed"
exit "$status"
