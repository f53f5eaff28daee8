#!/usr/bin/env bash
# The README's run command works on this checkout: `./dev serve` brings the service up
# on SQLite with the example consumers, a job submitted with the README's curl reaches
# done, and Ctrl+C (SIGINT) stops it with exit 0. CI runs it on its fresh clone.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vesper-serve.XXXXXX")
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PID=""

cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "check_readme_serve: FAIL: $*" >&2
    tail -n 40 "$WORK/serve.log" >&2 || true
    exit 1
}

# DB_PATH in a scratch directory, so the check leaves the checkout as it found it.
(cd "$ROOT" && DB_PATH="$WORK/Vesper_sqlite.db" API_ADDR="127.0.0.1:$PORT" exec ./dev serve) \
    >"$WORK/serve.log" 2>&1 &
PID=$!

for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
    kill -0 "$PID" 2>/dev/null || fail "./dev serve exited early"
    sleep 0.5
done
curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null || fail "not ready after 60 s"

JOB=$(curl -sf -X POST "http://127.0.0.1:$PORT/jobs" \
  -H "Content-Type: application/json" \
  -d '{
    "type": "resize_image",
    "priority": 3,
    "payload": {"image_url": "cat.png", "width": 640}
  }') || fail "POST /jobs"
ID=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["job_id"])' "$JOB")

STATUS=""
for _ in $(seq 1 60); do
    STATUS=$(curl -sf "http://127.0.0.1:$PORT/jobs/$ID" | python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])')
    [[ "$STATUS" == "done" ]] && break
    sleep 0.5
done
[[ "$STATUS" == "done" ]] || fail "job $ID is $STATUS, not done"

TOTAL=$(curl -sf "http://127.0.0.1:$PORT/workers" | python3 -c 'import json, sys; print(json.load(sys.stdin)["total_workers"])')
[[ "$TOTAL" == "5" ]] || fail "total_workers is $TOTAL"

kill -INT "$PID"
CODE=0
wait "$PID" || CODE=$?
PID=""
[[ "$CODE" == "0" ]] || fail "Ctrl+C exited $CODE"
echo "check_readme_serve: ok (job $ID done, total_workers $TOTAL, Ctrl+C exit 0)"
