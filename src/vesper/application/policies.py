"""The policies the use cases apply: lease and heartbeat lengths, retries, backoff, limits."""

from __future__ import annotations

from datetime import timedelta

import attrs

from vesper.domain.backoff import Backoff
from vesper.domain.submission import Limits


@attrs.frozen(kw_only=True)
class Policies:
    lease: timedelta = timedelta(seconds=30)
    heartbeat: timedelta = timedelta(seconds=5)
    dead_after: timedelta = timedelta(seconds=30)
    default_max_retries: int = 3
    backoff: Backoff = Backoff()
    limits: Limits = Limits()
