"""Annotated dependencies shared by the routers."""

from __future__ import annotations

import hmac
import re
from typing import Annotated, cast
from uuid import UUID

from fastapi import Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool

from aggregates.base import Actor
from api.errors import ApiError
from api.request_limits import AuthFailure, RequestLimits, client_address
from commands.auth import Authenticated, parse_key
from commands.context import CommandContext
from commands.errors import Unauthenticated
from infra.bootstrap import Services

__all__ = [
    "CommandCtx",
    "CurrentActor",
    "OperatorToken",
    "ServicesDep",
    "SignedIn",
    "TeamActor",
    "signed_in",
]

_IF_MATCH = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


# Every dependency here is async: FastAPI runs a plain ``def`` dependency in
# its thread pool, a hand-over each way for what is only an attribute read.
async def get_services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


ServicesDep = Annotated[Services, Depends(get_services)]


def request_limits(request: Request) -> RequestLimits:
    return cast(RequestLimits, request.app.state.limits)


def _bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _refused(request: Request, reason: AuthFailure, message: str) -> ApiError:
    request_limits(request).failed(client_address(request), reason)
    return ApiError(401, "UNAUTHENTICATED", message, headers={"WWW-Authenticate": "Bearer"})


async def signed_in(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Authenticated:
    """The key's member, after two limits: the client address's failed
    authentications (before any key is checked, so guesses stay slow), then
    the key's own request rate."""
    limits = request_limits(request)
    limits.admit_address(client_address(request))
    token = _bearer(authorization)
    if token is None:
        raise _refused(request, AuthFailure.MISSING, "send Authorization: Bearer <key>")
    try:
        parse_key(token)
    except Unauthenticated as exc:
        raise _refused(request, AuthFailure.MALFORMED, exc.message) from None
    try:
        # Known key, current team, secret verified before: no thread hand-over.
        signed = services.authenticator.authenticate_from_memory(token)
        if signed is None:
            signed = await run_in_threadpool(services.authenticator.authenticate, token)
    except Unauthenticated as exc:
        raise _refused(request, AuthFailure.INVALID_KEY, exc.message) from None
    limits.admit_key(signed.actor)
    return signed


SignedIn = Annotated[Authenticated, Depends(signed_in)]


async def current_actor(signed_in: SignedIn) -> Actor:
    return signed_in.actor


CurrentActor = Annotated[Actor, Depends(current_actor)]


def _in_team(actor: Actor, team_id: UUID) -> Actor:
    # A key of another team learns nothing, not even that the team exists.
    if actor.team_id != team_id:
        raise ApiError(404, "NOT_FOUND", "team not found")
    return actor


# Each dependency FastAPI solves costs tens of microseconds a request, so the
# team check is a call in each dependency that needs it, not one more layer.
async def team_actor(signed_in: SignedIn, team_id: Annotated[UUID, Path()]) -> Actor:
    return _in_team(signed_in.actor, team_id)


TeamActor = Annotated[Actor, Depends(team_actor)]


async def command_context(
    request: Request,
    *,
    signed_in: SignedIn,
    team_id: Annotated[UUID, Path()],
    idempotency_key: Annotated[str | None, Header()] = None,
    if_match: Annotated[str | None, Header()] = None,
    x_correlation_id: Annotated[str | None, Header()] = None,
) -> CommandContext:
    actor = _in_team(signed_in.actor, team_id)
    expected_version = None
    if if_match is not None:
        match = _IF_MATCH.match(if_match.strip())
        if match is None:
            raise ApiError(400, "MALFORMED", 'If-Match must be an ETag such as "3"')
        expected_version = int(match.group(1))
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ApiError(400, "MALFORMED", "Idempotency-Key must be 1-200 visible ASCII characters")
    request_id = getattr(request.state, "request_id", None)
    correlation = x_correlation_id if x_correlation_id and len(x_correlation_id) <= 200 else None
    return CommandContext(
        actor=actor,
        request_id=request_id,
        correlation_id=correlation or request_id,
        idempotency_key=idempotency_key,
        expected_version=expected_version,
        team=signed_in.team,
    )


CommandCtx = Annotated[CommandContext, Depends(command_context)]


async def operator_token(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    request_limits(request).admit_address(client_address(request))
    expected = services.settings.operator_token
    token = _bearer(authorization)
    if token is None:
        raise _refused(request, AuthFailure.MISSING, "an operator token is required")
    # Constant time: how much of a guess matched must not show in the timing.
    if expected is None or not hmac.compare_digest(
        token.encode(), expected.get_secret_value().encode()
    ):
        raise _refused(request, AuthFailure.OPERATOR_TOKEN, "an operator token is required")


OperatorToken = Annotated[None, Depends(operator_token)]
