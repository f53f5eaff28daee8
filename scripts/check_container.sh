#!/usr/bin/env bash
# The packaged service container, built and run for real with podman, without a registry:
#
#   1. a base image made locally (debootstrap: Debian bookworm, python3, python3-venv),
#      kept in podman's storage for the next run;
#   2. the wheels of vesper and its dependencies built on the host (its package index),
#      then the repository's Dockerfile built on that base with `--network none`, from
#      those wheels (`--build-arg BASE_IMAGE=... --build-arg WHEELS=wheels`);
#   3. the image: a non-root user, no compiler or build tool, HEALTHCHECK and STOPSIGNAL,
#      its size over the base;
#   4. one container on SQLite with a volume and a consumer module mounted into /app:
#      /health, a job submitted with curl is done, /metrics counts it, JSON logs,
#      `podman stop` exits 0 within the grace period, a second container on the same
#      volume sees the job;
#   5. `vesper migrate` from the image, then two containers with different hostnames on
#      the host's PostgreSQL (a scratch database): /workers shows both machines, 500 jobs
#      submitted to one are done by both, SIGKILL of one in mid-drain loses no job;
#   6. deploy/compose.yaml parsed and its services checked (its images cannot be pulled).
#
#   scripts/check_container.sh        (as root; CI=true on a fresh machine: .ci/run)
#
# Installs podman, runc and debootstrap with apt-get when missing. Every wait is bounded;
# any failed check exits non-zero. Containers, the volume, the scratch database, the
# image under test and the scratch directory are removed on exit; the base image stays.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
START=$(date +%s)
PYTHON=${PYTHON:-python3}
BASE_IMAGE=${VESPER_BASE_IMAGE:-localhost/vesper-base:bookworm}
RUN_ID="vesper-check-$$"
IMAGE="localhost/vesper:check-$$"
VOLUME="$RUN_ID-data"
SCRATCH_DB="vesper_container_$$"
PG=(-h 127.0.0.1 -p 5432 -U postgres)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vesper-container.XXXXXX")
CONTAINERS=()
DB_CREATED=""
IMAGE_BUILT=""

# crun refuses this machine's hybrid cgroups; ulimits at or under the host's hard limits.
# Without systemd podman cannot schedule the HEALTHCHECK's timer and says so on every
# start and stop: that line is dropped (`podman healthcheck run` below runs it by hand).
pm() {
    podman --runtime runc --cgroup-manager=cgroupfs "$@" \
        2> >(grep -v 'unable to get systemd connection' >&2)
}
ULIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

phase() { echo "== $* (+$(($(date +%s) - START)) s)"; }

cleanup() {
    local code=$?
    set +e
    for name in "${CONTAINERS[@]}"; do pm rm -f -t 0 "$name" >/dev/null 2>&1; done
    pm volume rm -f "$VOLUME" >/dev/null 2>&1
    [[ -n "$IMAGE_BUILT" ]] && pm rmi -f "$IMAGE" >/dev/null 2>&1
    if [[ -n "$DB_CREATED" ]]; then
        psql "${PG[@]}" -d postgres -qc "DROP DATABASE IF EXISTS $SCRATCH_DB WITH (FORCE)" >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    echo "check_container: $([[ $code == 0 ]] && echo ok || echo FAILED) in $(($(date +%s) - START)) s"
}
trap cleanup EXIT

fail() {
    echo "check_container: FAIL: $*" >&2
    for name in "${CONTAINERS[@]}"; do
        if pm container exists "$name" 2>/dev/null; then
            echo "--- podman logs $name (last 30 lines)" >&2
            pm logs --tail 30 "$name" >&2 2>&1 || true
        fi
    done
    exit 1
}

