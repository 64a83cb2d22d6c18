"""The request limits of one API process: a token bucket per API key (its
rate set by the key's role) and one per client address that pays for failed
authentications, with the counters an operator watches.

Buckets live in the process: with N API processes a key may make up to N
times its rate, and an address N times its failures (docs/operations.md,
"Limits and security").
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Final

from fastapi import Request
from prometheus_client import Counter

from aggregates.base import Actor, Role
from api.errors import ApiError
from api.rate_limit import Clock, KeyedBuckets
from infra.settings import Settings

__all__ = ["AUTH_FAILURES", "RATE_LIMITED", "AuthFailure", "RequestLimits", "client_address"]


class AuthFailure(StrEnum):
    """Why authentication failed: the bounded label set of the counter."""

    MISSING = "missing"  # no Bearer credentials at all
    MALFORMED = "malformed"  # not shaped like an API key
    INVALID_KEY = "invalid_key"  # unknown, revoked or wrong secret
    OPERATOR_TOKEN = "operator_token"  # noqa: S105 - a label: a wrong operator token


# Credentials sent and refused: these are what a guesser makes, and what the
# address pays for. A request with no credentials guesses nothing.
_GUESSES: Final = frozenset(
    {AuthFailure.MALFORMED, AuthFailure.INVALID_KEY, AuthFailure.OPERATOR_TOKEN}
)

AUTH_FAILURES: Final = Counter(
    "chronik_auth_failures",
    "Requests refused 401, by reason (this process).",
    labelnames=["reason"],
)
RATE_LIMITED: Final = Counter(
    "chronik_rate_limited",
    "Requests refused 429 by a rate limit, by what was limited (this process).",
    labelnames=["limit"],
)
for _reason in AuthFailure:
    AUTH_FAILURES.labels(_reason.value)
for _limit in ("key", "address"):
    RATE_LIMITED.labels(_limit)


def client_address(request: Request) -> str:
    # uvicorn puts the X-Forwarded-For address here for trusted proxies
    # (FORWARDED_ALLOW_IPS); otherwise it is the peer's.
    return request.client.host if request.client is not None else "unknown"


def _rate_limited(limit: str, waiting: float, message: str) -> ApiError:
    RATE_LIMITED.labels(limit).inc()
    seconds = max(1, math.ceil(waiting))
    return ApiError(
        429,
        "RATE_LIMITED",
        message,
        details={"retry_after": seconds},
        headers={"Retry-After": str(seconds)},
    )


class RequestLimits:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self._rates: dict[Role, float] = {
            Role.OWNER: settings.rate_limit_owner,
            Role.ADMIN: settings.rate_limit_admin,
            Role.MEMBER: settings.rate_limit_member,
            Role.AUDITOR: settings.rate_limit_auditor,
        }
        self._burst = settings.rate_limit_burst_seconds
        self._failure_capacity = float(settings.auth_failure_limit)
        self._failure_rate = settings.auth_failure_limit / settings.auth_failure_window
        extra = {} if clock is None else {"clock": clock}
        self._keys = KeyedBuckets(settings.rate_limit_max_buckets, **extra)
        self._addresses = KeyedBuckets(settings.rate_limit_max_buckets, **extra)

    def admit_key(self, actor: Actor) -> None:
        """Takes a token of the key's bucket, or raises 429 RATE_LIMITED."""
        rate = self._rates[actor.role]
        if rate == 0:
            return
        key = actor.key_id or f"user:{actor.user_id}"
        waiting = self._keys.take(key, rate, max(1.0, rate * self._burst))
        if waiting > 0:
            raise _rate_limited("key", waiting, "too many requests for this API key")

    def admit_address(self, address: str) -> None:
        """Raises 429 RATE_LIMITED while ``address`` has spent its failed
        authentications; takes nothing, so good requests never use it up."""
        waiting = self._addresses.wait(address)
        if waiting > 0:
            raise _rate_limited(
                "address", waiting, "too many failed authentications from this address"
            )

    def failed(self, address: str, reason: AuthFailure) -> None:
        """Counts a refused authentication; a guess costs the address a token.
        Success never refunds: a valid key must not buy an attacker more guesses."""
        AUTH_FAILURES.labels(reason.value).inc()
        if reason in _GUESSES:
            self._addresses.charge(address, self._failure_rate, self._failure_capacity)
