"""An in-process signal from producers (and listeners) to the workers of this process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("vesper")


class LocalJobSignal:
    """Calls every subscriber on notify(); thread-safe, never raises to the producer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Add `callback`; returns a function that removes it."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def notify(self) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback()
            except Exception:  # a subscriber's bug must not fail a submission
                log.exception("job signal subscriber failed")
