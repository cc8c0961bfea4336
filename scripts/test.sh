#!/usr/bin/env bash
# Runs the whole test suite from a clean clone: installs what the tests need, then cargo test.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export PB_BIN="$("$ROOT/scripts/install-pocketbase.sh")"
# The browser test needs Chromium. Without root or password-less sudo it cannot be installed: then every
# other test runs and the browser test is reported as NOT RUN, loudly, at the start and at the end. CI
# (CF_REQUIRE_BROWSER_TEST=1, set by .ci/run) fails instead of skipping it.
SKIP=()
NOT_RUN=""
if ! deps_out="$("$ROOT/scripts/install-test-deps.sh" 2>&1)"; then
  if [ "${CF_REQUIRE_BROWSER_TEST:-0}" = "1" ]; then
    echo "$deps_out" >&2
    echo "the browser test's dependencies could not be installed and CF_REQUIRE_BROWSER_TEST=1" >&2
    exit 1
  fi
  NOT_RUN="NOT RUN: ui_operator_page (the operator page in headless Chromium): ${deps_out##*install-test-deps: }"
  SKIP=(--skip ui_operator_page)
  printf '\n!!!!! %s\n!!!!! every other test runs; install chromium and chromium-driver (or run as root) to run it\n\n' "$NOT_RUN" >&2
fi
# The PostgreSQL tests (tests/it/postgres: the scale-out groundwork) need Debian's PostgreSQL server, under
# the same rule as the browser test: installed when missing; without root it is NOT RUN, loudly; CI
# (CF_REQUIRE_POSTGRES_TEST=1, set by .ci/run) fails instead of skipping.
PG_NOT_RUN=""
if pg_out="$("$ROOT/scripts/install-postgres.sh" 2>&1)"; then
  CF_PG_BIN_DIR="$(tail -n1 <<<"$pg_out")"
  export CF_PG_BIN_DIR
else
  if [ "${CF_REQUIRE_POSTGRES_TEST:-0}" = "1" ]; then
    echo "$pg_out" >&2
    echo "PostgreSQL could not be installed and CF_REQUIRE_POSTGRES_TEST=1" >&2
    exit 1
  fi
  PG_NOT_RUN="NOT RUN: postgres:: (src/pg against a real PostgreSQL): ${pg_out##*install-postgres: }"
  SKIP+=(--skip postgres::)
  printf '\n!!!!! %s\n!!!!! every other test runs; install postgresql (or run as root) to run them\n\n' "$PG_NOT_RUN" >&2
fi
mkdir -p "$ROOT/test-artifacts" "$ROOT/target"
LOG="$ROOT/target/test-output.log"
rm -f "$ROOT/target/reliability-table.md"
# No crate in two major versions without a written reason (scripts/duplicate-deps-allowed.txt); the tests
# run either way, the suite fails if this does.
deps_status=0
"$ROOT/scripts/check-duplicate-deps.sh" || deps_status=$?
# Integration tests spawn PocketBase, coolify-sim and the bridge; two threads suit a 2-core machine.
set +e
cargo test --locked --no-fail-fast --workspace --all-targets -- --test-threads="${TEST_THREADS:-2}" "${SKIP[@]}" "$@" 2>&1 | tee "$LOG"
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
[ -z "$PG_NOT_RUN" ] || echo "!!!!! $PG_NOT_RUN"
if [ -n "$NOT_RUN" ]; then
  echo "!!!!! $NOT_RUN"
  echo "$passed passed, $failed failed, 1 test module NOT RUN (ui_operator_page: see above)${PG_NOT_RUN:+, and the postgres:: tests}"
elif [ -n "$PG_NOT_RUN" ]; then
  echo "$passed passed, $failed failed, the postgres:: tests NOT RUN (see above)"
else
  echo "$passed passed, $failed failed"
fi
exit "$status"