# wait_for SECONDS WHAT COMMAND...: retry COMMAND every 0.5 s until it succeeds
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$(($(date +%s) + seconds))
    until "$@" >/dev/null 2>&1; do
        (($(date +%s) < deadline)) || fail "$what: not within $seconds s"
        sleep 0.5
    done
}

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# json EXPRESSION: evaluate a Python expression over the JSON document on stdin (`d`)
json() { "$PYTHON" -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

get() { curl -sSf --max-time 10 "$1"; }

# the mirror apt uses for Debian (sources.list or deb822 .sources), else the default one
debian_mirror() {
    local mirror
    mirror=$(grep -hsE '^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]*/debian/?[[:space:]]' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
        sed -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/' | head -n 1)
    if [[ -z "$mirror" ]]; then
        mirror=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources |
            tr ' ' '\n' | grep -E '^https?://.*/debian/?$' | head -n 1)
    fi
    echo "${mirror:-http://deb.debian.org/debian}"
}

case "$WORK" in "$ROOT"/*) fail "the scratch directory $WORK is inside the checkout" ;; esac

phase "tools: podman, runc, debootstrap"
missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || [[ -x "/usr/sbin/$tool" ]] || missing+=("$tool")
done
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || fail "needs root to install ${missing[*]} (and to run podman as here)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
        >"$WORK/apt.log" 2>&1 || { tail -n 20 "$WORK/apt.log" >&2; fail "apt-get install ${missing[*]}"; }
    echo "installed ${missing[*]}"
fi
export PATH="$PATH:/usr/sbin:/sbin"
pm --version

phase "base image $BASE_IMAGE"
if pm image exists "$BASE_IMAGE"; then
    echo "kept from an earlier run"
else
    MIRROR=$(debian_mirror)
    echo "debootstrap bookworm from $MIRROR"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
    ln -s python3 "$WORK/rootfs/usr/bin/python"
    # the packages' archives and indexes: an image installs nothing with apt
    rm -rf "$WORK"/rootfs/var/cache/apt/*.bin "$WORK"/rootfs/var/cache/apt/archives/*.deb \
        "$WORK"/rootfs/var/lib/apt/lists/*
    tar -C "$WORK/rootfs" -c . | pm import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >"$WORK/import.log" 2>&1 ||
        { tail -n 20 "$WORK/import.log" >&2; fail "podman import"; }
    echo "made $BASE_IMAGE"
    rm -rf "$WORK/rootfs"
fi
BASE_PY=$(pm run --rm --network none "${ULIMITS[@]}" "$BASE_IMAGE" python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
HOST_PY=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ "$BASE_PY" == "$HOST_PY" ]] ||
    fail "the base image's python is $BASE_PY, $PYTHON is $HOST_PY: the wheels must match (set PYTHON=python$BASE_PY)"
# --base-only: the tools and the base image, nothing else (.ci/run makes them while the
# test suite runs: debootstrap is mostly download and unpacking)
[[ "${1:-}" == "--base-only" ]] && exit 0

phase "wheels on the host, then the image, offline (--network none)"
CTX="$WORK/context"
mkdir -p "$CTX"
tar -C "$ROOT" --exclude=__pycache__ -c Dockerfile .dockerignore pyproject.toml README.md src | tar -C "$CTX" -x
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check -w "$CTX/wheels" "$ROOT" >"$WORK/wheels.log" 2>&1 ||
    { tail -n 20 "$WORK/wheels.log" >&2; fail "pip wheel"; }
echo "$(find "$CTX/wheels" -name '*.whl' | wc -l) wheels"
IMAGE_BUILT=yes
# --format docker: the OCI format has no HEALTHCHECK
pm build --quiet --format docker --layers=false --network none "${ULIMITS[@]}" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg WHEELS=wheels \
    -t "$IMAGE" "$CTX" >"$WORK/build.log" 2>&1 ||
    { tail -n 30 "$WORK/build.log" >&2; fail "podman build"; }
echo "built $IMAGE"

phase "the image: user, tools, health check, stop signal, size"
USER_OF=$(pm image inspect --format '{{.Config.User}}' "$IMAGE")
[[ "$USER_OF" == "vesper" ]] || fail "the image's user is '$USER_OF', not vesper"
UID_IN=$(pm run --rm --network none "${ULIMITS[@]}" "$IMAGE" id -u)
[[ "$UID_IN" != "0" ]] || fail "the image runs as root"
echo "runs as uid $UID_IN"
# shellcheck disable=SC2016 # $t is the container's shell's
TOOLS=$(pm run --rm --network none "${ULIMITS[@]}" "$IMAGE" sh -c \
    'for t in gcc cc c++ g++ make ld as cpp; do command -v "$t"; done; true')
[[ -z "$TOOLS" ]] || fail "the image holds build tools: $TOOLS"
echo "no gcc, cc, c++, g++, make, ld, as, cpp"
HEALTH=$(pm image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")
[[ "$HEALTH" == *"/health"* ]] || fail "no HEALTHCHECK on /health in the image: $HEALTH"
SIGNAL=$(pm image inspect --format '{{.Config.StopSignal}}' "$IMAGE")
[[ "$SIGNAL" == "SIGTERM" ]] || fail "the stop signal is '$SIGNAL', not SIGTERM"
IMAGE_MB=$(($(pm image inspect --format '{{.Size}}' "$IMAGE") / 1000000))
BASE_MB=$(($(pm image inspect --format '{{.Size}}' "$BASE_IMAGE") / 1000000))
echo "image size: $IMAGE_MB MB, $((IMAGE_MB - BASE_MB)) MB over the base ($BASE_MB MB)"
((IMAGE_MB - BASE_MB < 200)) || fail "the image adds $((IMAGE_MB - BASE_MB)) MB to its base (target under 200 MB)"

# the user's consumer module, mounted into /app (the working directory, importable)
mkdir -p "$WORK/app"
cat >"$WORK/app/container_jobs.py" <<'PY'
"""The consumers of the container check: one job type that sleeps payload["seconds"]."""

import time

import vesper

app = vesper.App()


@app.consumer("container_check")
def container_check(job: vesper.Job) -> None:
    time.sleep(float(job.payload.get("seconds", 0)))
PY
chmod 0755 "$WORK/app"
chmod 0644 "$WORK/app/container_jobs.py"
APP_MOUNT=(-v "$WORK/app/container_jobs.py:/app/container_jobs.py:ro" -e VESPER_APP=container_jobs:app)

# start NAME PORT ARGS...: a detached container of the image on the host's network
start() {
    local name=$1 port=$2
    shift 2
    CONTAINERS+=("$name")
    pm run -d --name "$name" --network host "${ULIMITS[@]}" "${APP_MOUNT[@]}" \
        -e API_ADDR="127.0.0.1:$port" -e VESPER_POLL_INTERVAL=200ms "$@" "$IMAGE" >/dev/null
}

# stop_within NAME SECONDS: `podman stop` (SIGTERM) must end it with exit 0 in time
stop_within() {
    local name=$1 grace=$2 began code
    began=$(date +%s)
    pm stop -t "$grace" "$name" >/dev/null
    code=$(pm inspect --format '{{.State.ExitCode}}' "$name")
    [[ "$code" == "0" ]] || fail "$name exited $code after podman stop"
    (($(date +%s) - began < grace)) || fail "$name needed the whole grace period ($grace s): killed, not stopped"
    echo "podman stop: $name exited 0 in $(($(date +%s) - began)) s"
}

phase "one container on SQLite, a volume for the database"
PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
start "$RUN_ID-sqlite-1" "$PORT" -v "$VOLUME:/var/lib/vesper"
wait_for 60 "$RUN_ID-sqlite-1 /ready" get "$URL/ready"
get "$URL/health" >/dev/null || fail "/health"
pm healthcheck run "$RUN_ID-sqlite-1" >/dev/null || fail "the image's HEALTHCHECK fails on a running container"
echo "/health and the HEALTHCHECK answer"
JOB=$(curl -sSf --max-time 10 -X POST "$URL/jobs" -H "Content-Type: application/json" \
    -d '{"type": "container_check", "payload": {"seconds": 0}}') || fail "POST /jobs"
ID=$(json 'd["job_id"]' <<<"$JOB")
job_done() { [[ $(get "$1/jobs/$2" | json 'd["status"]') == "done" ]]; }
wait_for 30 "job $ID done" job_done "$URL" "$ID"
echo "job $ID done"
METRIC=$(get "$URL/metrics" | grep -E '^vesper_jobs_succeeded_total\{.*type="container_check"' || true)
[[ "$METRIC" =~ \ 1(\.0)?$ ]] || fail "/metrics does not count the job: '$METRIC'"
echo "$METRIC"
pm logs "$RUN_ID-sqlite-1" >"$WORK/sqlite-1.log" 2>&1
"$PYTHON" -c '
import json, sys
lines = [line for line in sys.stdin if line.strip()]
assert lines, "no log lines"
for line in lines:
    json.loads(line)
' <"$WORK/sqlite-1.log" || fail "the logs are not JSON lines"
echo "logs are JSON lines"
stop_within "$RUN_ID-sqlite-1" 40

PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
start "$RUN_ID-sqlite-2" "$PORT" -v "$VOLUME:/var/lib/vesper"
wait_for 60 "$RUN_ID-sqlite-2 /ready" get "$URL/ready"
job_done "$URL" "$ID" || fail "the next container on the volume does not see job $ID done"
echo "the next container on the volume sees job $ID done"
stop_within "$RUN_ID-sqlite-2" 40

phase "two containers on PostgreSQL ($SCRATCH_DB on 127.0.0.1:5432)"
pg_isready "${PG[@]}" -q || fail "PostgreSQL does not answer at 127.0.0.1:5432"
DB_CREATED=yes
psql "${PG[@]}" -d postgres -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $SCRATCH_DB" >/dev/null
# short leases, so that the jobs of a killed container are claimed again within seconds
PG_ENV=(-e APP_ENV=production -e DB_HOST=127.0.0.1 -e DB_PORT=5432 -e DB_USER=postgres
    -e DB_NAME="$SCRATCH_DB" -e VESPER_LEASE=3s -e VESPER_HEARTBEAT=1s
    -e VESPER_DEAD_AFTER=4s -e VESPER_RETRY_BASE=100ms -e VESPER_RETRY_CAP=1s)
MIGRATE=$(pm run --rm --network host "${ULIMITS[@]}" "${PG_ENV[@]}" "$IMAGE" vesper migrate 2>&1) ||
    fail "vesper migrate: $MIGRATE"
echo "$MIGRATE" | grep -E 'applied|up to date' || fail "vesper migrate said: $MIGRATE"
HOST_A="$RUN_ID-a"
HOST_B="$RUN_ID-b"
PORT_A=$(free_port)
PORT_B=$(free_port)
A="http://127.0.0.1:$PORT_A"
B="http://127.0.0.1:$PORT_B"
start "$HOST_A" "$PORT_A" --hostname "$HOST_A" -e WORKERS=3 "${PG_ENV[@]}"
start "$HOST_B" "$PORT_B" --hostname "$HOST_B" -e WORKERS=2 "${PG_ENV[@]}"
wait_for 60 "$HOST_A /ready" get "$A/ready"
wait_for 60 "$HOST_B /ready" get "$B/ready"
two_machines() { [[ $(get "$A/workers" | json 'len(d["machines"])') == 2 ]]; }
wait_for 30 "two machines in /workers" two_machines
FLEET=$(get "$A/workers" | json '" ".join(sorted(m["machine"] + "=" + str(m["workers"]) for m in d["machines"])) + " total=" + str(d["total_workers"])')
[[ "$FLEET" == "$HOST_A=3 $HOST_B=2 total=5" ]] || fail "/workers: $FLEET, expected $HOST_A=3 $HOST_B=2 total=5"
echo "/workers: 2 machines: $FLEET"

# 500 jobs of 0.1 s to A; 5 slots drain them in about 10 s
"$PYTHON" -c 'import json; print(json.dumps({"jobs": [{"type": "container_check", "payload": {"seconds": 0.1}}] * 500}))' >"$WORK/batch.json"
curl -sSf --max-time 30 -X POST "$A/jobs/batch" -H "Content-Type: application/json" \
    --data-binary "@$WORK/batch.json" | json 'len(d["jobs"])' | grep -qx 500 || fail "POST /jobs/batch of 500"
echo "500 jobs submitted to $HOST_A"
done_at_least() { (($(get "$A/stats" | json 'd["by_status"].get("done", 0)') >= $1)); }
# succeeded SERVICE_URL: the jobs this container finished (its own counter, every priority)
succeeded() {
    get "$1/metrics" | "$PYTHON" -c '
import sys
print(int(sum(float(line.rsplit(" ", 1)[1]) for line in sys.stdin
              if line.startswith("vesper_jobs_succeeded_total{") and "type=\"container_check\"" in line)))'
}
wait_for 60 "100 of the 500 jobs done" done_at_least 100
BY_B=$(succeeded "$B")
pm kill -s KILL "$HOST_B" >/dev/null
echo "killed $HOST_B (SIGKILL) at $(get "$A/stats" | json 'd["by_status"]'); it had done $BY_B or more"
wait_for 120 "all 500 jobs done after the kill" done_at_least 500
STATS=$(get "$A/stats")
[[ $(json 'd["total"], d["by_status"].get("done", 0)' <<<"$STATS") == "500 500" ]] ||
    fail "jobs lost or not done: $(json 'd["by_status"]' <<<"$STATS")"
BY_A=$(succeeded "$A")
# a job the killed container held is claimed again once its lease expires: attempts 2
AGAIN=$(get "$A/jobs?status=done&limit=1000" | json 'sum(j["attempts"] > 1 for j in d["jobs"])')
echo "500 of 500 done: $HOST_A did $BY_A, $HOST_B $BY_B or more; claimed again after the kill: $AGAIN"
((BY_A > 0 && BY_B > 0)) || fail "not done by both containers: $HOST_A $BY_A, $HOST_B $BY_B"
((AGAIN > 0)) || fail "no job of the killed container was claimed again: the kill hit no running job"
one_machine() { [[ $(get "$A/workers" | json 'len(d["machines"])') == 1 ]]; }
wait_for 30 "the killed container reaped from /workers" one_machine
echo "the killed container left /workers"
stop_within "$HOST_A" 40

phase "deploy/compose.yaml (parsed: its images cannot be pulled here)"
YAML_PY="$ROOT/.venv/bin/python"
[[ -x "$YAML_PY" ]] || YAML_PY=$PYTHON
"$YAML_PY" - "$ROOT" <<'PY' || fail "deploy/compose.yaml"
import pathlib
import sys

import yaml  # PyYAML: resolves the file's anchors and merge keys as compose does

root = pathlib.Path(sys.argv[1])
deploy = root / "deploy"
compose = yaml.safe_load((deploy / "compose.yaml").read_text())
services = compose["services"]
expected = {"postgres", "migrate", "vesper-1", "vesper-2", "prometheus", "grafana"}
assert set(services) == expected, sorted(services)
for name in ("migrate", "vesper-1", "vesper-2"):
    service = services[name]
    build = service["build"]
    assert (deploy / build["context"] / build["dockerfile"]).resolve() == root / "Dockerfile", build
    env = service["environment"]
    assert env["DB_HOST"] == "postgres" and env["APP_ENV"] == "production", env
    module, _, attribute = env["VESPER_APP"].partition(":")
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        assert (deploy / source).resolve().is_dir(), volume
    assert (root / (module.replace(".", "/") + ".py")).is_file(), env["VESPER_APP"]
assert services["migrate"]["command"] == ["vesper", "migrate"]
assert services["migrate"]["restart"] == "no"
for name in ("vesper-1", "vesper-2"):
    after = services[name]["depends_on"]["migrate"]["condition"]
    assert after == "service_completed_successfully", after
    grace = services[name]["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > 30, grace  # VESPER_SHUTDOWN_GRACE 30s
prometheus = yaml.safe_load((deploy / "prometheus.yml").read_text())
targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
assert targets == ["vesper-1:8080", "vesper-2:8080"], targets
for service in ("prometheus", "grafana"):
    for volume in services[service]["volumes"]:
        assert (deploy / volume.split(":")[0]).exists(), volume
print(f"services {', '.join(sorted(services))}: builds, environment, mounts, order ok")
PY

phase "all checks passed"
