"""vesper: a distributed job queue on PostgreSQL, SQLite or memory.

```python
import vesper

app = vesper.App()

@app.consumer("resize_image")
def resize(job: vesper.Job) -> None: ...

app.run()
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "App",
    "Backoff",
    "Job",
    "JobRequest",
    "NonRetryable",
    "RetryAfter",
    "Snooze",
    "__version__",
]

if TYPE_CHECKING:
    from vesper.application.consumers import Job
    from vesper.domain.backoff import Backoff
    from vesper.domain.errors import NonRetryable
    from vesper.domain.retry import RetryAfter, Snooze
    from vesper.domain.submission import JobRequest
    from vesper.entrypoints.app import App


def __getattr__(name: str) -> Any:
    # Lazy, so that importing vesper.domain does not load the HTTP and storage stacks.
    if name == "App":
        from vesper.entrypoints.app import App  # noqa: PLC0415

        return App
    if name == "Job":
        from vesper.application.consumers import Job  # noqa: PLC0415

        return Job
    if name == "NonRetryable":
        from vesper.domain.errors import NonRetryable  # noqa: PLC0415

        return NonRetryable
    if name == "Backoff":
        from vesper.domain.backoff import Backoff  # noqa: PLC0415

        return Backoff
    if name in ("Snooze", "RetryAfter"):
        from vesper.domain import retry  # noqa: PLC0415

        return getattr(retry, name)
    if name == "JobRequest":
        from vesper.domain.submission import JobRequest  # noqa: PLC0415

        return JobRequest
    raise AttributeError(f"module 'vesper' has no attribute {name!r}")
