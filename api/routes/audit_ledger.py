"""The hash chain over the whole log: verify it, and read its head.

The chain spans every team's events, so these routes are not team-scoped:
they reveal positions and hashes, never an event's content. The operator
token may call them, and so may an owner's, an admin's or an auditor's key
of any team (auditors keep copies of the head outside the system).
"""

from __future__ import annotations

import hmac
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, model_validator

from api.dependencies import ServicesDep, signed_in
from api.documented import RESOURCE
from api.errors import ERROR_RESPONSES, ApiError
from api.responses import OrjsonResponse
from infra import audit_verify
from infra.audit_verify import LedgerMissing
from infra.bootstrap import Services
from infra.projection_wiring import checkpoint_signer, connector

__all__ = ["router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=ERROR_RESPONSES)

# One verification at a time per process: each reads up to the configured cap.
_VERIFYING = threading.Lock()


async def audit_reader(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    expected = services.settings.operator_token
    _, _, token = (authorization or "").partition(" ")
    if expected is not None and hmac.compare_digest(
        token.strip().encode(), expected.get_secret_value().encode()
    ):
        return
    actor = (await signed_in(request, services, authorization)).actor
    if not actor.may_audit:
        raise ApiError(403, "FORBIDDEN", "owners, admins and auditors may read the audit chain")


AuditReader = Annotated[None, Depends(audit_reader)]


class VerifyQuery(BaseModel):
    from_: int = Field(
        default=0, ge=0, le=2**62, alias="from", description="First position to check."
    )
    to: int | None = Field(
        default=None, ge=0, le=2**62, description="Last position to check; default: the head."
    )

    @model_validator(mode="after")
    def _ordered(self) -> VerifyQuery:
        if self.to is not None and self.to < self.from_:
            raise ValueError("`to` must not be before `from`")
        return self


def _ledger_missing(exc: LedgerMissing) -> ApiError:
    return ApiError(503, "UNAVAILABLE", str(exc), headers={"Retry-After": "5"})


class Busy(Exception):
    pass


def _verify(services: Services, query: VerifyQuery) -> dict[str, Any]:
    # Taken in the worker thread, so it is held until the check ends even if
    # the client goes away first.
    if not _VERIFYING.acquire(blocking=False):
        raise Busy
    settings = services.settings
    try:
        with connector(services.target, name="chronik-audit-verify")() as conn:
            report = audit_verify.verify(
                conn,
                first=query.from_,
                last=query.to,
                signer=checkpoint_signer(settings),
                checkpoint_every=settings.audit_checkpoint_every,
                max_events=settings.audit_verify_max_events,
            )
    finally:
        _VERIFYING.release()
    data: dict[str, Any] = {
        "ok": report.ok,
        "checked": report.checked,
        "from": report.first_position,
        "last_position": report.last_position,
        "last_hash": report.last_hash,
        "first_bad_position": report.first_bad_position,
        "problem": report.problem,
        "checkpoints_checked": report.checkpoints_checked,
        "signatures_checked": report.signatures_checked,
        "truncated": report.truncated,
        "head_position": report.head_position,
        "head_hash": report.head_hash,
    }
    if report.truncated and report.last_position is not None:
        data["next_from"] = report.last_position + 1
    return data


@router.get(
    "/verify", summary="Recompute the hash chain from the stored events", responses=RESOURCE
)
async def verify(
    reader: AuditReader, services: ServicesDep, query: Annotated[VerifyQuery, Query()]
) -> OrjsonResponse:
    try:
        data = await run_in_threadpool(_verify, services, query)
    except Busy:
        raise ApiError(
            429, "RATE_LIMITED", "a verification is already running; retry shortly",
            details={"retry_after": 5}, headers={"Retry-After": "5"},
        ) from None  # fmt: skip
    except LedgerMissing as exc:
        raise _ledger_missing(exc) from None
    return OrjsonResponse({"data": data})


def _head(services: Services) -> dict[str, Any]:
    with services.pool.connection() as conn:
        found = audit_verify.head(conn)
    return {
        "head_position": found.position,
        "head_count": found.count,
        "head_hash": found.chain_hash,
        "unchained_events": found.unchained_events,
        "checkpoint": found.checkpoint,
    }


@router.get(
    "/head",
    summary="The newest link of the hash chain and the newest signed checkpoint",
    responses=RESOURCE,
)
async def head(reader: AuditReader, services: ServicesDep) -> OrjsonResponse:
    try:
        data = await run_in_threadpool(_head, services)
    except LedgerMissing as exc:
        raise _ledger_missing(exc) from None
    return OrjsonResponse({"data": data})
