"""The fault matrix of docs/reliability.md, run through the same harness as tests/faults.

    python -m benchmarks.fault_matrix --rows R1,R3a,R5 [--scale full|ci]
    python -m benchmarks.fault_matrix --rows R17 --minutes 30
    python -m benchmarks.fault_matrix --rows R12,R10,S1

One line per row: PASS/FAIL, seconds, and its figures (lost, re-runs, recovery seconds
by database time, p99 where the row records it). Starts its own disposable PostgreSQL
cluster (initdb + pg_ctl as the postgres user) and removes it at the end. Exit 1 when
a row fails.

R12 runs the Schemathesis CLI (`st run`, settings in schemathesis.toml) against a real
`vesper api` with a bearer token on that cluster. R10, R11 and S1-S6 live in
tests/integration (README "Rows that live in tests/integration"): their rows run those
pytest tests in a subprocess and report the counts; S4 has no test, since no rate limiter
exists (shedding is the 503 of a full pool, R14).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.faults.cluster import start_cluster
from tests.faults.lab import Lab, RowResult
from tests.faults.rows import crashes, lifecycle, order, outages, skew, soak, submissions

REPO = Path(__file__).resolve().parents[1]

# -- R12: Schemathesis against a real `vesper api` -------------------------------------

R12_TOKEN = "t"
R12_SEED = 20251128


def _st() -> list[str]:
    """The `st` script of this interpreter's environment (the venv's dev extra)."""
    beside = Path(sys.executable).with_name("st")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("st")
    if found is None:
        raise RuntimeError("schemathesis is not installed (pip install -e '.[dev]')")
    return [found]


def r12(lab: Lab) -> RowResult:
    """`st run` (all phases, default checks) against `vesper api` on PostgreSQL with a token."""
    started = time.monotonic()
    result = RowResult("R12")
    cluster = lab.need_cluster()
    database = lab.pg_database()
    env = lab.env(cluster.env(database), VESPER_API_TOKEN=R12_TOKEN)
    api = lab.service(env, ("api",))
    examples = 100 if lab.scale == "full" else 25
    junit = lab.root / "schemathesis-junit.xml"
    command = [
        *_st(),
        "--config-file",
        str(REPO / "schemathesis.toml"),
        "run",
        f"{api.url}/schema/openapi.json",
        "-H",
        f"Authorization: Bearer {R12_TOKEN}",
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(examples),
        "--seed",
        str(R12_SEED),
        "--request-timeout",
        "10",
        "--workers",
        "2",
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
        "--no-color",
    ]
    log = lab.root / "schemathesis.log"
    with log.open("wb") as out:
        try:
            code = subprocess.run(
                command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=900, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    wall = time.monotonic() - started
    output = log.read_text(errors="replace")
    tests, failures, errors = _junit_counts(junit)
    tracebacks = api.output().count("Traceback")
    cases = re.search(r"(\d+) generated", output)
    result.figures.update(
        examples=examples,
        exit=code,
        junit_tests=tests,
        cases=int(cases.group(1)) if cases else 0,
        failures=failures,
        errors=errors,
        server_tracebacks=tracebacks,
        wall_s=round(wall, 1),
    )
    result.expect(code == 0, f"st exited {code} (log: {log.name}): {_tail(output)}")
    result.expect(failures == 0 and errors == 0, f"{failures} failures, {errors} errors")
    result.expect(tests > 0, "the junit report names no operation")
    result.expect(tracebacks == 0, f"{tracebacks} tracebacks in the API log")
    result.expect(wall < 600, f"{wall:.0f}s, over 10 minutes")
    result.seconds = wall
    if result.failures:  # keep the evidence: the lab's directory is removed after the row
        kept = Path(tempfile.mkdtemp(prefix="vesper-R12-evidence-"))
        for path in (log, junit, api.log_path):
            if path.exists():
                shutil.copy(path, kept)
        result.failures.append(f"evidence in {kept}")
    return result


def _junit_counts(path: Path) -> tuple[int, int, int]:
    """(test cases, failed, errored) of a JUnit report; zeros when it is missing."""
    if not path.exists():
        return 0, 0, 0
    cases = list(ET.parse(path).getroot().iter("testcase"))
    failed = sum(1 for case in cases if case.find("failure") is not None)
    errored = sum(1 for case in cases if case.find("error") is not None)
    return len(cases), failed, errored


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


# -- R10, R11, S1-S6: the tests in tests/integration -----------------------------------

_BAD_INPUT = "tests/integration/test_http_bad_input.py"
_SIZES = [
    f"{_BAD_INPUT}::{name}"
    for name in (
        "test_payload_just_under_the_body_limit_is_accepted",
        "test_body_one_byte_over_the_limit_is_413",
        "test_large_body_with_content_length_is_refused_at_once",
        "test_large_chunked_body_is_413",
        "test_nesting_100000_levels_is_400",
        "test_batch_of_100000_tiny_items_is_refused",
    )
] + ["tests/integration/test_http_api.py::test_batch_above_the_limit_is_422"]
PYTEST_ROWS: dict[str, list[str]] = {
    "R10": _SIZES,
    "R11": [
        f"{_BAD_INPUT}::{name}"
        for name in (
            "test_post_jobs_refuses_bad_body_naming_the_field",
            "test_post_batch_refuses_bad_body_and_bad_item",
            "test_duplicate_keys_in_a_large_body_are_refused",
            "test_batch_shape_errors_are_400",
            "test_bodies_sent_to_cancel_and_retry_do_no_harm",
        )
    ],
    "S1": ["tests/integration/test_http_auth.py"],
    "S2": [
        f"tests/integration/test_http_errors.py::{name}"
        for name in (
            "test_store_failures_are_503_with_retry_after",
            "test_store_errors_do_not_log_driver_messages",
            "test_unexpected_errors_are_a_generic_500_logged_with_traceback",
            "test_debug_is_off",
        )
    ],
    "S3": [f"{_BAD_INPUT}::test_injection_in_filters_is_400_or_empty"],
    "S5": _SIZES,  # docs/reliability.md: S5 is R10
    "S6": [f"{_BAD_INPUT}::test_idempotency_key_hygiene"],
}
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")
NOT_APPLICABLE = {
    "S4": "S4    N/A   no rate limiter exists; load shedding is the 503 with Retry-After "
    "of a full pool (R14), README 'Rows that live in tests/integration'",
}


def pytest_row(name: str, node_ids: Sequence[str]) -> Callable[[Lab], RowResult]:
    """A row that runs existing pytest tests in a subprocess and reports their counts."""

    def run(lab: Lab) -> RowResult:
        started = time.monotonic()
        result = RowResult(name)
        command = [sys.executable, "-m", "pytest", *node_ids, "-q", "-p", "no:cacheprovider"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            done = subprocess.run(
                command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False
            )
            code, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            code, output = -1, str(exc.stdout or "")
        summary = _pytest_summary(output)
        counts = {
            kind.rstrip("s") if kind.startswith("error") else kind: int(n)
            for n, kind in _COUNT.findall(summary)
        }
        result.figures.update(
            node_ids=len(node_ids),
            passed=counts.get("passed", 0),
            failed=counts.get("failed", 0),
            errors=counts.get("error", 0),
            skipped=counts.get("skipped", 0),
        )
        result.expect(code == 0, f"pytest exited {code}: {summary or _tail(output)}")
        result.expect(counts.get("passed", 0) > 0, "no test passed")
        result.expect(counts.get("skipped", 0) == 0, "tests were skipped (PostgreSQL down?)")
        result.seconds = time.monotonic() - started
        return result

    return run


def _pytest_summary(output: str) -> str:
    """pytest's closing line ("3 passed, 1 skipped in 2.0s"), without its decoration."""
    for line in reversed(output.strip().splitlines()):
        if _COUNT.search(line) and " in " in line:
            return line.strip("= ")
    return ""


