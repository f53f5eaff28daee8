"""Operating named queues: what each holds and who serves it, and changing its settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import attrs

from vesper.application.ports import JobRepository, QueueingJobRepository, WorkerRegistry
from vesper.domain.errors import InvalidRequest
from vesper.domain.fleet import WorkerProcess
from vesper.domain.queues import (
    DEFAULT_QUEUE,
    QueueChange,
    QueueSettings,
    QueueState,
    check_queue,
)
from vesper.domain.states import Status


@attrs.frozen(kw_only=True)
class QueueView:
    """A queue as operators see it: its state, and the types of its due jobs that no
    live worker process serves in it (they wait, never failed for want of a consumer)."""

    state: QueueState
    unserved_types: tuple[str, ...]


def unserved(state: QueueState, processes: Sequence[WorkerProcess]) -> tuple[str, ...]:
    """The due types of `state` that none of `processes` claims in its queue."""
    return tuple(t for t in state.due_types if not any(p.serves(state.name, t) for p in processes))


@attrs.frozen
class ListQueues:
    """Every queue that holds jobs or settings, by name, with its unserved types.

    A store without named queues shows one queue, "default", holding every job.
    """

    jobs: JobRepository
    registry: WorkerRegistry

    def __call__(self) -> list[QueueView]:
        processes = self.registry.processes()
        return [
            QueueView(state=state, unserved_types=unserved(state, processes))
            for state in self._states()
        ]

    def _states(self) -> list[QueueState]:
        if self.jobs.capabilities.queues:
            return cast(QueueingJobRepository, self.jobs).queue_states()
        stats = self.jobs.stats()
        return [
            QueueState(
                settings=QueueSettings(name=DEFAULT_QUEUE),
                counts=stats.by_status,
                oldest_due_run_at=stats.oldest_due_run_at,
                due_types=(),
                now=stats.now,
            )
        ]


@attrs.frozen
class GetQueue:
    """One queue; a name that no job or setting uses yet is an empty queue."""

    queues: ListQueues

    def __call__(self, name: str) -> QueueView:
        check_queue(name, "name")
        for view in self.queues():
            if view.state.name == name:
                return view
        empty = QueueState(
            settings=QueueSettings(name=name),
            counts=dict.fromkeys(Status, 0),
            oldest_due_run_at=None,
            due_types=(),
            now=self.queues.jobs.now(),
        )
        return QueueView(state=empty, unserved_types=())


@attrs.frozen
class ConfigureQueue:
    """Change a queue's settings (a queue without jobs may be configured); every claim
    in the fleet applies them from then on. Returns the queue.

    Raises:
        InvalidRequest: a bad value, or a store without named queues.
    """

    get_queue: GetQueue

    def __call__(self, name: str, change: QueueChange) -> QueueView:
        check_queue(name, "name")
        jobs = self.get_queue.queues.jobs
        if not jobs.capabilities.queues:
            raise InvalidRequest("name", "this store keeps no queue settings")
        cast(QueueingJobRepository, jobs).configure_queue(name, change)
        return self.get_queue(name)
