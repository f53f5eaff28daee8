"""Every error the API returns is `{"error": "<message>", "detail": {...} | null}`.

Status codes, chosen once for every route:

- 400: any bad input: JSON syntax, a wrong type, an unknown or missing field, a rule of
  the domain (priority 0-10...), a bad query parameter, cursor, path id or header.
  `detail.field` names it (`priority`, `jobs[3].type`, `Idempotency-Key`, `cursor`).
- 401 bad or missing bearer token; 404 unknown job, schedule or path; 405 with `Allow`;
  408 a body slower than HTTP_READ_TIMEOUT; 409 a transition the job's status forbids;
  413 a body above VESPER_MAX_BODY (checked against Content-Length before reading,
  and while reading a chunked body); 415 a body that is not declared as JSON.
- 422: an Idempotency-Key reused with another body, and a batch of more
  jobs than Limits.max_batch (the OpenAPI `maxItems`): well-formed, but refused.
- 503 with `Retry-After` while the store does not answer (connection refused or lost,
  pool exhausted, database locked), or its database is not migrated (the error says so):
  the store raised StoreUnavailable or SchemaNotMigrated, the ports' error contract. A
  driver's own exception is a bug of the store that let it out, so it is a 500.
- Below the app, in the same shape (`protocol.py`): 400 for what the HTTP parser
  rejects, 431 for a request head above VESPER_MAX_HEADER_BYTES, 503 for a connection
  past VESPER_MAX_CONNECTIONS.
- 501 for the schedule routes on a store that keeps no schedules.
- 500 for anything unexpected: a generic message; the traceback goes to the log only.

No body carries a traceback, SQL, a DSN or a file path: messages of store errors never
reach the client, and only the exception's type reaches the log for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_405_METHOD_NOT_ALLOWED,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_501_NOT_IMPLEMENTED,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from vesper.domain.errors import (
    IdempotencyConflict,
    IllegalTransition,
    InvalidCursor,
    InvalidRequest,
    JobNotFound,
    ScheduleNotFound,
    SchedulesUnsupported,
    SchemaNotMigrated,
    StoreUnavailable,
    UniqueKeyHeld,
)
from vesper.entrypoints.http.schemas import ErrorOut

log = logging.getLogger("vesper.http")

RETRY_AFTER_SECONDS = 1
_CLIENT_GONE = "client disconnected prematurely"
# Wire names of the fields whose domain names differ. In a batch the key is a body field.
_WIRE_FIELDS = {"timeout": "timeout_seconds"}
_BATCH_WIRE_FIELDS = {**_WIRE_FIELDS, "Idempotency-Key": "idempotency_key"}
# Litestar names parameters by their Python names.
_PARAMETER_NAMES = {"idempotency_key": "Idempotency-Key"}

_DESCRIPTIONS = {
    400: "Bad input; `detail.field` names the offending field, parameter or header.",
    401: "Missing or wrong `Authorization: Bearer <token>` (when VESPER_API_TOKEN is set).",
    404: "No job has this id (no schedule has this name).",
    409: "The job's status does not allow this action.",
    413: "The body is above VESPER_MAX_BODY.",
    415: "The body is not declared as application/json.",
    422: "The Idempotency-Key is bound to a job submitted with another body, or the batch "
    "holds more jobs than its limit.",
    501: "The store keeps no periodic schedules (a third-party store without them).",
    503: "The store does not answer (or its schema is not migrated); retry after "
    "`Retry-After` seconds.",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of the error responses a route can give."""
    return {
        code: ResponseSpec(
            data_container=ErrorOut, description=_DESCRIPTIONS[code], generate_examples=False
        )
        for code in codes
    }


