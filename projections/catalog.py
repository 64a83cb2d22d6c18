"""Every projection the worker runs, by name."""

from __future__ import annotations

from projections.audit_chain import CheckpointSigner
from projections.audit_ledger import DEFAULT_CHECKPOINT_EVERY, LedgerProjection
from projections.base import Projection
from projections.entries import EntriesProjection
from projections.event_feed import EventFeedProjection
from projections.notification_preferences import NotificationPreferencesProjection
from projections.prompts import PromptsProjection
from projections.quotas import QuotasProjection
from projections.sync import SyncProjection
from projections.teams import TeamsProjection
from projections.webhooks import WebhooksProjection

__all__ = ["all_projections", "projection_named"]


def all_projections(
    *,
    signer: CheckpointSigner | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
) -> list[Projection]:
    """``signer`` and ``checkpoint_every`` configure the audit ledger's checkpoints."""
    return [
        EntriesProjection(),
        TeamsProjection(),
        PromptsProjection(),
        WebhooksProjection(),
        QuotasProjection(),
        NotificationPreferencesProjection(),
        SyncProjection(),
        EventFeedProjection(),
        LedgerProjection(signer, checkpoint_every=checkpoint_every),
    ]


def projection_named(
    name: str,
    *,
    signer: CheckpointSigner | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
) -> Projection | None:
    found = all_projections(signer=signer, checkpoint_every=checkpoint_every)
    return next((p for p in found if p.name == name), None)
