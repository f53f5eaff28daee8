"""Strict decoding of JSON request bodies.

Litestar converts a body into its declared type with `strict=False`, which would take
`"5"` for a priority of 5. `StrictJSON[Model]` is a DTO that decodes the raw bytes with
msgspec in strict mode instead, and shows `Model` itself in the OpenAPI document.
Every failure becomes an `InvalidRequest` naming the field (`jobs[3].priority`), or a
415 for a body that does not say it is JSON. Duplicate keys are refused too, by the
handlers (`check_request_body`, which also bounds the nesting depth): two parsers that disagree on
`{"type": "a", "type": "b"}` are a classic smuggling vector.
"""

from __future__ import annotations

import array
import itertools
import json
import re
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import msgspec.inspect
from litestar import Request
from litestar.dto import MsgspecDTO
from litestar.exceptions import ClientException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE
from litestar.typing import FieldDefinition

from vesper.domain.errors import InvalidRequest
from vesper.entrypoints.http.deps import blocking

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Reference, Schema

T = TypeVar("T", bound=msgspec.Struct)

_AT_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED_FIELD = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<name>.*)`$")
_MAX_FIELD_CHARS = 120
# bodies up to this size are checked (and their jobs prepared) on the event loop
INLINE_BYTES = 16 * 1024
MAX_DEPTH = 128  # arrays and objects, the body's root included (serde_json's default)
_OPENING, _CLOSING = b"[{", b"]}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _OPENING + _CLOSING)
_BRACKET_STEPS = bytes.maketrans(_OPENING + _CLOSING, b"\x01\x01\xff\xff")
_INT_GOT_FLOAT = ("Expected `int`, got `float`", "Expected `int | null`, got `float`")


class UnsupportedMediaType(ClientException):
    status_code = HTTP_415_UNSUPPORTED_MEDIA_TYPE


def check_json_media_type(content_type: str | None) -> None:
    """Accept application/json (any charset parameter), `+json` types, or no header."""
    if content_type is None:
        return  # old clients sent none; the body still has to be JSON
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    raise UnsupportedMediaType(
        detail="Content-Type must be application/json",
        extra={"field": "Content-Type", "expected": "application/json"},
    )


def decode_strict(raw: bytes, model: type[T]) -> T:
    """Decode `raw` into `model` with no coercion; raise InvalidRequest naming the field.

    The one exception: a float with no fractional part (`5.0`) is taken where an integer
    is expected, because JSON Schema (and so the OpenAPI document) calls it an integer.
    `5.5`, `"5"` and `true` stay refused.
    """
    try:
        try:
            value = msgspec.json.decode(raw, type=model, strict=True)
        except msgspec.ValidationError as exc:
            if not str(exc).startswith(_INT_GOT_FLOAT):
                raise
            value = _decode_integral_floats(raw, model)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest("body", f"is not valid JSON ({exc})") from None
    except UnicodeDecodeError:
        raise InvalidRequest("body", "is not valid UTF-8") from None
    except RecursionError:  # msgspec guards its own recursion
        raise InvalidRequest("body", f"is nested deeper than {MAX_DEPTH} levels") from None
    return value


def check_depth(raw: bytes, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON (already valid) nested deeper than `limit` arrays and objects; the
    root counts as 1.

    msgspec guards its own recursion, but the Python code that walks a job afterwards
    (converters, the stdlib parser, a consumer) may not: a payload 500 levels deep
    overflowed the stack when the job was turned back into JSON. The scan stays in C:
    escapes are dropped (so every quote left delimits a string), the text between
    quotes is cut out, the remaining brackets become +1/-1 and a running sum gives the
    depth.
    """
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    steps = outside_strings.translate(_BRACKET_STEPS, _NOT_BRACKETS)
    if steps and max(itertools.accumulate(array.array("b", steps))) > limit:
        raise InvalidRequest("body", f"is nested deeper than {limit} levels")


def _decode_integral_floats(raw: bytes, model: type[T]) -> T:
    untyped = msgspec.json.decode(raw)
    return msgspec.convert(_integral(untyped, msgspec.inspect.type_info(model)), model, strict=True)


def _bare(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    return info.type if isinstance(info, msgspec.inspect.Metadata) else info


def _integral(value: Any, info: msgspec.inspect.Type) -> Any:
    """`value` with integral floats made ints wherever `info` expects an int (never
    inside an `Any`, such as a payload)."""
    if isinstance(info, msgspec.inspect.Metadata):
        return _integral(value, info.type)
    if isinstance(info, msgspec.inspect.IntType):
        return int(value) if isinstance(value, float) and value.is_integer() else value
    if isinstance(info, msgspec.inspect.UnionType):
        ints = [t for t in info.types if isinstance(_bare(t), msgspec.inspect.IntType)]
        return _integral(value, ints[0]) if ints else value
    if isinstance(info, msgspec.inspect.ListType) and isinstance(value, list):
        return [_integral(item, info.item_type) for item in value]
    if isinstance(info, msgspec.inspect.StructType) and isinstance(value, dict):
        for field in info.fields:
            if field.encode_name in value:
                value[field.encode_name] = _integral(value[field.encode_name], field.type)
    return value


def _invalid(message: str) -> InvalidRequest:
    match = _AT_PATH.match(message)
    assert match is not None  # the pattern matches any text
    text, path = match["message"], (match["path"] or "").removeprefix(".")
    path = path.partition("[...]")[0]  # msgspec's "some key of this object": name the object
    if named := _NAMED_FIELD.match(text):
        path = f"{path}.{named['name']}" if path else named["name"]
    if len(path) > _MAX_FIELD_CHARS:
        path = path[:_MAX_FIELD_CHARS] + "..."
    return InvalidRequest(path or "body", text[:200])


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise InvalidRequest("body", f"has a duplicate key {key[:_MAX_FIELD_CHARS]!r}")
        seen.add(key)
    raise AssertionError("unreachable: fewer keys than pairs means a duplicate")


def reject_duplicate_keys(raw: bytes) -> None:
    """Raise InvalidRequest if an object of `raw` (valid JSON) repeats a key.

    The stdlib parser (with a hook) is used because msgspec keeps the last value of a
    repeated key without a word.
    """
    try:
        json.loads(raw, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):  # msgspec accepted it: only a limit could differ
        raise InvalidRequest("body", "is not valid JSON") from None


class StrictJSON(MsgspecDTO[T]):
    """A request-body DTO: strict msgspec decoding, the model itself in OpenAPI.

    Use as `@post(..., dto=StrictJSON[Model], return_dto=None)` with
    `data: JSONBody[Model]`.
    """

    def decode_bytes(self, value: bytes) -> Any:
        check_json_media_type(self.asgi_connection.headers.get("content-type"))
        return decode_strict(value, self.model_type)

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        return msgspec.convert(value, self.model_type, strict=True)

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        return schema_creator.for_field_definition(
            FieldDefinition.from_annotation(
                cls.model_type, kwarg_definition=field_definition.kwarg_definition
            )
        )


def check_body(raw: bytes) -> None:
    """What msgspec does not check: the nesting depth, then duplicate keys."""
    check_depth(raw)
    reject_duplicate_keys(raw)


async def check_request_body(request: Request[Any, Any, Any]) -> None:
    """`check_body` on the request's (already read and decoded) body.

    Both checks walk the text in Python-speed steps (tens of milliseconds for a
    megabyte of small objects), so a large body is checked in a worker thread.
    """
    raw = await request.body()
    if len(raw) <= INLINE_BYTES:
        check_body(raw)
    else:
        await blocking(check_body, raw)
