#!/usr/bin/env bash
# Installs meet443 into ./.venv on a fresh Debian machine (run as root). Pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-venv python3-dev gcc >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e "${MEET443_EXTRAS:-.}"
echo "meet443 installed: $(.venv/bin/meet443 --version)"
