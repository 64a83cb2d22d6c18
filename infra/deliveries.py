"""Webhook deliveries as the delivery worker writes them (named SQL)."""

from __future__ import annotations

from typing import Final

__all__ = ["DUE_CHANNEL", "STATUSES"]

# NOTIFY on this channel whenever a delivery becomes due now (new, resent,
# recovered): the delivery workers LISTEN and claim at once.
DUE_CHANNEL: Final = "chronik_webhook_due"
STATUSES: Final = ("pending", "succeeded", "failed", "canceled")
