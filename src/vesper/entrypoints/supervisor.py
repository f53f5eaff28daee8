"""N copies of one vesper process under one command: `--processes N`.

`vesper worker --processes N` and `vesper api --processes N` run N children, each the
same command with `--processes 1` in a fresh interpreter (nothing is forked from a
process that holds threads or database connections). The supervisor:

- starts them, and restarts a child that exits while the supervisor is not stopping,
  after a backoff that doubles with each quick death (0.5 s up to 30 s; a child that
  ran a minute starts again after 0.5 s), so a crash loop does not spin. A child that
  exits 2 (a configuration error: a restart cannot help) stops them all, exit 2;
- on the first SIGTERM/SIGINT asks every child to stop gracefully and waits for them:
  exit 0 when every child exits 0, else 1. A second signal kills them (SIGKILL) and
  exits 1, as a second signal makes one process exit at once;
- for the API, binds the listening socket once; every child accepts on it. A child
  that dies loses no connection waiting in the accept queue, and the others (then its
  replacement) keep accepting.

The stop request is end-of-file on a pipe, not a signal: each child holds the read end
of a pipe whose write end only the supervisor holds, and stops gracefully when it reads
end-of-file (service.py). So the children also stop when the supervisor is killed, and
a child that gets SIGTERM itself as well (systemd signals the whole control group,
Ctrl+C the whole process group) sees one stop, not the "second signal" that exits at
once.

Each child gets its index (VESPER_PROCESS_INDEX, 0..N-1, kept by its replacement) and,
when VESPER_METRICS_ADDR is host:port, serves its own /metrics on port + index.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType

import attrs

log = logging.getLogger("vesper.supervisor")

PROCESS_INDEX_ENV = "VESPER_PROCESS_INDEX"
STOP_FD_ENV = "VESPER_SUPERVISOR_FD"  # the read end of the child's stop pipe
LISTEN_FD_ENV = "VESPER_LISTEN_FD"  # the API's listening socket, bound by the supervisor

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0  # a child that ran this long died of something new: backoff resets
TICK = 0.1  # how often exits and signals are acted on
CONFIG_ERROR = 2  # the CLI's exit code for a usage or configuration error


def default_processes() -> int:
    """One per core this process may run on (its CPU affinity, as a container's cpuset
    sets it), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@attrs.define
class Child:
    index: int
    popen: subprocess.Popen[bytes] | None = None
    stop_write: int | None = None  # closing it asks the child to stop
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0