def _not_applicable(name: str) -> Callable[[Lab], RowResult]:
    return lambda lab: RowResult(name)


ROWS: dict[str, Callable[..., RowResult]] = {
    "R1": submissions.r1,
    "R2": submissions.r2,
    "R3a": crashes.r3a,
    **{
        f"R3a-{phase}": functools.partial(crashes.r3a, phase=phase)
        for phase in crashes.PHASES
        if phase != "mid-sleep"
    },
    "R3b": lambda lab: crashes.r3b(lab, variant="stop"),
    "R3b-proxy": lambda lab: crashes.r3b(lab, variant="proxy"),
    "R4-A": lambda lab: lifecycle.r4(lab, variant="A"),
    "R4-B": lambda lab: lifecycle.r4(lab, variant="B"),
    "R4-C": lambda lab: lifecycle.r4(lab, variant="C"),
    "R5": outages.r5,
    "R6": outages.r6,
    "R6-pw": outages.r6_password,
    "R7": submissions.r7,
    "R8": skew.r8,
    "R8-postmaster": lambda lab: skew.r8(lab, variant="postmaster"),
    "R9": lifecycle.r9,
    "R9-P2": lifecycle.r9_p2,
    "R10": pytest_row("R10", PYTEST_ROWS["R10"]),
    "R11": pytest_row("R11", PYTEST_ROWS["R11"]),
    "R12": r12,
    "R13": outages.r13,
    "R14": outages.r14,
    "R15": lifecycle.r15,
    "R16": lifecycle.r16,
    "R16-fleet": order.r16_fleet,
    **{
        name: _not_applicable(name)
        if name in NOT_APPLICABLE
        else pytest_row(name, PYTEST_ROWS[name])
        for name in ("S1", "S2", "S3", "S4", "S5", "S6")
    },
}
# rows that need no PostgreSQL cluster of their own
NO_CLUSTER = {*PYTEST_ROWS, *NOT_APPLICABLE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", default=",".join(ROWS), help="comma-separated rows (R3b includes R3b-proxy)"
    )
    parser.add_argument("--scale", choices=["ci", "full"], default="full")
    parser.add_argument("--minutes", type=float, default=30.0, help="R17 soak duration")
    args = parser.parse_args(argv)
    wanted: list[str] = []
    for name in (n.strip() for n in args.rows.split(",") if n.strip()):
        expanded = [k for k in ROWS if k == name or k.startswith(f"{name}-")]
        if name == "R17":
            expanded = ["R17"]
        if not expanded:
            parser.error(f"unknown row {name!r}; known: {', '.join([*ROWS, 'R17'])}")
        wanted += [row for row in expanded if row not in wanted]
    # SIGTERM unwinds like Ctrl+C: the rows' processes and the cluster are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = None if set(wanted) <= NO_CLUSTER else start_cluster()
    failed = False
    try:
        for name in wanted:
            with tempfile.TemporaryDirectory(prefix=f"vesper-{name}-") as tmp:
                lab = Lab(Path(tmp), cluster, scale=args.scale)
                try:
                    if cluster is not None and name not in NO_CLUSTER and not cluster.running():
                        cluster.start()
                    if name == "R17":
                        result = soak.r17(lab, minutes=args.minutes)
                    else:
                        result = ROWS[name](lab)
                except Exception as exc:  # one row's crash must not hide the others
                    result = RowResult(name, failures=[f"crashed: {type(exc).__name__}: {exc}"])
                finally:
                    lab.close()
            failed |= bool(result.failures)
            print(NOT_APPLICABLE.get(name) or result.line(), flush=True)
    finally:
        if cluster is not None:
            cluster.destroy()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
