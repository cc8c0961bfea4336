#!/usr/bin/env bash
# Benchmarks cf-bridge on this machine: release build, then cf-bench (real PocketBase, coolify-sim, cf-bridge).
# Usage: ./scripts/bench.sh [--mode full|quick|tiny] [--work-dir DIR] [--json docs/bench/full.json]   (table on stdout, progress on stderr)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PB_BIN="$("$ROOT/scripts/install-pocketbase.sh")"
cargo build --locked --release --workspace --bins
exec "$ROOT/target/release/cf-bench" --pocketbase "$PB_BIN" "$@"
