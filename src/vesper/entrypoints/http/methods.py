"""A correct `Allow` header on OPTIONS responses.

Litestar 2.25 builds the automatic OPTIONS handler of a path when the path's first
handler is registered, and keeps it when more handlers join the path: OPTIONS /jobs
then answered `Allow: OPTIONS, POST` although GET /jobs exists (405 responses were
right). This wrapper rewrites the header of OPTIONS answers from the app's route map;
other requests pass straight through (a `before_send` hook ran on every message).
"""

from __future__ import annotations

import re
from typing import Any

from litestar.types import ASGIApp, Message

_NO_CONTENT = 204


class AllowHeaderFix:
    """An ASGI wrapper: `app.asgi_handler = AllowHeaderFix(app.asgi_handler)`; the route
    map is read once, at the first OPTIONS answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._allowed: dict[str, bytes] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return

        async def send_fixed(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == _NO_CONTENT:
                self._fix(message, scope)
            await send(message)

        await self.app(scope, receive, send_fixed)

    def _fix(self, message: Any, scope: Any) -> None:
        if self._allowed is None:
            self._allowed = {
                _template(path): ", ".join(sorted(methods)).encode()
                for path, methods in scope["litestar_app"].route_handler_method_map.items()
            }
        allowed = self._allowed.get(_template(scope.get("path_template", "")))
        if allowed is None:
            return
        headers = [(name, value) for name, value in message["headers"] if name.lower() != b"allow"]
        message["headers"] = [*headers, (b"allow", allowed)]


def _template(path: str) -> str:
    """A path template without its parameters' types: the route map spells
    `/jobs/{job_id:str}`, a request's template `/jobs/{job_id}`."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)