def error_response(
    status_code: int,
    error: str,
    detail: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[ErrorOut]:
    return Response(
        ErrorOut(error=error, detail=detail),
        status_code=status_code,
        headers=dict(headers or {}),
        media_type=MediaType.JSON,
    )


def wire_field(field: str) -> str:
    """The API's name for a domain field path: `jobs[2].timeout` -> `jobs[2].timeout_seconds`."""
    head, dot, last = field.rpartition(".")
    names = _BATCH_WIRE_FIELDS if head else _WIRE_FIELDS
    return f"{head}{dot}{names.get(last, last)}"


def _field_error(status_code: int, field: str, message: str) -> Response[ErrorOut]:
    return error_response(status_code, f"{field}: {message}", {"field": field, "message": message})


def _invalid_request(_: Request[Any, Any, Any], exc: InvalidRequest) -> Response[ErrorOut]:
    return _field_error(HTTP_400_BAD_REQUEST, wire_field(exc.field), exc.message)


def _invalid_cursor(_: Request[Any, Any, Any], exc: InvalidCursor) -> Response[ErrorOut]:
    return _field_error(HTTP_400_BAD_REQUEST, "cursor", "is not a cursor this server issued")


def _job_not_found(_: Request[Any, Any, Any], exc: JobNotFound) -> Response[ErrorOut]:
    return error_response(HTTP_404_NOT_FOUND, str(exc), {"job_id": str(exc.job_id)})


def _schedule_not_found(_: Request[Any, Any, Any], exc: ScheduleNotFound) -> Response[ErrorOut]:
    return error_response(HTTP_404_NOT_FOUND, str(exc), {"name": exc.name})


def _schedules_unsupported(
    _: Request[Any, Any, Any], exc: SchedulesUnsupported
) -> Response[ErrorOut]:
    return error_response(HTTP_501_NOT_IMPLEMENTED, str(exc))


def _illegal_transition(_: Request[Any, Any, Any], exc: IllegalTransition) -> Response[ErrorOut]:
    status = getattr(exc.status, "value", str(exc.status))
    detail = {"job_id": str(exc.job_id), "status": status, "action": exc.action}
    if isinstance(exc, UniqueKeyHeld):  # the active job to wait for, or to cancel
        detail["held_by"] = str(exc.held_by)
    return error_response(HTTP_409_CONFLICT, str(exc), detail)


def _idempotency_conflict(
    _: Request[Any, Any, Any], exc: IdempotencyConflict
) -> Response[ErrorOut]:
    return error_response(
        HTTP_422_UNPROCESSABLE_ENTITY,
        "Idempotency-Key was already used with a different request body",
        {"field": "Idempotency-Key"},
    )


STORE_NOT_ANSWERING = "the job store is not answering; retry later"


def store_unavailable_response(
    message: str = STORE_NOT_ANSWERING, **detail: str
) -> Response[ErrorOut]:
    return error_response(
        HTTP_503_SERVICE_UNAVAILABLE,
        message,
        {"retry_after": RETRY_AFTER_SECONDS, **detail},
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _schema_not_migrated(
    request: Request[Any, Any, Any], exc: SchemaNotMigrated
) -> Response[ErrorOut]:
    # a fixed message (no SQL, no table name): the operator's next step
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return store_unavailable_response(str(exc), reason="schema_not_migrated")


def _store_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorOut]:
    # The message may name a host, a user or a statement: log the type only.
    log.warning(
        "store unavailable during %s %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
    )
    return store_unavailable_response()


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorOut]:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal server error")


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorOut]:
    if exc.status_code == HTTP_503_SERVICE_UNAVAILABLE:
        return store_unavailable_response()
    if exc.detail == _CLIENT_GONE:  # Litestar raises a 500 for it: nobody reads the answer
        log.info(
            "%s %s: the client disconnected before its body arrived",
            request.method,
            request.url.path,
        )
        return error_response(HTTP_400_BAD_REQUEST, "the client disconnected")
    if exc.status_code >= HTTP_500_INTERNAL_SERVER_ERROR:
        return _internal_error(request, exc)
    if isinstance(exc, ValidationException):
        return _validation_error(exc)
    detail: dict[str, Any] | None = exc.extra if isinstance(exc.extra, dict) else None
    headers = exc.headers or {}
    if exc.status_code == HTTP_405_METHOD_NOT_ALLOWED and "allow" in _lower(headers):
        allowed = _lower(headers)["allow"]
        detail = {"allowed": [method.strip() for method in allowed.split(",")]}
    elif exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE and detail is None:
        max_bytes = getattr(request.app.state, "max_body_bytes", None)
        detail = {"max_bytes": max_bytes}
        return error_response(
            exc.status_code, f"the request body is larger than {max_bytes} bytes", detail, headers
        )
    elif exc.status_code == HTTP_400_BAD_REQUEST and exc.detail.startswith(
        "Invalid content-length"
    ):
        detail = {"field": "Content-Length"}
    return error_response(exc.status_code, exc.detail, detail, headers)


def _validation_error(exc: ValidationException) -> Response[ErrorOut]:
    """Litestar's own validation (query, path and header parameters, a missing body)."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    first: dict[str, Any] = problems[0] if problems and isinstance(problems[0], dict) else {}
    key = str(first.get("key") or "")
    message = str(first.get("message") or "is invalid")
    if key == "data":  # no body at all
        key, message = "body", "must be a JSON object (the body is empty)"
    elif message.startswith("Expected `str` matching regex"):
        message = "has a character that is not allowed"
    return _field_error(HTTP_400_BAD_REQUEST, _PARAMETER_NAMES.get(key, key or "request"), message)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


ExceptionHandler = Callable[[Request[Any, Any, Any], Any], Response[ErrorOut]]


def exception_handlers() -> dict[int | type[Exception], ExceptionHandler]:
    """The handlers every vesper app registers (Litestar picks the most specific class)."""
    handlers: dict[int | type[Exception], ExceptionHandler] = {
        HTTPException: _http_exception,
        InvalidRequest: _invalid_request,
        InvalidCursor: _invalid_cursor,
        JobNotFound: _job_not_found,
        ScheduleNotFound: _schedule_not_found,
        SchedulesUnsupported: _schedules_unsupported,
        IllegalTransition: _illegal_transition,
        IdempotencyConflict: _idempotency_conflict,
        SchemaNotMigrated: _schema_not_migrated,
        StoreUnavailable: _store_error,
        Exception: _internal_error,
    }
    return handlers
