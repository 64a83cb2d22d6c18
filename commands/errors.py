"""Refusals of the command layer (the domain's own are in aggregates.errors)."""

from __future__ import annotations

from aggregates.base import DomainError

__all__ = ["AlreadyExists", "IdempotencyMismatch", "Unauthenticated", "VersionConflict"]


class VersionConflict(DomainError):
    code = "VERSION_CONFLICT"


class IdempotencyMismatch(DomainError):
    code = "IDEMPOTENCY_MISMATCH"


class AlreadyExists(DomainError):
    code = "ALREADY_EXISTS"


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"
