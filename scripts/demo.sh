#!/usr/bin/env bash
# The demo: a real PocketBase with the project's schema and hooks, coolify-sim and cf-bridge.
# A tenant and two instances are provisioned end to end. Ctrl-C stops everything.
# Realtime and resync carry the changes (the default); `scripts/demo.sh --webhook` adds signed webhooks.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PB_BIN="$("$ROOT/scripts/install-pocketbase.sh")"
cargo build --locked --workspace --bins
exec python3 "$ROOT/scripts/demo.py" "$PB_BIN" "$ROOT/target/debug" "$@"
