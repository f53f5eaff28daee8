"""The dashboard at /ui: server-rendered pages over the same use cases as the JSON API.

Its own small modules: `routes` (pages and actions), `session` (login session and CSRF
token), `views` (a view model per page), `chart` (the overview's SVG), `seams` (the
parts whose use cases later features bring), `templates/` and `static/` (htmx, the
stylesheet). `ui_router()` builds it; `create_app` mounts it unless VESPER_UI=off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from litestar import MediaType, Request, Response, Router
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_303_SEE_OTHER
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler, Guard

from vesper.domain.errors import (
    IllegalTransition,
    InvalidCursor,
    InvalidRequest,
    JobNotFound,
    ScheduleNotFound,
    StoreUnavailable,
)
from vesper.entrypoints.container import Container
from vesper.entrypoints.http.ui.routes import UI_HANDLERS, login_url, page
from vesper.entrypoints.http.ui.seams import FeatureUnavailable
from vesper.entrypoints.http.ui.session import SESSION_COOKIE, session_valid

STATIC = Path(__file__).parent / "static"


class LoginRequired(Exception):
    """A page asked for without a valid session: the login form, then back."""


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    environment = Environment(
        loader=PackageLoader("vesper.entrypoints.http.ui", "templates"),
        autoescape=True,  # job data is untrusted input: every {{ }} is escaped
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def session_guard(token: str | None) -> Guard:
    """Pages and actions need a valid session cookie when the server has a token."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if token is None or handler.opt.get("ui_public"):
            return
        if session_valid(connection.cookies.get(SESSION_COOKIE), token):
            return
        if connection.scope.get("method") in {"GET", "HEAD"}:
            raise LoginRequired
        raise NotAuthorizedException(detail="log in first: the session is missing or expired")

    return guard


def _error_page(request: Request[Any, Any, Any], status: int, message: str) -> Response[Any]:
    if request.headers.get("hx-request"):
        # an htmx refresh: keep the page as it is rather than swap an error into it
        return Response(message, status_code=status, media_type=MediaType.TEXT)
    return page(request, "error.html", status_code=status, status=status, message=message)


def _handlers() -> dict[type[Exception] | int, Any]:
    def login(request: Request[Any, Any, Any], _: LoginRequired) -> Redirect:
        return Redirect(login_url(request), status_code=HTTP_303_SEE_OTHER)

    def fixed(status: int, message: str | None = None) -> Any:
        def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
            return _error_page(request, status, message or str(exc))

        return handle

    def http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        return _error_page(request, exc.status_code, exc.detail)

    def invalid(request: Request[Any, Any, Any], exc: InvalidRequest) -> Response[Any]:
        return _error_page(request, 400, f"{exc.field}: {exc.message}")

    return {
        LoginRequired: login,
        HTTPException: http,
        InvalidRequest: invalid,
        InvalidCursor: fixed(400, "that page link is not valid any more: start from the first"),
        JobNotFound: fixed(404, "no job has this id"),
        ScheduleNotFound: fixed(404, "no schedule has this name"),
        IllegalTransition: fixed(409),
        FeatureUnavailable: fixed(404),
        StoreUnavailable: fixed(503, "the store does not answer: try again in a moment"),
    }


def ui_router(container: Container, token: str | None) -> list[ControllerRouterHandler]:
    """The pages under /ui and their static files (public: htmx and the stylesheet)."""
    pages = Router(
        path="/ui",
        route_handlers=UI_HANDLERS,
        guards=[session_guard(token)],
        dependencies={"ui_container": Provide(lambda: container, sync_to_thread=False)},
        exception_handlers=_handlers(),
        opt={"public": True},  # not the bearer token: the session guard decides
        include_in_schema=False,
    )
    static = create_static_files_router(
        path="/ui/static",
        directories=[STATIC],
        opt={"public": True},
        include_in_schema=False,
    )
    return [pages, static]


__all__ = ["template_config", "ui_router"]
