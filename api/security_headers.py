"""Security headers on every response, and CORS from settings.

The API answers JSON and event streams, never pages to render: nothing may
sniff a type, frame it or leak a referrer. Responses to requests that carried
credentials are private to their key, so no cache may keep them (unless the
route said otherwise, as event streams do). No Content-Security-Policy: the
only HTML served is /docs, whose scripts come from a CDN.
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.settings import Settings

__all__ = ["EXPOSED_HEADERS", "SecurityHeadersMiddleware", "install_cors"]

_ALWAYS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)

# What a browser client may read of a response (CORS hides the rest).
EXPOSED_HEADERS: Final = (
    "ETag",
    "Chronik-Position",
    "Idempotent-Replayed",
    "Retry-After",
    "X-Request-Id",
    "WWW-Authenticate",
)
# What a browser client may send (besides the CORS-safelisted ones).
_ALLOWED_HEADERS: Final = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "Chronik-Min-Position",
    "Last-Event-ID",
    "X-Request-Id",
    "X-Correlation-Id",
)
_METHODS: Final = ("GET", "POST", "PATCH", "DELETE")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, hsts_max_age: int = 0) -> None:
        self.app = app
        self._fixed = list(_ALWAYS)
        if hsts_max_age > 0:
            self._fixed.append((b"strict-transport-security", f"max-age={hsts_max_age}".encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        credentials = any(k == b"authorization" for k, _ in scope["headers"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self._fixed if k not in present]
                if credentials and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_cors(app: FastAPI, settings: Settings) -> None:
    """CORS for the configured origins; none configured: no CORS headers at
    all, and browsers keep other origins out. Credentials are bearer tokens a
    client sets itself, never cookies, so ``allow_credentials`` stays off."""
    if not settings.cors_origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=_METHODS,
        allow_headers=_ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=settings.cors_max_age,
    )
