#!/usr/bin/env bash
# Proves the README's first command on a fresh clone, before any test extra is installed: it must
# install and start `meet443 serve`, and that server must answer HTTPS, a meeting page, STUN, a WSS
# join to a group room with TURN credentials, and a TURN Allocate with them. Then the package must
# build as a wheel that, installed (not editable) into another clean venv, serves the web client.
# Any failure names its step. Port and data dir go through the MEET443_* variables the config reads.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/meet443-first-run.XXXXXX")
port=${FIRST_RUN_PORT:-18443}
pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  pids=()
}
trap 'stop; rm -rf "$work"' EXIT
fail() {
  echo "FIRST RUN FAILED at step: $1" >&2
  for log in "$work"/*.log; do echo "--- last lines of $log" >&2; tail -n 30 "$log" >&2; done
  exit 1
}
wait_healthy() {  # pid port: until /healthz over plain HTTP answers, or the process dies
  for _ in $(seq 600); do
    kill -0 "$1" 2>/dev/null || return 1
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://127.0.0.1:$2/healthz" 2>/dev/null && return 0
    sleep 0.5
  done
  return 1
}

# The command exactly as the README writes it: the first sh block of "Quick start".
command=$(awk '/^## Quick start/ {q=1} q && /^```sh$/ {b=1; next} b && /^```$/ {exit} b {print}' "$repo/README.md")
[ -n "$command" ] || fail "read the first command from README.md"
echo "README's first command: $command"

git clone -q "$repo" "$work/clone" || fail "git clone"
cd "$work/clone"
export MEET443_PORT=$port MEET443_DATA_DIR="$work/data"
setsid bash -c "$command" >"$work/first-command.log" 2>&1 &
pids+=($!)
wait_healthy "${pids[0]}" "$port" || fail "install and start (README's first command)"
.venv/bin/python .ci/first_run.py imports || fail "import every module in the plain install"
.venv/bin/python .ci/first_run.py serve --port "$port" --data-dir "$work/data" --meet443 .venv/bin/meet443 ||
  fail "check the running server"
stop

.venv/bin/python -m pip wheel -q --no-deps -w "$work/wheel" . >"$work/wheel.log" 2>&1 || fail "pip wheel ."
listing=$(python3 -m zipfile -l "$work"/wheel/meet443-*.whl)
grep -q "meet443/py.typed" <<<"$listing" || fail "wheel carries py.typed"
grep -q "meet443/web/static/js/room.js" <<<"$listing" || fail "wheel carries the web client"
python3 -m venv "$work/wheel-venv"
"$work/wheel-venv/bin/python" -m pip install -q -c constraints.txt "$work"/wheel/meet443-*.whl \
  >>"$work/wheel.log" 2>&1 || fail "install the wheel into a clean venv"
cd "$work"
MEET443_PORT=$((port + 1)) MEET443_DATA_DIR="$work/wheel-data" setsid "$work/wheel-venv/bin/meet443" serve \
  >"$work/wheel-serve.log" 2>&1 &
pids+=($!)
wait_healthy "${pids[0]}" $((port + 1)) || fail "start the server installed from the wheel"
"$work/wheel-venv/bin/python" "$work/clone/.ci/first_run.py" web --port $((port + 1)) ||
  fail "the wheel's server serves the web app"
stop
echo "first run: ok"
