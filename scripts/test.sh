#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (run as root) and runs all of them:
# lint, format check, types, unit tests, and the end-to-end tests in network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
packages=(chromium firefox-esr coturn nftables iproute2 libnss3-tools openssl curl procps tinyproxy janus nodejs python3-venv python3-dev gcc)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
MEET443_EXTRAS=".[test]" bash scripts/install.sh
# puppeteer-core drives Debian's firefox-esr over WebDriver BiDi (tests/browser/firefox): pinned by
# the lock file, and no browser download.
(cd tests/browser/firefox && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
# coturn, tinyproxy and janus start system services on install; the tests and the benchmark start
# their own, inside namespaces.
systemctl disable --now coturn tinyproxy janus >/dev/null 2>&1 || true
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