class Supervisor:
    """Runs `argv` (a vesper command with `--processes 1`) `count` times until stopped.

    Args:
        listener: the API's bound socket, shared by every child (None for workers).
        metrics_addr: VESPER_METRICS_ADDR; child i serves its /metrics on port + i.
    """

    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        *,
        what: str,
        listener: socket.socket | None = None,
        metrics_addr: tuple[str, int] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.what = what
        self.listener = listener
        self.metrics_addr = metrics_addr
        self.env = dict(os.environ if env is None else env)
        self.children = [Child(index) for index in range(count)]
        self.stopping = False
        self.exit_code = 0
        # the signal handler only appends here (no lock, no I/O: it interrupts the loop
        # anywhere); the loop acts on each signal within a tick
        self._signals: list[int] = []
        self._handled = 0

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Start the children, keep them running until a signal, return the exit code."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            log.info(
                "supervising %d %s processes (pid %d)", len(self.children), self.what, os.getpid()
            )
            for child in self.children:
                self._start(child)
            while self._supervise():
                time.sleep(TICK)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._kill_all()  # only if the loop itself failed: nothing runs by now
        log.info("all %s processes stopped (exit %d)", self.what, self.exit_code)
        return self.exit_code

    def _supervise(self) -> bool:
        """One round: act on signals, note the children that ended, start those due;
        False when done."""
        while self._handled < len(self._signals):
            self._handled += 1
            name = signal.Signals(self._signals[self._handled - 1]).name
            if self._handled == 1:
                log.info("%s received: stopping the %s processes gracefully", name, self.what)
                self.stopping = True
            else:
                log.warning("second signal (%s): killing the %s processes", name, self.what)
                self.exit_code = 1
                self._kill_all()
        now = time.monotonic()
        for child in self.children:
            if child.popen is not None and (code := child.popen.poll()) is not None:
                self._ended(child, code, now)
        if self.stopping:
            self._ask_all_to_stop()
            return any(child.popen is not None for child in self.children)
        for child in self.children:
            if child.popen is None and now >= child.restart_at:
                self._start(child)
        return True

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.append(signum)

    # -- children -------------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        stop_read, stop_write = os.pipe()  # not inheritable: only pass_fds reach the child
        env = {**self.env, PROCESS_INDEX_ENV: str(child.index), STOP_FD_ENV: str(stop_read)}
        fds = [stop_read]
        if self.listener is not None:
            env[LISTEN_FD_ENV] = str(self.listener.fileno())
            fds.append(self.listener.fileno())
        if self.metrics_addr is not None:
            host, port = self.metrics_addr
            shown = f"[{host}]" if ":" in host else host
            env["VESPER_METRICS_ADDR"] = f"{shown}:{port + child.index if port else 0}"
        try:
            child.popen = subprocess.Popen(self.argv, env=env, pass_fds=fds)
        except OSError as exc:
            os.close(stop_write)
            self._schedule_restart(child, time.monotonic(), f"could not start: {exc}")
            return
        finally:
            os.close(stop_read)
        child.stop_write = stop_write
        child.started_at = time.monotonic()
        log.info("%s process %d started (pid %d)", self.what, child.index, child.popen.pid)

    def _ended(self, child: Child, code: int, now: float) -> None:
        assert child.popen is not None
        pid = child.popen.pid
        child.popen = None
        self._close_stop_pipe(child)
        how = _describe_exit(code)
        if self.stopping:
            log.info("%s process %d (pid %d) %s", self.what, child.index, pid, how)
            if code != 0 and self.exit_code == 0:
                self.exit_code = CONFIG_ERROR if code == CONFIG_ERROR else 1
            return
        if code == CONFIG_ERROR:
            log.error(
                "%s process %d (pid %d) %s: a configuration error; stopping them all",
                self.what,
                child.index,
                pid,
                how,
            )
            self.exit_code = CONFIG_ERROR
            self.stopping = True
            return
        if now - child.started_at >= HEALTHY_AFTER:
            child.quick_deaths = 0
        self._schedule_restart(child, now, f"(pid {pid}) {how}")

    def _schedule_restart(self, child: Child, now: float, why: str) -> None:
        delay = min(FIRST_BACKOFF * 2**child.quick_deaths, MAX_BACKOFF)
        child.quick_deaths += 1
        child.restart_at = now + delay
        log.warning("%s process %d %s; restarting it in %.1fs", self.what, child.index, why, delay)

    def _ask_all_to_stop(self) -> None:
        for child in self.children:
            self._close_stop_pipe(child)

    def _close_stop_pipe(self, child: Child) -> None:
        if child.stop_write is not None:
            with contextlib.suppress(OSError):
                os.close(child.stop_write)
            child.stop_write = None

    def _kill_all(self) -> None:
        for child in self.children:
            if child.popen is not None and child.popen.poll() is None:
                child.popen.kill()
        for child in self.children:
            if child.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.popen.wait(timeout=10)
                self._close_stop_pipe(child)
                child.popen = None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def child_command(command: str, *options: str) -> list[str]:
    """The command line of one child: this vesper, the same command, one process."""
    return [sys.executable, "-m", "vesper.entrypoints.cli", command, "--processes", "1", *options]


# -- the child's side -------------------------------------------------------------------


def supervised() -> bool:
    """Whether this process is a child of a supervisor."""
    return PROCESS_INDEX_ENV in os.environ


def inherited_listener() -> socket.socket | None:
    """The API's listening socket the supervisor bound, if this process is its child."""
    fd = os.environ.get(LISTEN_FD_ENV)
    return socket.socket(fileno=int(fd)) if fd else None


def stop_pipe() -> int | None:
    """The read end of this child's stop pipe: end-of-file means "stop gracefully"."""
    fd = os.environ.get(STOP_FD_ENV)
    return int(fd) if fd else None
