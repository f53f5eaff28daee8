#!/usr/bin/env bash
# The packaged service works as shipped: build the wheel from pyproject.toml, install it
# into a fresh virtual environment outside the checkout, start `vesper serve` from that
# environment on SQLite with a small consumer module (examples/ is not in the wheel),
# submit a job over HTTP and wait until it is done; then SIGTERM must exit 0.
#
#   scripts/check_wheel.sh            (PYTHON=python3.12 scripts/check_wheel.sh to pick one)
#
# Needs the package index (or pip's cache) for hatchling and vesper's dependencies.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vesper-wheel.XXXXXX")
SERVER_PID=""

cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "check_wheel: FAIL: $*" >&2
    if [[ -f "$WORK/serve.log" ]]; then
        echo "--- vesper serve log (last 40 lines)" >&2
        tail -n 40 "$WORK/serve.log" >&2
    fi
    exit 1
}

case "$WORK" in "$ROOT"/*) fail "the scratch directory $WORK is inside the checkout" ;; esac

echo "== build the wheel"
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$WORK/dist" "$ROOT"
WHEEL=$(ls "$WORK"/dist/vesper_hivemind-*.whl)  # the distribution vesper-hivemind
echo "$WHEEL"

echo "== install it into a fresh venv ($WORK/venv)"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$WHEEL"
VPY="$WORK/venv/bin/python"

mkdir -p "$WORK/app"
cd "$WORK/app"  # nothing of the checkout is importable from here
LOCATION=$("$VPY" -c 'import vesper; print(vesper.__file__)')
case "$LOCATION" in "$WORK/venv/"*) ;; *) fail "vesper imported from $LOCATION, not the venv" ;; esac
"$WORK/venv/bin/vesper" --version

cat > "$WORK/app/wheel_consumers.py" <<'PY'
"""The consumers of the wheel check: one job type that succeeds."""

import vesper

app = vesper.App()


@app.consumer("wheel_check")
def wheel_check(job: vesper.Job) -> None:
    assert job.payload == {"hello": "wheel"}
PY

PORT=$("$VPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"

echo "== vesper serve on SQLite at $URL"
env -i PATH="$WORK/venv/bin:/usr/bin:/bin" HOME="$WORK" \
    API_ADDR="127.0.0.1:$PORT" DB_PATH="$WORK/app/vesper.db" \
    VESPER_POLL_INTERVAL=200ms VESPER_LOG_FORMAT=json \
    "$WORK/venv/bin/vesper" serve --app wheel_consumers:app >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!

# submit, then wait for done: stdlib only, from the venv's interpreter
"$VPY" - "$URL" <<'PY' || fail "the job did not reach done"
import json
import sys
import time
import urllib.error
import urllib.request

url = sys.argv[1]


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read()


deadline = time.monotonic() + 60
while True:
    try:
        if call("GET", "/ready")[0] == 200:
            break
    except (urllib.error.URLError, ConnectionError):
        pass
    if time.monotonic() > deadline:
        sys.exit("vesper serve did not become ready in 60 s")
    time.sleep(0.2)

status, body = call("POST", "/jobs", {"type": "wheel_check", "payload": {"hello": "wheel"}})
assert status == 201, (status, body)
job_id = json.loads(body)["job_id"]
print(f"submitted {job_id}")
deadline = time.monotonic() + 30
while True:
    job = json.loads(call("GET", f"/jobs/{job_id}")[1])
    if job["status"] == "done":
        print(f"job {job_id} done")
        break
    if job["status"] in {"dlq", "failed", "cancelled"} or time.monotonic() > deadline:
        sys.exit(f"job {job_id} is {job['status']}: {job['error']!r}")
    time.sleep(0.2)
metrics = call("GET", "/metrics")[1].decode()
assert 'vesper_jobs_succeeded_total{' in metrics and 'type="wheel_check"' in metrics, metrics[:500]
print("metrics count it")
PY

echo "== SIGTERM: a graceful stop exits 0"
kill -TERM "$SERVER_PID"
if wait "$SERVER_PID"; then
    SERVER_PID=""
else
    code=$?
    SERVER_PID=""
    fail "vesper serve exited $code after SIGTERM"
fi
echo "check_wheel: OK"
