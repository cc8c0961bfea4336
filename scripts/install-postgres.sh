#!/usr/bin/env bash
# Installs Debian's PostgreSQL server for the tests when it is missing, and prints the directory that holds
# initdb, pg_ctl and postgres (the test kit's Postgres fixture reads it from CF_PG_BIN_DIR). Quick when
# present. Without root and without password-less sudo nothing can be installed: then it prints why and
# exits 3.
set -euo pipefail

bin_dir() {
  if [ -n "${CF_PG_BIN_DIR:-}" ] && [ -x "$CF_PG_BIN_DIR/initdb" ]; then
    echo "$CF_PG_BIN_DIR"
    return 0
  fi
  # Debian keeps the server binaries out of PATH, one directory per major version: take the newest.
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n | tail -n1)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
    echo "$dir"
    return 0
  fi
  return 1
}

if bin_dir; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-postgres: the PostgreSQL server is missing and this user is not root and has no password-less sudo (install Debian's postgresql package)" >&2
    exit 3
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }; then
  echo "install-postgres: apt-get could not install postgresql" >&2
  exit 3
fi
bin_dir || { echo "install-postgres: postgresql installed but no /usr/lib/postgresql/*/bin/initdb" >&2; exit 3; }
