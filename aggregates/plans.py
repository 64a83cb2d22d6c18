"""Plans and the number of journal entries each allows per calendar month."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from aggregates.errors import UnknownPlan

__all__ = ["DEFAULT_PLAN", "MONTHLY_ENTRY_QUOTAS", "quota_for"]

MONTHLY_ENTRY_QUOTAS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "free": 100,
        "team": 10_000,
        "enterprise": 1_000_000,
    }
)

DEFAULT_PLAN: Final = "free"


def quota_for(plan: str) -> int:
    """The monthly entry quota of ``plan``; refuses names that are not plans."""
    try:
        return MONTHLY_ENTRY_QUOTAS[plan]
    except KeyError:
        raise UnknownPlan(
            f"unknown plan {plan!r}",
            field="plan",
            allowed=sorted(MONTHLY_ENTRY_QUOTAS),
        ) from None
