"""vesper: a distributed job queue on PostgreSQL, SQLite or memory."""

from __future__ import annotations

__version__ = "0.1.0"
