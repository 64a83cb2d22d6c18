"""The relay puts each event's correlation id on its NATS message, tracing on
or off; while a version-1 event feed (no metadata column) still serves, it
publishes without it instead of stopping."""

from __future__ import annotations

from psycopg import sql

from commands import entries
from commands.context import CommandContext
from commands.models import CreateEntry
from infra.event_store import EventStore
from infra.settings import Settings
from infra.tracing import CORRELATION_HEADER
from projections import registry
from projections.event_feed import EventFeedProjection
from tests.integration.test_relay import messages, relay, wait_relayed
from tests.projection_support import connect, create_team, running_worker, wait_caught_up


def test_messages_carry_the_events_correlation_id(settings: Settings, store: EventStore) -> None:
    url = settings.database_url_value()
    team = create_team(store)
    correlated = CommandContext(actor=team.owner, correlation_id="corr-relay-1")
    entries.create_entry(store, correlated, CreateEntry(title="correlated"))
    with running_worker(url, store, [EventFeedProjection()]), relay(settings, store):
        wait_relayed(url)
    created = [m for m in messages(settings) if m.headers["Chronik-Type"] == "entry.created"]
    assert [m.headers.get(CORRELATION_HEADER) for m in created] == ["corr-relay-1"]
    # Tracing is off in this process: no trace context is stored or sent.
    assert all("traceparent" not in m.headers for m in messages(settings))


def test_a_version_1_feed_is_relayed_without_correlation_ids(
    settings: Settings, store: EventStore
) -> None:
    url = settings.database_url_value()
    team = create_team(store)
    ctx = CommandContext(actor=team.owner, correlation_id="corr-relay-2")
    entries.create_entry(store, ctx, CreateEntry(title="first"))
    with running_worker(url, store, [EventFeedProjection()]):
        generation = wait_caught_up(url, "event_feed")
    # The live view as a version-1 generation has it: no metadata column.
    with connect(url) as conn:
        conn.execute("DROP VIEW reads.public_events")
        conn.execute(
            sql.SQL(
                "CREATE VIEW reads.public_events AS"
                " SELECT position, team_id, type, aggregate_id, visible_to, doc FROM {}"
            ).format(sql.Identifier(registry.schema_of(generation.id), "public_events"))
        )
    with relay(settings, store):
        wait_relayed(url)
    published = messages(settings)
    assert "entry.created" in {m.headers["Chronik-Type"] for m in published}
    assert all(CORRELATION_HEADER not in m.headers for m in published)
