#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (run as root) and runs all of them:
# lint, format check, types, unit tests, and the end-to-end tests in network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
packages=(chromium coturn nftables iproute2 libnss3-tools openssl curl procps tinyproxy janus nodejs python3-venv python3-dev gcc)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian ships npm apart from nodejs (NodeSource's nodejs has it inside).
if ! command -v npm >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
MEET443_EXTRAS=".[test]" bash scripts/install.sh
# Test-only JavaScript (axe-core for the accessibility audit), exactly as package-lock.json pins it.
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
# coturn, tinyproxy and janus start system services on install; the tests and the benchmark start
# their own, inside namespaces.
systemctl disable --now coturn tinyproxy janus >/dev/null 2>&1 || true
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
