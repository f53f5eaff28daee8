"""A Notifier for stores whose processes share one machine (a database file): Unix
datagram sockets in a directory.

Each subscribing process binds a socket `<16 hex>.sock` in the directory; `publish`
sends one datagram to each and removes the sockets nobody reads any more (connection
refused: their process is gone, even after kill -9). A full socket buffer means wake-ups
are pending already: the datagram is dropped. The built-in SQLite store uses it, with
the directory `<database file>-wake/`; a third-party store gets it from `vesper.store`.

A notification is a hint (application/ports.py): where a socket cannot be bound (no
AF_UNIX, a directory that is not writable, a path longer than the 107 bytes a socket
address holds) the subscription says so once and reports itself not connected, and the
workers of that process poll (VESPER_POLL_INTERVAL); a publish that fails costs the
subscribers a poll interval.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("vesper.listen")

_NOTE = b"jobs"


class SocketNotifier:
    """Wakes subscribers in any process on this machine: one Unix datagram socket each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def publish(self) -> None:
        try:
            paths = list(self.directory.glob("*.sock"))
            if not paths:
                return
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
                sender.setblocking(False)
                for path in paths:
                    try:
                        sender.sendto(_NOTE, str(path))
                    except (ConnectionRefusedError, FileNotFoundError):
                        path.unlink(missing_ok=True)  # its process is gone
                    except BlockingIOError:
                        pass  # its queue is full: it has wake-ups pending already
        except (OSError, AttributeError) as exc:  # AttributeError: no AF_UNIX here
            log.debug("could not publish to %s: %s", self.directory, exc)

    def subscribe(self, on_jobs: Callable[[], None]) -> SocketSubscription | NoSubscription:
        """Call `on_jobs` (from a thread of its own) after each publish, and once at
        once; without a socket, say why once and return a subscription that is not
        connected (the workers poll)."""
        try:
            return SocketSubscription(self.directory, on_jobs)
        except (OSError, AttributeError) as exc:
            log.warning(
                "cannot bind a wake-up socket in %s (%s): the workers of this process "
                "find new jobs at each poll (VESPER_POLL_INTERVAL)",
                self.directory,
                exc,
            )
            return NoSubscription()


class SocketSubscription:
    """A bound socket and the thread that reads it."""

    reconnects = 0  # a bound socket never disconnects

    def __init__(self, directory: Path, on_jobs: Callable[[], None]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / f"{uuid.uuid4().hex[:16]}.sock"
        self._stop = uuid.uuid4().bytes  # what close() sends to end the thread
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._socket.bind(str(self._path))
        except OSError:
            self._socket.close()
            raise
        self._thread = threading.Thread(
            target=self._run, args=(on_jobs,), name="vesper-wake", daemon=True
        )
        self._thread.start()

    def _run(self, on_jobs: Callable[[], None]) -> None:
        on_jobs()  # what was published before the socket was bound
        while True:
            notes = [self._socket.recv(64)]
            with contextlib.suppress(BlockingIOError):  # a burst: one wake-up for all of it
                while len(notes) < 1024:
                    notes.append(self._socket.recv(64, socket.MSG_DONTWAIT))
            if self._stop in notes:
                return
            try:
                on_jobs()
            except Exception:
                log.exception("job listener callback failed")

    def connected(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(self._stop, str(self._path))
        self._thread.join(timeout=2.0)
        self._socket.close()
        self._path.unlink(missing_ok=True)


class NoSubscription:
    """No socket could be bound: nothing arrives, the workers poll."""

    reconnects = 0

    def connected(self) -> bool:
        return False

    def close(self) -> None:
        pass
