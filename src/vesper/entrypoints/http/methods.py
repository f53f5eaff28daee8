"""A correct `Allow` header on OPTIONS responses.

Litestar 2.25 builds the automatic OPTIONS handler of a path when the path's first
handler is registered, and keeps it when more handlers join the path: OPTIONS /jobs
then answered `Allow: OPTIONS, POST` although GET /jobs exists (405 responses were
right). This hook rewrites the header of OPTIONS answers from the app's route map.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import Message, Scope

_NO_CONTENT = 204


class AllowHeaderFix:
    """A `before_send` hook; the route map is read once, at the first OPTIONS answer."""

    def __init__(self) -> None:
        self._allowed: dict[str, bytes] | None = None

    async def __call__(self, message: Message, scope: Scope) -> None:
        if (
            message["type"] != "http.response.start"
            or scope["type"] != ScopeType.HTTP
            or scope["method"] != "OPTIONS"
            or message["status"] != _NO_CONTENT
        ):
            return
        if self._allowed is None:
            self._allowed = {
                path: ", ".join(sorted(methods)).encode()
                for path, methods in scope["litestar_app"].route_handler_method_map.items()
            }
        allowed = self._allowed.get(scope.get("path_template", ""))
        if allowed is None:
            return
        headers = [(name, value) for name, value in message["headers"] if name.lower() != b"allow"]
        message["headers"] = [*headers, (b"allow", allowed)]
