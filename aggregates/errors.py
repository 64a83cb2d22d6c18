"""The domain's refusals, each with the public error code clients see.

Every error carries a human message and JSON-friendly ``details`` so the API can
render it without knowing the rule that raised it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aggregates.base import DomainError, Forbidden, NotFound

__all__ = [
    "DomainError",
    "EntryDeleted",
    "EntryNotDeleted",
    "Forbidden",
    "InvalidValue",
    "KeyExists",
    "KeyRevoked",
    "LastOwner",
    "MemberExists",
    "NotFound",
    "PromptAlreadyIssued",
    "PromptArchived",
    "PromptNotScheduled",
    "QuotaExceeded",
    "UnknownKey",
    "UnknownMember",
    "UnknownPlan",
    "WebhookDeleted",
    "WebhookDisabled",
    "require_aware",
    "require_text",
]


class InvalidValue(DomainError):
    """A value the domain cannot accept; ``details["field"]`` names it."""

    code = "VALIDATION_ERROR"


def require_text(value: str, *, field: str) -> str:
    """``value`` without surrounding blanks; refuses text that is blank."""
    text = value.strip()
    if not text:
        raise InvalidValue(f"{field} must not be blank", field=field)
    return text


def require_aware(value: datetime, *, field: str) -> datetime:
    """``value`` in UTC; refuses naive datetimes, which mean different instants on
    different servers, where stored events must mean one instant."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidValue(f"{field} must carry a time zone", field=field)
    return value.astimezone(UTC)


class UnknownPlan(InvalidValue):
    pass


class UnknownMember(NotFound):
    pass


class UnknownKey(NotFound):
    pass


class MemberExists(DomainError):
    code = "MEMBER_EXISTS"


class LastOwner(DomainError):
    """A team must always keep an owner, or nobody could change its plan or owners."""

    code = "LAST_OWNER"


class KeyExists(DomainError):
    code = "KEY_EXISTS"


class KeyRevoked(DomainError):
    code = "KEY_REVOKED"


class EntryDeleted(DomainError):
    code = "ENTRY_DELETED"


class EntryNotDeleted(DomainError):
    code = "ENTRY_NOT_DELETED"


class PromptArchived(DomainError):
    code = "PROMPT_ARCHIVED"


class WebhookDisabled(DomainError):
    code = "WEBHOOK_DISABLED"


class WebhookDeleted(DomainError):
    code = "WEBHOOK_DELETED"


class QuotaExceeded(DomainError):
    code = "QUOTA_EXCEEDED"


class PromptNotScheduled(DomainError):
    """The prompt has no schedule (any more), or not the one a due time was
    computed from: nothing falls due."""

    code = "PROMPT_NOT_SCHEDULED"


class PromptAlreadyIssued(DomainError):
    """That due time, or a later one, was issued already: a scheduler that lost
    a race to another one is refused here, and that is not an error."""

    code = "PROMPT_ALREADY_ISSUED"
