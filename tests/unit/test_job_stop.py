"""vesper.Job's stop signal: the worker's loop stops a job, the consumer's thread sees it
(`stopping`, `raise_if_stopping`) or waits for it (`wait_stopping`), in either order.
The event behind the wait is made on the first wait, so these race the two."""

from __future__ import annotations

import threading

import pytest

from tests.unit.builders import make_job
from vesper.application.consumers import Job
from vesper.domain.errors import LeaseLost


def test_a_job_not_stopped_waits_out_its_timeout() -> None:
    job = Job(make_job())
    assert not job.stopping
    assert job.wait_stopping(0.01) is False
    job.raise_if_stopping()
    assert job.stop_reason == ""


def test_a_stop_before_the_first_wait_is_seen_at_once() -> None:
    job = Job(make_job())
    job.stop("lease lost")
    job.stop("time limit")  # the first reason stays
    assert job.stopping
    assert job.stop_reason == "lease lost"
    assert job.wait_stopping(10) is True
    with pytest.raises(LeaseLost):
        job.raise_if_stopping()


def test_a_stop_wakes_every_waiter_whenever_it_comes() -> None:
    """Waiters that start before, during and after the stop all wake (200 jobs: the
    lazily made event must never miss a stop that raced its making)."""
    for _ in range(200):
        job = Job(make_job())
        woke: list[bool] = []
        ready = threading.Barrier(3)

        def wait(job: Job = job, woke: list[bool] = woke, ready: threading.Barrier = ready) -> None:
            ready.wait()
            woke.append(job.wait_stopping(10))

        waiters = [threading.Thread(target=wait) for _ in range(2)]
        for waiter in waiters:
            waiter.start()
        ready.wait()
        job.stop("shutdown")
        for waiter in waiters:
            waiter.join(10)
        assert woke == [True, True]
        assert job.wait_stopping(0) is True
