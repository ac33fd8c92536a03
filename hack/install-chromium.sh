#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium for the browser test
# (services/agui-proxy/internal/app/browser_test.go). Idempotent: does nothing
# when chromium is already on PATH. Needs root (CI runs as root) and the
# Debian package archive; the browser is Debian's package, never a download
# of its own.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "chromium present: $(chromium --version 2>/dev/null || echo unknown version)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium installed in $(( $(date +%s) - start ))s: $(chromium --version 2>/dev/null || echo unknown version)"
