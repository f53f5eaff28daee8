"""A consumer's return value as the job's `result`: JSON text, bounded in size.

A value that cannot be stored is the attempt's failure, without retry: running the
job again would return the same kind of value.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_MAX_RESULT = 64 * 1024  # bytes of JSON (VESPER_MAX_RESULT)


class ResultRejected(ValueError):
    """The consumer's return value cannot be stored; the message says why."""


def encode_result(value: Any, max_bytes: int) -> str:
    """The JSON text of `value` (ASCII, compact), at most `max_bytes` long.

    Raises:
        ResultRejected: the value cannot be encoded as JSON (a type JSON lacks, a
            circular reference, NaN or infinity), or its JSON is over `max_bytes`.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ResultRejected(f"the result cannot be encoded as JSON: {exc}") from None
    if len(text) > max_bytes:  # ASCII: one byte per character
        raise ResultRejected(
            f"the result is {len(text)} bytes of JSON, over the limit of {max_bytes} "
            "(VESPER_MAX_RESULT)"
        )
    return text
