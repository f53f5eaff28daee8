"""The test ledger itself: the process tests count executions with it, so a line it
loses or a consumer it fails would read as a lost or repeated job."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from tests.integration.apps import ledger


def test_concurrent_first_appends_lose_no_line_and_raise_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads, lines = 8, 40
    errors: list[BaseException] = []
    for trial in range(20):
        directory = tmp_path / str(trial)
        monkeypatch.setenv("VESPER_TEST_LEDGER", str(directory))
        monkeypatch.setattr(ledger, "_fd", None)  # a new process's first batch
        start = threading.Barrier(threads)

        def consumer(n: int, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                for i in range(lines):
                    ledger.append({"event": "start", "thread": n, "i": i})
            except BaseException as exc:  # the test reports any
                errors.append(exc)

        workers = [threading.Thread(target=consumer, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
        if ledger._fd is not None:
            os.close(ledger._fd)
        [path] = directory.glob("*.jsonl")
        written = [json.loads(line) for line in path.read_text().splitlines()]
        assert sorted((e["thread"], e["i"]) for e in written) == [
            (n, i) for n in range(threads) for i in range(lines)
        ]
    assert errors == []
