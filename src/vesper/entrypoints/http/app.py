"""The Litestar application: routes, dependencies, errors, limits, auth, OpenAPI.

`create_app()` is a uvicorn factory (`uvicorn --factory vesper.entrypoints.http:create_app`)
and what `vesper api`/`vesper serve` run. Another module adds routes by passing
`route_handlers=[...]` (a /metrics handler, say: /metrics is public by path, unless
VESPER_METRICS_AUTH=1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dotenv import load_dotenv
from litestar import Litestar, Router
from litestar.middleware import DefineMiddleware
from litestar.types import ControllerRouterHandler, Guard

from vesper.entrypoints.container import Container, build_container
from vesper.entrypoints.http.auth import bearer_guard, security_requirement
from vesper.entrypoints.http.deps import use_case_dependencies
from vesper.entrypoints.http.errors import exception_handlers
from vesper.entrypoints.http.methods import AllowHeaderFix
from vesper.entrypoints.http.openapi import openapi_config
from vesper.entrypoints.http.routes.fleet import FLEET_ROUTES
from vesper.entrypoints.http.routes.health import HEALTH_ROUTES
from vesper.entrypoints.http.routes.jobs import JOB_ROUTES
from vesper.entrypoints.http.routes.queues import QUEUE_ROUTES
from vesper.entrypoints.http.routes.retention import RETENTION_ROUTES
from vesper.entrypoints.http.routes.schedules import SCHEDULE_ROUTES
from vesper.entrypoints.http.telemetry import HttpTelemetry
from vesper.entrypoints.http.timeouts import TimeoutMiddleware
from vesper.entrypoints.http.ui import template_config, ui_router
from vesper.entrypoints.settings import Settings


def create_app(
    container: Container | None = None,
    *,
    settings: Settings | None = None,
    route_handlers: Sequence[ControllerRouterHandler] = (),
) -> Litestar:
    """The HTTP API of vesper.

    Args:
        container: the composition root to serve; built from `settings` (or from the
            environment and `.env`) when omitted. A container passed in belongs to the
            caller: the app does not shut its resources down.
        settings: the configuration; read from the container when omitted.
        route_handlers: more handlers, controllers or routers to serve (e.g. /metrics).
            They get the same error format and, unless public, the bearer guard.

    Returns:
        The Litestar app (an ASGI callable).
    """
    owned = container is None
    if settings is None:
        if container is not None:
            settings = container.config.settings()
        else:
            load_dotenv(".env", override=False)  # the current directory, as the CLI
            settings = Settings.from_env(os.environ)
    assert settings is not None
    c = container if container is not None else build_container(settings)
    token = settings.http.api_token
    guards: list[Guard] = (
        [bearer_guard(token, metrics_public=not settings.http.metrics_auth)] if token else []
    )
    max_body = settings.policies.limits.max_payload_bytes

    api = Router(
        path="/",
        route_handlers=[
            *JOB_ROUTES,
            *RETENTION_ROUTES,
            *FLEET_ROUTES,
            *SCHEDULE_ROUTES,
            *QUEUE_ROUTES,
        ],
        security=security_requirement() if token else None,
    )
    ui = ui_router(c, token) if settings.http.ui else []
    app = Litestar(
        route_handlers=[api, *HEALTH_ROUTES, *ui, *route_handlers],
        dependencies=use_case_dependencies(c),
        exception_handlers=exception_handlers(),
        guards=guards,
        middleware=[
            DefineMiddleware(
                TimeoutMiddleware,
                read_timeout=settings.http.read_timeout,
                write_timeout=settings.http.write_timeout,
            )
        ],
        request_max_body_size=max_body,
        openapi_config=openapi_config(with_security=bool(token)),
        # a lambda: Litestar passes the app to hooks that take parameters
        on_shutdown=[lambda: c.shutdown_resources()] if owned else [],  # noqa: PLW0108
        logging_config=None,  # the process configures logging, not the app
        debug=False,  # never render tracebacks into responses
        template_config=template_config() if settings.http.ui else None,
    )
    app.state.max_body_bytes = max_body
    app.state.ui_token = token
    # outermost, as Litestar's own OpenTelemetry plugin: 404s and 405s are counted too
    app.asgi_handler = HttpTelemetry(
        AllowHeaderFix(app.asgi_handler),
        tracer=c.tracer_provider().get_tracer("vesper.http"),
        record=c.metrics().http_request,  # opens no store: the gauges read it at a scrape
    )
    return app
