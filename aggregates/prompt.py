"""A writing prompt a team's managers set, optionally on a schedule."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Final
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsourcing.domain import event
from pydantic import BaseModel, ConfigDict

from aggregates.base import Actor, Aggregate
from aggregates.errors import (
    Forbidden,
    InvalidValue,
    NotFound,
    PromptAlreadyIssued,
    PromptArchived,
    PromptNotScheduled,
    require_aware,
    require_text,
)

__all__ = ["UNCHANGED", "Prompt", "Schedule", "Unchanged", "check_schedule"]


class Schedule(BaseModel):
    """When a prompt is issued: a 5-field cron line read in ``timezone``.

    The model itself accepts any strings so that stored history always loads,
    even if a zone later leaves the tz database; new values pass ``check_schedule``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cron: str
    timezone: str


class Unchanged(Enum):
    """Marks an argument left as it is, where ``None`` already means "remove"."""

    UNCHANGED = "unchanged"


UNCHANGED: Final = Unchanged.UNCHANGED

_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_WEEKDAYS: Final = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
# (name, lowest, highest, names allowed in place of numbers)
_CRON_FIELDS: Final[tuple[tuple[str, int, int, Mapping[str, int]], ...]] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
_NUMBER = re.compile(r"[0-9]{1,2}")


def _cron_value(text: str, low: int, high: int, names: Mapping[str, int]) -> int | None:
    if _NUMBER.fullmatch(text):
        number = int(text)
        return number if low <= number <= high else None
    return names.get(text.lower())


def _cron_item_ok(item: str, low: int, high: int, names: Mapping[str, int]) -> bool:
    base, slash, step = item.partition("/")
    if slash and not (_NUMBER.fullmatch(step) and int(step) >= 1):
        return False
    if base == "*":
        return True
    first, dash, last = base.partition("-")
    start = _cron_value(first, low, high, names)
    end = _cron_value(last, low, high, names) if dash else start
    return start is not None and end is not None and start <= end


def _check_cron(cron: str) -> str:
    fields = cron.split()
    if len(fields) != len(_CRON_FIELDS):
        raise InvalidValue("cron must have 5 fields", field="schedule.cron", cron=cron)
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        if not all(_cron_item_ok(item, low, high, names) for item in text.split(",")):
            raise InvalidValue(
                f"cron {name} field {text!r} is not valid", field="schedule.cron", cron=cron
            )
    return " ".join(fields)


def _check_timezone(timezone: str) -> str:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidValue(
            "timezone is not a known IANA time zone", field="schedule.timezone"
        ) from None
    return timezone


def check_schedule(schedule: Schedule) -> Schedule:
    """The schedule with its cron line's spacing normalised, or InvalidValue.

    Only syntax and ranges are checked here; when it fires is the scheduler's job.
    """
    return Schedule(cron=_check_cron(schedule.cron), timezone=_check_timezone(schedule.timezone))


class Prompt(Aggregate):
    @classmethod
    def create(
        cls, actor: Actor, *, id: UUID, text: str, schedule: Schedule | None = None
    ) -> Prompt:
        _require_manager(actor)
        return cls(
            id=id,
            team_id=actor.team_id,
            text=require_text(text, field="text"),
            schedule=None if schedule is None else check_schedule(schedule),
        )

    @event("Created")
    def __init__(self, *, id: UUID, team_id: UUID, text: str, schedule: Schedule | None) -> None:
        self.team_id = team_id
        self.text = text
        self.schedule = schedule
        self.archived = False
        # The latest due time issued; due times are issued in increasing order.
        self.last_issued_at: datetime | None = None

    def edit(
        self,
        actor: Actor,
        *,
        text: str | None = None,
        schedule: Schedule | Unchanged | None = UNCHANGED,
    ) -> None:
        """Changes the text or the schedule (``None`` removes it); no change, no event."""
        self._require_in_team(actor)
        _require_manager(actor)
        self._require_not_archived()
        new_text = self.text if text is None else require_text(text, field="text")
        new_schedule = self.schedule
        if not isinstance(schedule, Unchanged):
            new_schedule = None if schedule is None else check_schedule(schedule)
        if (new_text, new_schedule) != (self.text, self.schedule):
            self._edited(text=new_text, schedule=new_schedule)

    def archive(self, actor: Actor) -> None:
        self._require_in_team(actor)
        _require_manager(actor)
        self._require_not_archived()
        self._archived()

    def issue(self, due_at: datetime, *, schedule: Schedule | None = None) -> None:
        """Records that the prompt fell due at ``due_at`` (Chronik's own act: the
        scheduler's, no member's), with the text it has at that moment.

        Refused (never recorded) for an archived prompt, one without a schedule
        or, given ``schedule``, one whose schedule is no longer that one (the
        scheduler computed ``due_at`` from a stale view), and for any ``due_at``
        not after the last issued one (``PromptAlreadyIssued``).

        Exactly once: this guard and the event store's optimistic concurrency
        together make each due time issued at most once however many schedulers
        run. Two that both decide to issue the same due time append the same
        next version of this prompt; the store lets one commit and the other
        conflict; the loser's command loads the prompt again, now with that
        due time as ``last_issued_at``, and this guard refuses it. No lock is
        needed for correctness (the scheduler's advisory lock only saves work),
        and a due time older than one already issued can never come later.
        """
        due = require_aware(due_at, field="due_at")
        self._require_not_archived()
        if self.schedule is None:
            raise PromptNotScheduled("prompt has no schedule", prompt_id=str(self.id))
        if schedule is not None and schedule != self.schedule:
            raise PromptNotScheduled(
                "prompt's schedule has changed", prompt_id=str(self.id), due_at=due.isoformat()
            )
        last = self.last_issued_at
        if last is not None and due <= last:
            raise PromptAlreadyIssued(
                "prompt was issued at or after that due time already",
                prompt_id=str(self.id),
                due_at=due.isoformat(),
                last_issued_at=last.isoformat(),
            )
        self._issued(due_at=due, text=self.text)

    def _require_in_team(self, actor: Actor) -> None:
        if actor.team_id != self.team_id:
            raise NotFound("prompt not found", prompt_id=str(self.id))

    def _require_not_archived(self) -> None:
        if self.archived:
            raise PromptArchived("prompt is archived", prompt_id=str(self.id))

    @event("Edited")
    def _edited(self, text: str, schedule: Schedule | None) -> None:
        self.text = text
        self.schedule = schedule

    @event("Archived")
    def _archived(self) -> None:
        self.archived = True

    @event("Issued")
    def _issued(self, due_at: datetime, text: str) -> None:
        self.last_issued_at = due_at


def _require_manager(actor: Actor) -> None:
    if not actor.is_manager:
        raise Forbidden("only owners and admins may manage prompts", role=actor.role.value)
