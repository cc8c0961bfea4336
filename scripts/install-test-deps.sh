#!/usr/bin/env bash
# Installs what the browser test needs: Debian's chromium, chromium-driver and a font. Quick when present.
# Exits 0 when chromedriver and chromium are there afterwards; otherwise prints why and exits 3 (without
# root and without password-less sudo nothing can be installed).
set -euo pipefail
if command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-test-deps: chromium/chromedriver are missing and this user is not root and has no password-less sudo" >&2
    exit 3
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null; }; then
  echo "install-test-deps: apt-get could not install chromium chromium-driver fonts-dejavu-core" >&2
  exit 3
fi
command -v chromedriver >/dev/null || { echo "install-test-deps: chromedriver still not on PATH" >&2; exit 3; }
