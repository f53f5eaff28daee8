"""PostgreSQL LISTEN/NOTIFY: workers wake when jobs are submitted anywhere.

The PostgreSQL store's Notifier (application/ports.py). The store NOTIFYs `CHANNEL` in
the statement or transaction that makes jobs due (delivered at commit: no round trip
of its own); `publish()` is the same NOTIFY alone, for anything else.
The listener holds its own autocommit connection in a daemon thread, reconnects with a
capped backoff when the connection drops (or its backend is terminated), LISTENs again,
and signals once after every (re)connect so that nothing missed meanwhile waits for a
poll interval.

The thread waits on the connection's socket and on a wake-up socket of its own, so
stop() takes effect at once (a SIGTERM'd worker does not wait out a timeout here).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

CHANNEL = "vesper_jobs"
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', '')"
# jobs finished (done, dlq, cancelled): wakes the waiters of GET /jobs/{id}?wait=. One
# notification per statement that records outcomes, whatever the number of jobs: the
# waiters then read their jobs together (application/waiting.py).
FINISHED_CHANNEL = "vesper_finished"
FINISHED_NOTIFY_SQL = f"SELECT pg_notify('{FINISHED_CHANNEL}', '')"
# A NOTIFY is not free on the hot path: PostgreSQL serialises notifying commits on one
# lock (held through the commit's flush) and wakes every listening session of the
# database. So the outcome statements notify only while some process listens for
# finished jobs: such a listener holds advisory locks WAITERS_LOCK (class, slot) for
# every slot, shared, for as long as its connection lives; a statement that finished jobs
# tries the lock of its slot (its backend pid modulo the slots) exclusively for its
# transaction, and notifies when that fails. The try and the listener's lock exclude
# each other: a statement that got the lock (and so did not notify) has committed before
# the listener's lock is granted, and the listener reads its waited jobs after that.
# Slots keep concurrent statements from failing each other's try (a needless NOTIFY).
WAITERS_LOCK_CLASS = 0x7665_7377  # "vesw", an int4 that other applications are unlikely to use
WAITERS_LOCK_SLOTS = 16
WAITERS_LOCK_SQL = (
    f"SELECT count(pg_advisory_lock_shared({WAITERS_LOCK_CLASS}, slot))"
    f" FROM generate_series(0, {WAITERS_LOCK_SLOTS - 1}) AS slot"
)
WAITERS_ABSENT_SQL = (
    f"pg_try_advisory_xact_lock({WAITERS_LOCK_CLASS}, pg_backend_pid() % {WAITERS_LOCK_SLOTS})"
)

log = logging.getLogger("vesper.listen")

STOP_JOIN_TIMEOUT = 2.0  # only a connect in progress can hold the thread this long


def libpq_conninfo(url: str) -> str:
    """A libpq URI from a SQLAlchemy URL (postgresql+psycopg://... -> postgresql://...)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresJobListener:
    def __init__(
        self,
        url: str,
        on_jobs: Callable[[], None],
        *,
        max_backoff: float = 5.0,
        check_interval: float = 1.0,
        channel: str = CHANNEL,
        after_listen: str | None = None,
    ) -> None:
        self._channel = channel
        self._after_listen = after_listen  # SQL run after each LISTEN (WAITERS_LOCK_SQL)
        self._conninfo = libpq_conninfo(url)
        self._on_jobs = on_jobs
        self._max_backoff = max_backoff
        self._check_interval = check_interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vesper-listen", daemon=True)
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self.up = threading.Event()  # set while LISTENing
        self.reconnects = 0

    def connected(self) -> bool:
        return self.up.is_set()

    def close(self) -> None:
        self.stop()

    def start(self) -> PostgresJobListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close the connection; returns at once unless a connection
        attempt is in progress (bounded by STOP_JOIN_TIMEOUT: the thread is a daemon)."""
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")
        self._thread.join(timeout=STOP_JOIN_TIMEOUT)
        if not self._thread.is_alive():
            self._wake_read.close()
            self._wake_write.close()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopped.is_set():
            try:
                with psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    application_name="vesper-listen",
                    connect_timeout=5,
                ) as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    if self._after_listen is not None:
                        conn.execute(self._after_listen)
                    self.up.set()
                    backoff = 0.1
                    self._signal()  # catch up on what was submitted while not listening
                    self._listen(conn)
            except psycopg.Error as exc:
                self.up.clear()
                if self._stopped.is_set():
                    break
                self.reconnects += 1
                log.warning(
                    "LISTEN connection lost, reconnecting in %.1fs: %s", backoff, _oneline(exc)
                )
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
        self.up.clear()

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        """Signal once per batch of notifications until stop(); raises psycopg.Error
        when the connection is lost (its socket turns readable and the read fails)."""
        with selectors.DefaultSelector() as selector:
            selector.register(conn.fileno(), selectors.EVENT_READ, "conn")
            selector.register(self._wake_read, selectors.EVENT_READ, "stop")
            while not self._stopped.is_set():
                events = selector.select(self._check_interval)
                if self._stopped.is_set():
                    return
                if not any(key.data == "conn" for key, _ in events):
                    continue
                # what arrived, never waiting; a lost connection raises here (or at the
                # next read: its error message may come before the end of the stream)
                if sum(1 for _ in conn.notifies(timeout=0)):
                    self._signal()

    def _signal(self) -> None:
        try:
            self._on_jobs()
        except Exception:
            log.exception("job listener callback failed")


class PostgresNotifier:
    """LISTEN/NOTIFY on `CHANNEL`: `publish` runs through `run_notify` (the store's
    pool), each subscription holds a connection of its own to `url`."""

    def __init__(self, url: str, run_notify: Callable[[], None]) -> None:
        self._url = url
        self._run_notify = run_notify

    def publish(self) -> None:
        self._run_notify()

    def subscribe(self, on_jobs: Callable[[], None]) -> PostgresJobListener:
        return PostgresJobListener(self._url, on_jobs).start()


def _oneline(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
