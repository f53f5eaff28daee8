"""vesper's HTTP API (Litestar), and a uvicorn server to run it next to the workers."""

from __future__ import annotations

from vesper.entrypoints.http.app import create_app
from vesper.entrypoints.http.server import build_server

__all__ = ["build_server", "create_app"]
