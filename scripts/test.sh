#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (run as root) and runs all of them:
# lint, format check, types, unit tests, and the end-to-end tests in network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
packages=(chromium firefox-esr coturn redis-server nftables iproute2 libnss3-tools openssl curl procps tinyproxy janus postgresql nodejs python3-venv python3-dev gcc)
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
# Test-only JavaScript, exactly as the lock files pin it: axe-core for the accessibility audit, and
# puppeteer-core, which drives Debian's firefox-esr over WebDriver BiDi (no browser download).
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
(cd tests/browser/firefox && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
# coturn, tinyproxy, janus, redis-server and postgresql start system services on install; the tests and the benchmarks start
# their own, inside namespaces.
systemctl disable --now coturn tinyproxy janus redis-server postgresql >/dev/null 2>&1 || true
.venv/bin/ruff check src tests bench .ci
.venv/bin/ruff format --check src tests bench .ci
.venv/bin/mypy  # src strictly; tests, bench and .ci with the relaxed settings of pyproject.toml
if [ $# -gt 0 ]; then
  # A chosen subset (paths, -k, -m): one run, no coverage gate.
  exec .venv/bin/python -m pytest "$@"
fi
# Unit and in-process tests, with branch coverage. The end-to-end tier (namespaces, browsers, the
# servers they start) runs untraced: tracing slows the timing-sensitive tests.
.venv/bin/python -m pytest -m "not netns" --cov --cov-report=
.venv/bin/coverage report --skip-covered --include='src/meet443/proto/*,src/meet443/sfu/*'
for core in proto sfu; do
  .venv/bin/coverage report --include="src/meet443/$core/*" --fail-under=95 >/dev/null ||
    { echo "branch coverage of src/meet443/$core/ is below 95%" >&2; exit 1; }
done
.venv/bin/python -m pytest -m netns
