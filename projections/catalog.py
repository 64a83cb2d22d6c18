"""Every projection the worker runs, by name."""

from __future__ import annotations

from projections.base import Projection
from projections.entries import EntriesProjection
from projections.event_feed import EventFeedProjection
from projections.prompts import PromptsProjection
from projections.quotas import QuotasProjection
from projections.sync import SyncProjection
from projections.teams import TeamsProjection
from projections.webhooks import WebhooksProjection

__all__ = ["all_projections", "projection_named"]


def all_projections() -> list[Projection]:
    return [
        EntriesProjection(),
        TeamsProjection(),
        PromptsProjection(),
        WebhooksProjection(),
        QuotasProjection(),
        SyncProjection(),
        EventFeedProjection(),
    ]


def projection_named(name: str) -> Projection | None:
    return next((p for p in all_projections() if p.name == name), None)
