#!/usr/bin/env bash
# The README's run command on a clean virtual environment: `pip install -e .` alone (no extras), then
# `python -m app`, which must serve / and /api/model. The test extra installs more than the app declares,
# so the suite alone would pass while a new user's first command fails on a missing import.
set -euo pipefail
cd "$(dirname "$0")/.."

fresh=$(mktemp -d)
log="$fresh/server.log"
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; fi
    rm -rf "$fresh"
}
trap cleanup EXIT

python3 -m venv "$fresh/venv"
"$fresh/venv/bin/pip" install -q -e .  # pip's cache keeps this quick after the first time
port=$("$fresh/venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
OMP_NUM_THREADS=1 "$fresh/venv/bin/python" -m app --port "$port" >"$log" 2>&1 &
server=$!

for _ in $(seq 120); do
    if ! kill -0 "$server" 2>/dev/null; then
        echo "check_run_command: 'python -m app' stopped before serving, after 'pip install -e .' alone:" >&2
        tail -20 "$log" >&2
        exit 1
    fi
    if "$fresh/venv/bin/python" - "$port" <<'PY' 2>/dev/null; then
import sys, urllib.request
for path in ("/", "/api/model"):
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}{path}", timeout=5) as r:
        assert r.status == 200, (path, r.status)
PY
        echo "check_run_command: 'pip install -e .' then 'python -m app' serves / and /api/model"
        exit 0
    fi
    sleep 1
done
echo "check_run_command: 'python -m app' did not answer / and /api/model with 200 within 120 s:" >&2
tail -20 "$log" >&2
exit 1
