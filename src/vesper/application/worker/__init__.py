"""The worker's core, without I/O: slots, attempts, leases, claims and shutdown."""

from __future__ import annotations

from vesper.application.worker.attempts import (
    Attempt,
    ClaimRequest,
    Phase,
    Renewal,
    Renewed,
    Tally,
)
from vesper.application.worker.core import LEASE_MARGIN, WorkerCore

__all__ = [
    "LEASE_MARGIN",
    "Attempt",
    "ClaimRequest",
    "Phase",
    "Renewal",
    "Renewed",
    "Tally",
    "WorkerCore",
]
