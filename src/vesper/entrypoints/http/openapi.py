"""The OpenAPI document, served at /schema and /schema/openapi.json.

Litestar's schema of a msgspec Struct does not say what strict decoding enforces, so
the document is amended where it is rendered: request bodies are closed
(`additionalProperties: false`, as `forbid_unknown_fields` rejects unknown keys), and
a job may not carry both `run_at` and `delay_seconds`; a bulk filter's `status` is one
its action starts from, and its `queue` null until this server has queues. A fuzzer reading the document (schemathesis) then
generates exactly what the API accepts.
"""

from __future__ import annotations

import copy
from importlib.metadata import version
from typing import Any

import msgspec
from litestar import Request, Response, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components
from litestar.status_codes import HTTP_404_NOT_FOUND

from vesper.domain.bulk import BulkAction
from vesper.domain.states import TRANSITIONS
from vesper.entrypoints.http.auth import security_components
from vesper.entrypoints.http.errors import error_response
from vesper.entrypoints.http.schemas import (
    BatchJobIn,
    BulkCancelIn,
    BulkRetryIn,
    QueuePatchIn,
    SchedulePatchIn,
    SubmitBatchIn,
    SubmitJobIn,
)

DESCRIPTION = """A distributed job queue: submit jobs, follow them, see the fleet.

Every error is `{"error": "<message>", "detail": {...} | null}`; bad input is a 400
whose `detail.field` names the field. With VESPER_API_TOKEN set, every route but
/health, /ready and /metrics requires `Authorization: Bearer <token>`.
"""

_REQUEST_BODIES: tuple[type[msgspec.Struct], ...] = (
    SubmitJobIn,
    BatchJobIn,
    SubmitBatchIn,
    QueuePatchIn,
    BulkRetryIn,
    BulkCancelIn,
    SchedulePatchIn,
)
_BULK_BODIES = {BulkRetryIn: BulkAction.RETRY, BulkCancelIn: BulkAction.CANCEL}
_JOB_BODIES = (SubmitJobIn, BatchJobIn)
# Both present and both non-null is refused (either may be null).
_RUN_AT_OR_DELAY = {
    "required": ["run_at", "delay_seconds"],
    "properties": {"run_at": {"type": "string"}, "delay_seconds": {"type": "number"}},
}


def amend(document: dict[str, Any]) -> dict[str, Any]:
    """The document with what strict decoding enforces written into the body schemas."""
    amended = copy.deepcopy(document)
    schemas: dict[str, Any] = amended.get("components", {}).get("schemas", {})
    for model in _REQUEST_BODIES:
        if (schema := schemas.get(model.__name__)) is not None:
            schema["additionalProperties"] = False
            if model in _JOB_BODIES:
                schema["not"] = _RUN_AT_OR_DELAY
    for model, action in _BULK_BODIES.items():
        if (bulk := schemas.get(model.__name__)) is not None:
            # the statuses the action starts from; any other is a 400
            statuses = sorted(s.value for s in TRANSITIONS[action.value][0])
            bulk["properties"]["status"] = {
                "oneOf": [{"type": "string", "enum": statuses}, {"type": "null"}],
                "description": "Only jobs in this status.",
            }
    return amended


class AmendedJsonRenderPlugin(JsonRenderPlugin):
    """Serves the amended document as JSON (rendered once, then cached)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rendered: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._rendered is None:
            self._rendered = self.render_json(request, amend(openapi_schema))
        return self._rendered


def openapi_config(*, with_security: bool) -> OpenAPIConfig:
    """/schema and /schema/openapi.json serve the JSON document; nothing else is there."""
    schema_router = Router(
        path="/schema",
        route_handlers=[],
        include_in_schema=False,
        after_request=_json_not_found,
    )
    return OpenAPIConfig(
        title="vesper",
        version=version("vesper-hivemind"),  # the package's (not `vesper`: an import circle)
        description=DESCRIPTION,
        path="/schema",
        render_plugins=[AmendedJsonRenderPlugin(path=["/", "/openapi.json"])],
        openapi_router=schema_router,
        components=security_components() if with_security else Components(),
        use_handler_docstrings=True,
    )


def _json_not_found(response: Response[Any]) -> Response[Any]:
    """Litestar answers unknown /schema/... paths with an HTML page: make it our JSON."""
    if response.status_code == HTTP_404_NOT_FOUND:
        return error_response(HTTP_404_NOT_FOUND, "Not Found")
    return response
