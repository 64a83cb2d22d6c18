"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.db import PostgresTarget
from infra.event_store import EventStore, open_event_store


@pytest.fixture
def store(database_url: str) -> Iterator[EventStore]:
    """The event store on this test's own database."""
    store = open_event_store(PostgresTarget.from_url(database_url), pool_size=4)
    yield store
    store.close()
