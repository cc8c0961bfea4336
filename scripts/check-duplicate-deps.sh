#!/usr/bin/env bash
# Fails when a crate is built in two semver-incompatible versions (1.x beside 2.x, 0.3 beside 0.4) for this
# platform, in any workspace member's normal, build or dev dependencies, unless
# scripts/duplicate-deps-allowed.txt names it with the reason it cannot be avoided yet. An entry that is no
# longer needed fails too, so the list stays true.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ALLOWED="$ROOT/scripts/duplicate-deps-allowed.txt"
cd "$ROOT"

# "name major" per crate version built: major is x for x.y.z (x > 0), 0.y for 0.y.z, 0.0.z for 0.0.z.
majors=$(cargo tree --locked --workspace --edges normal,build,dev --prefix none --format '{p}' |
  awk '{ sub(/^v/, "", $2); split($2, v, /[.+-]/);
         key = (v[1] != "0") ? v[1] : (v[2] != "0") ? "0." v[2] : "0.0." v[3];
         print $1, key }' | sort -u)
duplicated=$(awk '{ n[$1]++; m[$1] = m[$1] " " $2 } END { for (c in n) if (n[c] > 1) print c ":" m[c] }' <<<"$majors" | sort)

allowed_names=""
while read -r name reason; do
  case "$name" in ''|'#'*) continue ;; esac
  if [ -z "$reason" ]; then
    echo "check-duplicate-deps: $ALLOWED: $name has no reason" >&2
    exit 1
  fi
  allowed_names="$allowed_names $name"
done <"$ALLOWED"

status=0
while IFS=: read -r name versions; do
  [ -n "$name" ] || continue
  if [[ " $allowed_names " != *" $name "* ]]; then
    echo "check-duplicate-deps: $name is built in several major versions:$versions" >&2
    echo "  see which dependency pulls each: cargo tree --workspace -e normal,build,dev -i $name@<version>" >&2
    echo "  align them, or add '$name <reason>' to scripts/duplicate-deps-allowed.txt" >&2
    status=1
  fi
done <<<"$duplicated"
for name in $allowed_names; do
  if ! grep -q "^$name:" <<<"$duplicated"; then
    echo "check-duplicate-deps: $name is allowed in scripts/duplicate-deps-allowed.txt but no longer duplicated: remove it" >&2
    status=1
  fi
done
if [ "$status" = 0 ]; then
  echo "check-duplicate-deps: no unexplained duplicate major versions ($(wc -l <<<"$majors") crate versions)"
fi
exit "$status"
