"""The supervisor's rules with trivial child processes: a crash loop is slowed by the
backoff, a configuration error (exit 2) stops everything, the stop pipe stops children."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import time
from pathlib import Path

from vesper.entrypoints.supervisor import STOP_FD_ENV, Supervisor


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_keeps_crashing_is_restarted_with_a_growing_backoff(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    crash = _python(
        f"import time; open({str(starts)!r}, 'a').write(f'{{time.monotonic()}}\\n'); "
        "raise SystemExit(1)"
    )
    supervisor = Supervisor(crash, 1, what="test")

    def stop_after_three_starts() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if starts.exists() and len(starts.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=stop_after_three_starts)
    watcher.start()
    try:
        supervisor.run()
    finally:
        watcher.join()
    times = [float(line) for line in starts.read_text().splitlines()]
    assert len(times) >= 3, "the crashed child was restarted"
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # start to start is at least the backoff (0.5 s, then 1 s): no spinning crash loop
    assert gaps[0] >= 0.5
    assert gaps[1] >= 1.0


def test_a_child_that_exits_2_stops_every_child_with_exit_2(tmp_path: Path) -> None:
    # child 0 exits 2 at once; child 1 waits for its stop pipe to close, then exits 0
    code = (
        "import os, sys\n"
        f"fd = int(os.environ[{STOP_FD_ENV!r}])\n"
        "if os.environ['VESPER_PROCESS_INDEX'] == '0': sys.exit(2)\n"
        "os.read(fd, 1)\n"
        f"open({str(tmp_path / 'stopped')!r}, 'w').write('yes')\n"
    )
    supervisor = Supervisor(_python(code), 2, what="test")
    assert supervisor.run() == 2
    assert (tmp_path / "stopped").read_text() == "yes", "child 1 was asked to stop"
