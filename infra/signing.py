"""Standard Webhooks signing (https://www.standardwebhooks.com).

A delivery carries ``webhook-id`` (the same on every attempt), ``webhook-timestamp``
(Unix seconds of this attempt) and ``webhook-signature``: ``v1,<base64 HMAC-SHA256>``
of ``"{id}.{timestamp}.{body}"`` under the key that the ``whsec_`` secret encodes in
standard base64. While a rotation's overlap lasts, every secret that still signs
adds its signature, space-separated, so receivers holding either secret verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any, Final
from uuid import UUID

import psycopg
from psycopg.rows import tuple_row

__all__ = [
    "SELECT_SIGNING_SECRETS",
    "USER_AGENT",
    "sign",
    "signing_secrets",
    "signing_secrets_async",
    "webhook_headers",
]

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (a prefix, not a secret)
USER_AGENT: Final = "Chronik-Webhooks/1"

# The secrets that sign now, newest first: the current one (valid_until NULL)
# and any rotated-out one whose overlap has not ended.
SELECT_SIGNING_SECRETS: Final = """
SELECT secret FROM webhook_secrets
WHERE endpoint_id = %s AND (valid_until IS NULL OR valid_until > now())
ORDER BY created_at DESC, secret_id
"""


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``"{msg_id}.{timestamp}.{body}"``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The headers of one delivery attempt; one signature per secret, in the
    order given (newest first, as :func:`signing_secrets` returns them)."""
    if not secrets:
        raise ValueError("a webhook needs at least one signing secret")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def signing_secrets(conn: psycopg.Connection[Any], endpoint_id: UUID) -> list[str]:
    """The endpoint's secrets that sign now, newest first."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(SELECT_SIGNING_SECRETS, (endpoint_id,)).fetchall()
    return [str(row[0]) for row in rows]


async def signing_secrets_async(conn: psycopg.AsyncConnection[Any], endpoint_id: UUID) -> list[str]:
    """:func:`signing_secrets` on an async connection."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(SELECT_SIGNING_SECRETS, (endpoint_id,))
        rows = await cur.fetchall()
    return [str(row[0]) for row in rows]
