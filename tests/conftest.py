"""Hypothesis settings profiles, chosen by HYPOTHESIS_PROFILE (dev by default; CI sets ci)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# dev: a fuller search on a developer's machine; no deadline, since a loaded laptop makes
# per-example timings flaky and a slow example is not a bug here.
settings.register_profile("dev", max_examples=100, deadline=None)
# ci: a fixed, modest budget and a derandomized search, so a CI run is reproducible;
# print_blob lets a failure be replayed locally with @reproduce_failure.
settings.register_profile(
    "ci",
    max_examples=200,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
