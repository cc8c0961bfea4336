#!/usr/bin/env bash
# Soak test: the reliability suite (tests/process/reliability.rs) N times in a row (default 10) while busy
# loops keep every core loaded, as on a machine shared with other work. Stops at the first failing run
# and prints a summary; each run's output is kept in target/soak/. Not part of ./scripts/test.sh: it
# takes N times the suite's few minutes.
#
#   ./scripts/soak.sh                                      # 10 runs, 2 busy loops
#   SOAK_HOGS=4 ./scripts/soak.sh 20                       # 20 runs, 4 busy loops
#   RELIABILITY_SCENARIOS=realtime_cut ./scripts/soak.sh   # one scenario (see docs/RELIABILITY.md)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
RUNS="${1:-10}"
HOGS="${SOAK_HOGS:-2}"
case "$RUNS$HOGS" in *[!0-9]*) echo "usage: [SOAK_HOGS=n] $0 [runs]" >&2; exit 2 ;; esac
export PB_BIN="$("$ROOT/scripts/install-pocketbase.sh")"
OUT="$ROOT/target/soak"
mkdir -p "$OUT"
rm -f "$OUT"/run-*.log "$OUT/summary.txt"

# Build before the hogs start: the runs measure the suite, not the compiler.
cargo test --locked --test process --no-run

HOG_PIDS=()
stop_hogs() {
  for pid in "${HOG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${HOG_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  HOG_PIDS=()
}
trap stop_hogs EXIT
trap 'stop_hogs; exit 130' INT TERM
for _ in $(seq 1 "$HOGS"); do
  (while :; do :; done) >/dev/null 2>&1 &
  HOG_PIDS+=("$!")
done

summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
summary "soak: $RUNS runs of the reliability suite with $HOGS busy loops on $(nproc) cores (${RELIABILITY_SCENARIOS:-all scenarios})"
passed=0
for run in $(seq 1 "$RUNS"); do
  log="$OUT/run-$run.log"
  started=$(date +%s)
  if cargo test --locked --test process reliability::reliability_suite -- --exact --nocapture >"$log" 2>&1; then result=passed; else result=FAILED; fi
  summary "run $run/$RUNS: $result in $(( $(date +%s) - started )) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
  grep -E '^\| [0-9]' "$log" | sed 's/^/  /' | tee -a "$OUT/summary.txt" || true
  if [ "$result" = FAILED ]; then
    grep -A20 '^invariant violations:' "$log" | sed 's/^/  /' | tee -a "$OUT/summary.txt" || true
    break
  fi
  passed=$((passed + 1))
done
stop_hogs
summary "soak: $passed of $RUNS runs passed (logs in target/soak/)"
[ "$passed" -eq "$RUNS" ]
