"""The one error envelope: ``{"error": {"code", "message", "details"?}, "request_id"}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson
import psycopg
import structlog
from eventsourcing import persistence as es_persistence
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from aggregates.base import DomainError
from api.responses import OrjsonResponse
from commands.ports import Unavailable
from projections.pagination import InvalidCursor
from projections.sync import CursorExpired

__all__ = [
    "ERROR_RESPONSES",
    "SYNC_ERROR_RESPONSES",
    "SYNC_ERROR_STATUSES",
    "ApiError",
    "ErrorEnvelope",
    "error_response",
    "error_responses",
    "install_error_handlers",
    "validation_error",
]

log = structlog.get_logger(__name__)

_STATUS_CODES = {
    400: "MALFORMED",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    410: "GONE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    503: "UNAVAILABLE",
}


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Stable, machine-readable: MALFORMED, NOT_FOUND, ...")
    message: str = Field(description="For people; may change.")
    details: dict[str, Any] | None = Field(
        default=None, description="Machine-readable specifics, e.g. `fields` of a 422."
    )


class ErrorEnvelope(BaseModel):
    """Every error response's body (documented in OpenAPI for each error status)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorBody
    request_id: str = Field(description="Also in the X-Request-Id header; quote it in reports.")


_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "MALFORMED: the body is not JSON, or a header or cursor is malformed.",
    401: "UNAUTHENTICATED: no valid API key (or operator token).",
    403: "FORBIDDEN: the key's role may not do this.",
    404: "NOT_FOUND: no such resource for this key (another team's included).",
    409: "VERSION_CONFLICT, IDEMPOTENCY_MISMATCH or a domain rule (QUOTA_EXCEEDED, ...).",
    410: "CURSOR_EXPIRED: sync from no cursor (`details.reset` is true).",
    413: "PAYLOAD_TOO_LARGE: the body exceeds the configured limit.",
    422: "VALIDATION_ERROR: invalid fields, listed in `details.fields`.",
    429: "RATE_LIMITED: retry after the Retry-After header's seconds.",
    500: "INTERNAL: an unexpected error; nothing internal is revealed.",
    503: "UNAVAILABLE or STALE_READ: a dependency is down or a read model is behind.",
}


_ENVELOPE_REF: Final = {"$ref": "#/components/schemas/ErrorEnvelope"}


def error_responses(*statuses: int, model: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for these statuses, each the envelope as
    application/json, so clients and contract tests know every error a route
    may answer. ``model=False`` for routes whose success is not JSON (an event
    stream): FastAPI would file the model under the route's media type; the
    schema is registered by the other routes."""
    entries: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": _ERROR_DESCRIPTIONS[status],
            "content": {"application/json": {"schema": dict(_ENVELOPE_REF)}},
        }
        if model:
            entry["model"] = ErrorEnvelope
        entries[status] = entry
    return entries


# What any authenticated route may answer besides its success (410 only where
# a cursor can expire: the sync routes add it).
ERROR_STATUSES: Final = (400, 401, 403, 404, 409, 413, 422, 429, 500, 503)
SYNC_ERROR_STATUSES: Final = (*ERROR_STATUSES, 410)
ERROR_RESPONSES: Final = error_responses(*ERROR_STATUSES)
SYNC_ERROR_RESPONSES: Final = error_responses(*SYNC_ERROR_STATUSES)


class ApiError(Exception):
    """Raised anywhere in a request to answer with the envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def validation_error(
    field: str, message: str, *, kind: str = "value_error", **extra: Any
) -> ApiError:
    """A 422 for one field, in the form request validation gives (``details.fields``),
    for checks a query or body model cannot express; ``extra`` joins the details."""
    return ApiError(
        422,
        "VALIDATION_ERROR",
        message,
        details={"fields": [{"field": field, "message": message, "type": kind}], **extra},
    )


def error_payload(code: str, message: str, state: Mapping[str, Any]) -> bytes:
    """The envelope as bytes, for middleware that answers before routing."""
    return orjson.dumps(
        {"error": {"code": code, "message": message}, "request_id": state.get("request_id")}
    )


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> OrjsonResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    request_id = getattr(request.state, "request_id", None)
    return OrjsonResponse(
        {"error": error, "request_id": request_id}, status_code=status, headers=headers
    )


# Failures that mean "the database is down or saturated", not "a bug": 503.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    Unavailable,
    psycopg.OperationalError,
    es_persistence.OperationalError,
    es_persistence.InterfaceError,
    PoolTimeout,
)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors()
    ]


# Refusals by rules of the domain are 409: the request was understood, but the
# state of the resource does not allow it (a deleted entry, the last owner...).
_DOMAIN_STATUS = {
    "NOT_FOUND": 404,
    "FORBIDDEN": 403,
    "UNAUTHENTICATED": 401,
    "VALIDATION_ERROR": 422,
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> OrjsonResponse:
        status = _DOMAIN_STATUS.get(exc.code, 409)
        return error_response(request, status, exc.code, exc.message, details=exc.details or None)

    async def _unavailable(request: Request, exc: Exception) -> OrjsonResponse:
        log.warning("dependency unavailable", error=str(exc), kind=type(exc).__name__)
        return error_response(
            request, 503, "UNAVAILABLE", "a dependency is unavailable; retry shortly",
            headers={"Retry-After": "1"},
        )  # fmt: skip

    for unavailable in _UNAVAILABLE:
        app.add_exception_handler(unavailable, _unavailable)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> OrjsonResponse:
        return error_response(
            request, exc.status, exc.code, exc.message, details=exc.details, headers=exc.headers
        )

    @app.exception_handler(InvalidCursor)
    async def _cursor(request: Request, exc: InvalidCursor) -> OrjsonResponse:
        return error_response(request, 400, "MALFORMED", str(exc), details={"field": "cursor"})

    @app.exception_handler(CursorExpired)
    async def _expired(request: Request, exc: CursorExpired) -> OrjsonResponse:
        return error_response(request, 410, "CURSOR_EXPIRED", str(exc), details={"reset": True})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> OrjsonResponse:
        errors = _field_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return error_response(request, 400, "MALFORMED", "the body is not valid JSON")
        return error_response(
            request, 422, "VALIDATION_ERROR", "the request has invalid fields",
            details={"fields": errors},
        )  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        code = _STATUS_CODES.get(exc.status_code, "ERROR")
        message = exc.detail if isinstance(exc.detail, str) else code.lower()
        return error_response(request, exc.status_code, code, message, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> OrjsonResponse:
        log.exception("unhandled error", path=request.url.path)
        return error_response(request, 500, "INTERNAL", "an internal error occurred")
