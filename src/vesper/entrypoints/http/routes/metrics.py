"""GET /metrics: Prometheus text exposition of this container's metrics.

Public by its path (the bearer guard's PUBLIC_PATHS), unless VESPER_METRICS_AUTH=1.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler

from vesper.entrypoints.container import Container
from vesper.entrypoints.http.deps import blocking


def metrics_route(container: Container) -> HTTPRouteHandler:
    """The /metrics handler; scraping reads queue depth and the fleet from the store."""

    @get("/metrics", include_in_schema=False)
    async def metrics_handler(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Prometheus text format (OpenMetrics when the scraper asks for it)."""
        metrics = await blocking(container.metrics)
        body, content_type = await blocking(metrics.exposition, request.headers.get("accept"))
        # the full content type as the encoder chose it: media_type= would add a charset
        return Response(content=body, headers={"content-type": content_type})

    return metrics_handler
