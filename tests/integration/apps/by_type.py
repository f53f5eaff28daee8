"""Two applications of one fleet split by job type: `only_a` runs type "a", `only_b` type
"b"; each writes the ledger of tests/integration/apps/ledger.py."""

from __future__ import annotations

import vesper
from tests.integration.apps.ledger import write

only_a = vesper.App()
only_b = vesper.App()


@only_a.consumer("a")
def run_a(job: vesper.Job) -> None:
    write("start", job)


@only_b.consumer("b")
def run_b(job: vesper.Job) -> None:
    write("start", job)
