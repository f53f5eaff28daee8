"""Bearer-token authentication (VESPER_API_TOKEN).

With a token configured, every route but the public ones requires exactly
`Authorization: Bearer <token>`; anything else (no header, another token, `bearer`
in lower case, Basic, a trailing space) gets 401 with `WWW-Authenticate: Bearer`.
Public: /health, /ready and /metrics (probes and scrapers carry no token; /metrics
not with VESPER_METRICS_AUTH=1), and any handler declared with `opt={"public": True}`. The OpenAPI document (/schema) is
protected: it describes a protected API.

The comparison is `hmac.compare_digest` over bytes, so its time does not depend on
how much of the token matched. The token never reaches a log or a response.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import Guard

PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"})
SCHEME_NAME = "bearerAuth"


def bearer_guard(token: str, *, metrics_public: bool = True) -> Guard:
    """A guard that admits `Authorization: Bearer <token>` and public routes."""
    expected = b"Bearer " + token.encode()
    public_paths = PUBLIC_PATHS if metrics_public else PUBLIC_PATHS - {"/metrics"}

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if handler.opt.get("public") or connection.scope["path"] in public_paths:
            return
        # ASGI header values are bytes; Litestar decoded them as latin-1.
        presented = connection.headers.get("authorization", "").encode("latin-1")
        if not hmac.compare_digest(presented, expected):
            raise NotAuthorizedException(
                detail="a valid 'Authorization: Bearer <token>' header is required",
                headers={"WWW-Authenticate": "Bearer"},
                extra={"scheme": "Bearer"},
            )

    return guard


def security_components() -> Components:
    """The OpenAPI security scheme that protected routes reference."""
    return Components(security_schemes={SCHEME_NAME: SecurityScheme(type="http", scheme="bearer")})


def security_requirement() -> list[dict[str, list[str]]]:
    return [{SCHEME_NAME: []}]
