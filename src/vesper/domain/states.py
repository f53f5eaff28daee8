"""Job statuses and the legal transitions between them.

```
pending ──claim──▶ processing ──ok──────────────▶ done
   ▲                   │ error, retries left ──▶ failed ──(run_at reached)──▶ claimable again
   │                   │ error, no retries left ─▶ dlq
   │                   │ lease expired ─────────▶ failed / dlq (counts as an attempt)
   │                   │ graceful release ──────▶ pending (attempt refunded)
   │                   │ snooze ────────────────▶ pending later (attempt refunded)
   └── retry (manual, from dlq/failed/cancelled)
pending/failed ──cancel──▶ cancelled
processing ──cancel──▶ processing with a cancel request ──(any end but done)──▶ cancelled
```
"""

from __future__ import annotations

import enum
from typing import Final


class Status(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    DLQ = "dlq"
    CANCELLED = "cancelled"


# Statuses from which a claim may take a job (once its run_at is reached).
CLAIMABLE: Final = frozenset({Status.PENDING, Status.FAILED})
# Statuses from which nothing moves without a person's action.
FINISHED: Final = frozenset({Status.DONE, Status.DLQ, Status.CANCELLED})
# The others: a job holds its unique key while it is in one of these.
ACTIVE: Final = frozenset(Status) - FINISHED

# action -> (statuses it starts from, statuses it may end in)
TRANSITIONS: Final[dict[str, tuple[frozenset[Status], frozenset[Status]]]] = {
    "claim": (CLAIMABLE, frozenset({Status.PROCESSING})),
    "complete": (frozenset({Status.PROCESSING}), frozenset({Status.DONE})),
    # cancelled: the job had a cancel request
    "fail": (
        frozenset({Status.PROCESSING}),
        frozenset({Status.FAILED, Status.DLQ, Status.CANCELLED}),
    ),
    "expire": (
        frozenset({Status.PROCESSING}),
        frozenset({Status.FAILED, Status.DLQ, Status.CANCELLED}),
    ),
    "release": (frozenset({Status.PROCESSING}), frozenset({Status.PENDING, Status.CANCELLED})),
    "renew": (frozenset({Status.PROCESSING}), frozenset({Status.PROCESSING, Status.CANCELLED})),
    "cancel": (CLAIMABLE, frozenset({Status.CANCELLED})),
    # a cancel of a running job: recorded, acted on by its worker
    "request_cancel": (frozenset({Status.PROCESSING}), frozenset({Status.PROCESSING})),
    "snooze": (frozenset({Status.PROCESSING}), frozenset({Status.PENDING, Status.CANCELLED})),
    "retry": (
        frozenset({Status.DLQ, Status.FAILED, Status.CANCELLED}),
        frozenset({Status.PENDING}),
    ),
}


def allowed(action: str, status: Status) -> bool:
    """Whether `action` may start from `status`."""
    return status in TRANSITIONS[action][0]
