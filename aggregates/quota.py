"""How many journal entries a team has written in one calendar month.

One aggregate per (team, month), under an id anyone can compute, so that two
commands reserving at once load the same aggregate and the event store's version
check lets only one of them through; the command layer retries the other. The
rules here therefore only need to hold for one command after another.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from aggregates.base import Aggregate
from aggregates.errors import InvalidValue, QuotaExceeded

__all__ = ["THRESHOLD_PERCENT", "MonthlyQuota"]

THRESHOLD_PERCENT: Final = 90
_NAMESPACE: Final = uuid5(NAMESPACE_URL, "urn:chronik:monthly-quota")
_MONTH: Final = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


def _check_month(month: str) -> str:
    if not _MONTH.fullmatch(month):
        raise InvalidValue("month must be YYYY-MM", field="month", month=month)
    return month


def _id_for(team_id: UUID, month: str) -> UUID:
    return uuid5(_NAMESPACE, f"{team_id}/{_check_month(month)}")


def _month_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def _month_of_v1(state: dict[str, Any]) -> str:
    """The month a v1 ThresholdReached (stored without one) concerns.

    Its timestamp's month, except when the command chose the month just before
    midnight at a month's end and the event was stamped just after: then it is
    the month before. The aggregate id is derived from (team, month), and the
    metadata names the team, so the id settles which; with no team to check
    (never the case for events saved through the event store), the timestamp's.
    """
    stamped = state["timestamp"]
    if isinstance(stamped, str):
        stamped = datetime.fromisoformat(stamped)
    stamped = stamped.astimezone(UTC)
    candidates = (_month_of(stamped), _month_of(stamped.replace(day=1) - timedelta(days=1)))
    team_id = (state.get("metadata") or {}).get("team_id")
    if team_id is not None:
        for month in candidates:
            if _id_for(UUID(str(team_id)), month) == UUID(str(state["originator_id"])):
                return month
    return candidates[0]


class MonthlyQuota(Aggregate):
    """Entries are counted when written and never given back: deleting an entry
    does not return quota, or deleting and rewriting would make the limit moot."""

    @staticmethod
    def id_for(team_id: UUID, month: str) -> UUID:
        return _id_for(team_id, month)

    @classmethod
    def start(cls, team_id: UUID, month: str) -> MonthlyQuota:
        """Opens the month's count. The limit is not fixed here: it is the plan's
        limit at each reservation, so a mid-month plan change applies at once."""
        return cls(id=cls.id_for(team_id, month), team_id=team_id, month=month)

    @event("Started")
    def __init__(self, *, id: UUID, team_id: UUID, month: str) -> None:
        self.team_id = team_id
        self.month = month
        self.used = 0
        self.threshold_reached = False
        self.exhausted = False

    def reserve(self, entry_id: UUID, limit: int) -> None:
        """Counts one more entry against ``limit``, or refuses when none is left.

        The caller saves this with the entry itself, in one transaction, so an entry
        is counted exactly when it is written.
        """
        if limit < 0:
            raise InvalidValue("limit must not be negative", field="limit", limit=limit)
        if self.used >= limit:
            raise QuotaExceeded(
                "monthly entry quota is used up",
                limit=limit,
                used=self.used,
                month=self.month,
            )
        self._entry_counted(entry_id=entry_id, limit=limit)
        # Once per month, whatever the limit does later: a warning, not a meter.
        if not self.threshold_reached and self.used * 100 >= limit * THRESHOLD_PERCENT:
            self._threshold_reached(
                threshold_percent=THRESHOLD_PERCENT, used=self.used, limit=limit, month=self.month
            )
        # Once per month too: the entry that takes the last of the limit.
        if not self.exhausted and self.used >= limit:
            self._exhausted(used=self.used, limit=limit, month=self.month)

    @event("EntryCounted")
    def _entry_counted(self, entry_id: UUID, limit: int) -> None:
        self.used += 1

    class ThresholdReached(Aggregate.Event):
        """Version 2 carries the month it concerns; version 1 did not (upcast below)."""

        class_version: ClassVar[int] = 2

        threshold_percent: int
        used: int
        limit: int
        month: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["month"] = _month_of_v1(state)

    @event(ThresholdReached)
    def _threshold_reached(self, threshold_percent: int, used: int, limit: int, month: str) -> None:
        self.threshold_reached = True

    @event("Exhausted")
    def _exhausted(self, used: int, limit: int, month: str) -> None:
        self.exhausted = True
