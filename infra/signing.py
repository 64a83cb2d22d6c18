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
from typing import Final

__all__ = ["USER_AGENT", "sign", "webhook_headers"]

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (a prefix, not a secret)
USER_AGENT: Final = "Chronik-Webhooks/1"


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
    order given (newest first, as ``infra.deliveries.endpoints_of`` gives them)."""
    if not secrets:
        raise ValueError("a webhook needs at least one signing secret")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
