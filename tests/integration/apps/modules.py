"""A test application whose one consumer writes the modules its process has loaded
(as JSON, to $VESPER_TEST_MODULES): what `vesper serve` imported by the time a job ran."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import vesper

app = vesper.App()


@app.consumer("modules")
def report_modules(job: vesper.Job) -> None:
    path = Path(os.environ["VESPER_TEST_MODULES"])
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(sorted(sys.modules)))
    partial.replace(path)  # whole or absent: the test polls for it
