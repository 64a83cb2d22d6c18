"""The JetStream stream of public events: its name, subjects and limits.

One stream, ``<NAMESPACE>_EVENTS``, holds every public event under
``<namespace>.events.<team_id>.<type>`` (types contain dots, so a consumer
can filter ``<namespace>.events.*.entry.>``). The relay publishes into it;
the webhook and notification consumers read it with durable pull consumers.
"""

from __future__ import annotations

import dataclasses
from typing import Final
from uuid import UUID

from faststream.nats import JStream, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError

from infra.messaging import stream_name, subject_prefix
from infra.settings import Settings

__all__ = [
    "POSITION_HEADER",
    "TEAM_HEADER",
    "TYPE_HEADER",
    "VISIBLE_TO_HEADER",
    "all_events_subject",
    "declare_events_stream",
    "event_subject",
    "events_stream",
]

# Headers every message carries beside the public document, so consumers can
# route without parsing the body.
POSITION_HEADER: Final = "Chronik-Position"
TEAM_HEADER: Final = "Chronik-Team"
TYPE_HEADER: Final = "Chronik-Type"
# Present only on a private entry's events: the one member who may see them.
VISIBLE_TO_HEADER: Final = "Chronik-Visible-To"


def event_subject(settings: Settings, team_id: UUID | str, event_type: str) -> str:
    return f"{subject_prefix(settings)}.events.{team_id}.{event_type}"


def all_events_subject(settings: Settings) -> str:
    return f"{subject_prefix(settings)}.events.>"


def events_stream(settings: Settings) -> JStream:
    """Declared by whoever starts first (relay or consumers); the same config
    every time, so a redeclaration with changed limits updates the stream."""
    return JStream(
        stream_name(settings, "events"),
        description="Chronik public events, by team and type",
        subjects=[all_events_subject(settings)],
        storage=StorageType.FILE,
        max_age=settings.events_stream_max_age,
        max_bytes=settings.events_stream_max_bytes,
        duplicate_window=settings.events_duplicate_window,
        num_replicas=settings.events_stream_replicas,
        declare=True,
    )


async def declare_events_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create the stream, or bring an existing one's limits up to the settings."""
    config = dataclasses.replace(
        events_stream(settings).config, subjects=[all_events_subject(settings)]
    )
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if "already in use" not in (exc.description or ""):
            raise
        await js.update_stream(config)
