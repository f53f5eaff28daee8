"""The bench's absolute targets (W5, W5x2 / W5, W6), the W6 seeding SQL and W6s's per-minute
figures: no database needed."""

from __future__ import annotations

import hashlib

import pytest

from benchmarks.lifecycle import _per_minute
from benchmarks.report import ratios, targets
from benchmarks.scale import MAX_RETRIES, seed_sql
from vesper.domain.submission import JobRequest, fingerprint


def _cell(median: float) -> dict[str, float]:
    return {"median": median, "min": median, "max": median, "n": 1}


def test_w5_targets_are_absolute() -> None:
    summary = {
        "W5": {"vesper": {"jobs_per_s": _cell(2500), "p99_ms": _cell(120), "errors": _cell(0)}}
    }
    rows = {row["label"]: row for row in targets(summary) if row["system"] == "vesper"}
    assert rows["W5 submissions/s"]["met"] is True
    assert rows["W5 latency p99 (ms)"]["met"] is False
    assert rows["W5 errors"]["met"] is True


def test_w6_claim_target_is_the_ratio_of_large_to_small() -> None:
    summary = {
        "W6": {
            "vesper": {
                "claim1_p50_ms_small": _cell(1.0),
                "claim1_p50_ms_large": _cell(1.3),
                "rss_max_mb": _cell(90),
            }
        }
    }
    rows = {row["metric"]: row for row in targets(summary)}
    ratio = rows["claim1_p50_ms_large/claim1_p50_ms_small"]
    assert abs(ratio["value"] - 1.3) < 1e-9
    assert ratio["met"] is False
    assert rows["rss_max_mb"]["met"] is True
    # no figures, no row
    assert "claim1_p99_ms_large/claim1_p99_ms_small" not in rows


def test_seeded_fingerprint_text_is_the_domains() -> None:
    """The canonical text the SQL hashes is the one `fingerprint()` hashes."""
    sql = seed_sql("done", 7, 1)
    n = 7
    request = JobRequest(type="bench", payload={"n": n})
    expected = fingerprint(request, max_retries=MAX_RETRIES)
    start = sql.index("convert_to(") + len("convert_to(")
    expression = sql[start : sql.index(", 'UTF8')")]
    # evaluate the SQL string concatenation for g = n
    parts = [p.strip() for p in expression.split("||")]
    text = "".join(str(n) if p == "g" else p.strip("'") for p in parts)
    assert hashlib.sha256(text.encode()).hexdigest() == expected


def test_w6s_compares_the_last_minute_with_the_second() -> None:
    """The first minute fills the table up to its retention: growth is last / 2nd."""
    samples = [
        {"t": t, "rows": 100.0 * min(t, 60), "size_mb": 1.0 + t / 60, "dead": 0.0}
        for t in range(10, 181, 10)
    ]
    latencies = [(t + 0.5, 2.0 if t < 120 else 3.0) for t in range(180)]
    out = _per_minute(samples, latencies, 3)
    assert out["rows_growth"] == 1.0  # full at minute 1's end, flat after
    assert abs(out["size_mb_growth"] - 4.0 / 3.0) < 1e-9
    assert out["p99_ms_growth"] == 1.5
    assert out["jobs_per_s_m2"] == 1.0
    with pytest.raises(RuntimeError, match="fewer than two minutes"):
        _per_minute(samples[:5], latencies[:50], 1)


def test_w5_process_scaling_target_is_the_ratio_of_two_workloads() -> None:
    """W5x2 / W5: the same metric's medians in two workloads."""
    summary = {
        "W5": {"vesper": {"jobs_per_s": _cell(2000)}},
        "W5x2": {"vesper": {"jobs_per_s": _cell(3000)}},
    }
    rows = {row["workload"]: row for row in targets(summary)}
    scaling = rows["W5x2/W5"]
    assert abs(scaling["value"] - 1.5) < 1e-9
    assert scaling["met"] is False
    summary["W5x2"]["vesper"]["jobs_per_s"] = _cell(3400)
    assert {row["workload"]: row for row in targets(summary)}["W5x2/W5"]["met"] is True
    # one of the two missing, no row
    del summary["W5"]
    assert "W5x2/W5" not in {row["workload"] for row in targets(summary)}


def test_ratios_compare_the_best_row_of_each_side() -> None:
    """vesper's best row (its defaults or its short-job slots) against the best peer
    row (any documented configuration); for a latency, the lowest of each."""
    summary = {
        "W3": {
            "vesper": {"jobs_per_s": _cell(5000)},
            "vesper-slots50": {"jobs_per_s": _cell(9000)},
            "pgqueuer": {"jobs_per_s": _cell(6000)},
            "pgqueuer-batch25": {"jobs_per_s": _cell(10000)},
        },
        "W4": {
            "vesper": {"p99_ms": _cell(1.5)},
            "vesper-slots50": {"p99_ms": _cell(1.8)},
            "pgqueuer": {"p99_ms": _cell(2.5)},
        },
    }
    rows = ratios(summary)
    drain = rows["W3"]
    assert (drain["vesper_row"], drain["best_peer"]) == ("vesper-slots50", "pgqueuer-batch25")
    assert abs(drain["ratio"] - 0.9) < 1e-9
    pickup = rows["W4.p99"]
    assert (pickup["vesper_row"], pickup["best_peer"]) == ("vesper", "pgqueuer")
    assert abs(pickup["ratio"] - 0.6) < 1e-9
