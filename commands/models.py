"""Command models: the bounded, validated shape of each request body."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)

from aggregates.base import Role
from aggregates.journal_entry import Visibility
from aggregates.plans import MONTHLY_ENTRY_QUOTAS

__all__ = [
    "AddMember",
    "ChangeRole",
    "CreateEntry",
    "CreatePrompt",
    "CreateTeam",
    "EditEntry",
    "EditPrompt",
    "IssueApiKey",
    "RegisterWebhook",
    "RotateWebhookSecret",
    "ScheduleIn",
    "SetNotificationPreference",
    "UpdateTeam",
    "UpdateWebhook",
]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Body = Annotated[str, StringConstraints(max_length=100_000)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
Plan = Annotated[str, Field(json_schema_extra={"enum": sorted(MONTHLY_ENTRY_QUOTAS)})]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z_]+\.[a-z_]+$|^\*$", max_length=80)]


def _holds_nul(value: Any) -> bool:
    """Whether any string in ``value`` (keys included, at any depth) holds U+0000.
    A loop, not recursion: the body may be nested as deep as the JSON parser allows."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # PostgreSQL text and jsonb cannot hold NUL: an event carrying one would
        # stop every projection that stores it, for every team. Refused here,
        # before anything is appended.
        if _holds_nul(data):
            raise ValueError("text must not contain NUL characters (U+0000)")
        return data


class CreateTeam(Command):
    name: Name
    plan: Plan = "free"
    owner_email: EmailStr
    owner_display_name: Name | None = None


class UpdateTeam(Command):
    name: Name | None = None
    plan: Plan | None = None


class AddMember(Command):
    email: EmailStr
    display_name: Name
    role: Role = Role.MEMBER


class ChangeRole(Command):
    role: Role


class IssueApiKey(Command):
    user_id: UUID
    name: Name


class CreateEntry(Command):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [{"title": "Monday", "body": "Shipped sync.", "tags": ["release"]}]
        },
    )

    id: UUID | None = Field(default=None, description="Client-generated id (offline clients).")
    title: Title
    body: Body = ""
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    visibility: Visibility = Visibility.TEAM
    prompt_id: UUID | None = None


class EditEntry(Command):
    title: Title | None = None
    body: Body | None = None
    tags: list[Tag] | None = Field(default=None, max_length=20)
    visibility: Visibility | None = None


class ScheduleIn(Command):
    cron: Annotated[str, StringConstraints(strip_whitespace=True, min_length=9, max_length=100)]
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "UTC"


class CreatePrompt(Command):
    id: UUID | None = None
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2_000)]
    schedule: ScheduleIn | None = None


class EditPrompt(Command):
    text: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2_000)]
        | None
    ) = None
    schedule: ScheduleIn | None = None
    clear_schedule: bool = False


class RegisterWebhook(Command):
    url: Annotated[str, StringConstraints(strip_whitespace=True, min_length=8, max_length=2_000)]
    event_types: list[EventType] = Field(default_factory=list, max_length=50)
    description: Annotated[str, StringConstraints(max_length=500)] = ""


class UpdateWebhook(Command):
    url: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=8, max_length=2_000)]
        | None
    ) = None
    event_types: list[EventType] | None = Field(default=None, max_length=50)
    description: Annotated[str, StringConstraints(max_length=500)] | None = None


class RotateWebhookSecret(Command):
    overlap_seconds: int = Field(default=86_400, ge=0, le=7 * 86_400)


class SetNotificationPreference(Command):
    """A kind's flags to change; those left out keep their value."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={"examples": [{"email": True, "digest": True}]},
    )

    inbox: StrictBool | None = Field(default=None, description="Show it in the in-app inbox.")
    email: StrictBool | None = Field(default=None, description="Email it (see digest).")
    digest: StrictBool | None = Field(
        default=None, description="Email it in the daily digest instead of at once."
    )

    @model_validator(mode="after")
    def _something_to_set(self) -> SetNotificationPreference:
        if self.inbox is None and self.email is None and self.digest is None:
            raise ValueError("give at least one of inbox, email, digest")
        return self
