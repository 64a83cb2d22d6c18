"""The event feed against real PostgreSQL: commands write, a worker projects,
and each reader sees the team's public events in position order, private
entries' events only while they are the reader's own."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from psycopg import sql

from aggregates.base import Actor, Role
from aggregates.journal_entry import Visibility
from commands import entries, prompts, teams
from commands.context import CommandContext
from commands.models import AddMember, CreatePrompt, EditEntry, IssueApiKey, UpdateTeam
from infra.event_store import EventStore
from infra.projection_wiring import StoredEventSource
from projections.base import Fact
from projections.event_feed import (
    ActivityNotIndexed,
    EventFeedProjection,
    export_pages,
    list_activity,
    list_events,
)
from projections.pagination import InvalidCursor, encode_cursor
from projections.public_events import PUBLIC_TOPICS, public_event
from projections.reading import Conn
from projections.registry import schema_of
from projections.runner import RunnerConfig
from tests.projection_support import (
    TeamFixture,
    connect,
    create_team,
    running_worker,
    seed_entries,
    wait_caught_up,
    write_entry,
)


def project(url: str, store: EventStore, *, batch_size: int = 50) -> None:
    """Runs a worker until the event feed has applied the whole log."""
    config = RunnerConfig(batch_size=batch_size, poll_interval=0.2, standby_interval=0.2)
    with running_worker(url, store, [EventFeedProjection()], config):
        assert not wait_caught_up(url, "event_feed").stalled


def add_member(store: EventStore, team: TeamFixture, name: str) -> Actor:
    command = AddMember(email=f"{name}@example.com", display_name=name, role=Role.MEMBER)
    added = teams.add_member(store, CommandContext(actor=team.owner), command)
    return Actor(UUID(added.data["user_id"]), Role.MEMBER, team.team_id)


def set_visibility(store: EventStore, actor: Actor, entry_id: UUID, visibility: str) -> None:
    command = EditEntry(visibility=Visibility(visibility))
    entries.edit_entry(store, CommandContext(actor=actor), entry_id, command)


def edit(store: EventStore, actor: Actor, entry_id: UUID, title: str) -> None:
    entries.edit_entry(store, CommandContext(actor=actor), entry_id, EditEntry(title=title))


def everything(conn: Conn, team_id: UUID, reader: UUID, **filters: Any) -> list[dict[str, Any]]:
    page = list_events(conn, team_id, reader, after=0, limit=1000, **filters)
    assert not page.has_more
    return page.events


def public_log(store: EventStore) -> list[Fact]:
    source = StoredEventSource(store)
    notifications = source.read(0, 100_000)
    return [
        Fact(n.id, n.topic, source.decode(n)) for n in notifications if n.topic in PUBLIC_TOPICS
    ]


def test_the_feed_holds_each_public_event_once_in_position_order(
    database_url: str, store: EventStore
) -> None:
    team = create_team(store, "One")
    other = create_team(store, "Other")
    ctx = CommandContext(actor=team.owner)
    ana = add_member(store, team, "ana")
    teams.issue_api_key(store, ctx, IssueApiKey(user_id=ana.user_id, name="laptop"))
    teams.update_team(store, ctx, UpdateTeam(name="One renamed"))
    prompts.create_prompt(store, ctx, CreatePrompt(text="How was it?"))
    for n in range(5):
        write_entry(store, ana if n % 2 else team.owner, f"entry {n}")
    write_entry(store, other.owner, "elsewhere")
    project(database_url, store)

    expected = [public_event(f) for f in public_log(store)]
    with connect(database_url) as conn:
        ours = everything(conn, team.team_id, team.owner.user_id)
        theirs = everything(conn, other.team_id, other.owner.user_id)
    # Exactly what the pure function makes of the stored events, split by team.
    assert sorted(ours + theirs, key=lambda d: d["position"]) == expected
    positions = [d["position"] for d in ours]
    assert positions == sorted(set(positions))
    assert {d["team_id"] for d in ours} == {str(team.team_id)}
    assert {d["team_id"] for d in theirs} == {str(other.team_id)}
    assert all("secret_hash" not in str(d) for d in ours)
    assert [d["type"] for d in ours].count("entry.created") == 5
    assert "team.api_key_issued" in {d["type"] for d in ours}


def test_pages_and_type_filters(database_url: str, store: EventStore) -> None:
    team = create_team(store)
    for n in range(7):
        write_entry(store, team.owner, f"entry {n}")
    project(database_url, store)

    with connect(database_url) as conn:
        whole = everything(conn, team.team_id, team.owner.user_id)
        seen: list[dict[str, Any]] = []
        after, pages = 0, 0
        while True:
            page = list_events(conn, team.team_id, team.owner.user_id, after=after, limit=3)
            seen += page.events
            pages += 1
            if not page.has_more:
                break
            assert page.next_after is not None
            assert page.next_after == page.events[-1]["position"]
            after = page.next_after
        assert seen == whole
        assert pages == -(-len(whole) // 3)
        created = everything(conn, team.team_id, team.owner.user_id, types=["entry.created"])
        assert [d["data"]["title"] for d in created] == [f"entry {n}" for n in range(7)]
        both = everything(
            conn, team.team_id, team.owner.user_id, types=["team.created", "entry.created"]
        )
        assert [d["type"] for d in both] == ["team.created"] + ["entry.created"] * 7
        empty = list_events(conn, team.team_id, team.owner.user_id, after=10**9, limit=5)
        assert (empty.events, empty.next_after, empty.has_more) == ([], None, False)


def test_private_entries_events_reach_their_author_only(
    database_url: str, store: EventStore
) -> None:
    team = create_team(store)
    ana, ben = add_member(store, team, "ana"), add_member(store, team, "ben")
    secret, shared = uuid4(), uuid4()
    write_entry(store, ana, "diary", id=secret, visibility="private")
    edit(store, ana, secret, "diary, edited")
    write_entry(store, ana, "notes", id=shared, visibility="team")
    project(database_url, store)

    with connect(database_url) as conn:
        for reader in (team.owner.user_id, ben.user_id):
            ids = {d["aggregate_id"] for d in everything(conn, team.team_id, reader)}
            assert str(shared) in ids
            assert str(secret) not in ids
        own = [
            d["type"]
            for d in everything(conn, team.team_id, ana.user_id)
            if d["aggregate_id"] == str(secret)
        ]
        assert own == ["entry.created", "entry.edited"]


_ENTRY_TYPES = ["entry.created", "entry.edited", "entry.visibility_changed"]


# One event a batch, then all in one: the entry's scope must carry across batches.
@pytest.mark.parametrize("batch_size", [1, 500])
def test_a_visibility_change_moves_the_entry_from_that_event_on(
    database_url: str, store: EventStore, batch_size: int
) -> None:
    team = create_team(store)
    ana = add_member(store, team, "ana")
    entry = uuid4()
    write_entry(store, ana, "v1", id=entry, visibility="private")
    edit(store, ana, entry, "v2")
    set_visibility(store, ana, entry, "team")
    edit(store, ana, entry, "v3")
    set_visibility(store, ana, entry, "private")
    edit(store, ana, entry, "v4")
    project(database_url, store, batch_size=batch_size)

    with connect(database_url) as conn:

        def story(reader: UUID) -> list[tuple[str, Any]]:
            return [
                (d["type"], d["data"].get("title", d["data"].get("visibility")))
                for d in everything(conn, team.team_id, reader, types=_ENTRY_TYPES)
            ]

        assert story(ana.user_id) == [
            ("entry.created", "v1"),
            ("entry.edited", "v2"),
            ("entry.visibility_changed", "team"),
            ("entry.edited", "v3"),
            ("entry.visibility_changed", "private"),
            ("entry.edited", "v4"),
        ]
        # The team sees the entry while it is the team's, and nothing before or after.
        assert story(team.owner.user_id) == [
            ("entry.visibility_changed", "team"),
            ("entry.edited", "v3"),
        ]


def test_large_batches_take_the_copy_path(database_url: str, store: EventStore) -> None:
    team = create_team(store)
    seed_entries(store, team.owner, 300, per_save=150)
    ana = add_member(store, team, "ana")
    secret = uuid4()
    write_entry(store, ana, "private", id=secret, visibility="private")
    project(database_url, store, batch_size=500)

    with connect(database_url) as conn:
        created = everything(conn, team.team_id, team.owner.user_id, types=["entry.created"])
        assert len(created) == 300
        mine = everything(conn, team.team_id, ana.user_id, types=["entry.created"])
        assert len(mine) == 301
        count = conn.execute("SELECT count(*) FROM reads.public_events").fetchone()
        assert count is not None
        assert count[0] == len(public_log(store))


def test_an_export_pages_through_everything_up_to_the_head_it_started_at(
    database_url: str, store: EventStore
) -> None:
    team = create_team(store)
    ana = add_member(store, team, "ana")
    for n in range(10):
        write_entry(store, team.owner, f"entry {n}")
    write_entry(store, ana, "hidden", visibility="private")
    project(database_url, store)

    def connection() -> AbstractContextManager[Conn]:
        return connect(database_url)

    with connect(database_url) as conn:
        whole = everything(conn, team.team_id, team.owner.user_id)
    pages = export_pages(connection, team.team_id, team.owner.user_id, after=0, page_size=4)
    first = next(pages)
    # Written while the export runs: after the head it started at, so not in it.
    write_entry(store, team.owner, "later")
    project(database_url, store)
    exported = [first, *pages]
    assert [len(p) for p in exported] == [4] * (len(whole) // 4) + (
        [len(whole) % 4] if len(whole) % 4 else []
    )
    assert [d for p in exported for d in p] == whole
    assert "hidden" not in str(whole)

    after = whole[3]["position"]
    rest = [
        d
        for p in export_pages(connection, team.team_id, team.owner.user_id, after=after)
        for d in p
    ]
    assert rest[: len(whole) - 4] == whole[4:]
    assert [d["data"]["title"] for d in rest[len(whole) - 4 :]] == ["later"]
    only = [
        d
        for p in export_pages(
            connection, team.team_id, team.owner.user_id, after=0, types=["team.member_added"]
        )
        for d in p
    ]
    assert [d["data"]["user_id"] for d in only] == [str(ana.user_id)]
    nothing = list(export_pages(connection, uuid4(), team.owner.user_id, after=0))
    assert nothing == [[]]


def test_activity_narrows_to_an_actor_a_time_window_and_types(
    database_url: str, store: EventStore
) -> None:
    team = create_team(store)
    ana = add_member(store, team, "ana")
    for n in range(3):
        write_entry(store, team.owner, f"owner {n}")
        write_entry(store, ana, f"ana {n}")
    hidden = uuid4()
    write_entry(store, ana, "hidden", id=hidden, visibility="private")
    edit(store, ana, hidden, "still hidden")
    project(database_url, store)

    def activity(reader: UUID, **filters: Any) -> list[dict[str, Any]]:
        with connect(database_url) as conn:
            page = list_activity(conn, team.team_id, reader, cursor=None, limit=1000, **filters)
        assert page.next_cursor is None
        return page.rows

    whole = activity(team.owner.user_id)
    # The feed's documents, each with the event's metadata beside it.
    with connect(database_url) as conn:
        feed = everything(conn, team.team_id, team.owner.user_id)
    assert [{k: v for k, v in d.items() if k != "metadata"} for d in whole] == feed
    assert all(d["metadata"]["team_id"] == str(team.team_id) for d in whole)

    by_ana = activity(team.owner.user_id, actor=ana.user_id)
    assert [d["data"]["title"] for d in by_ana] == ["ana 0", "ana 1", "ana 2"]
    assert {d["metadata"]["actor_user_id"] for d in by_ana} == {str(ana.user_id)}
    assert str(hidden) not in str(by_ana)
    own = activity(ana.user_id, actor=ana.user_id, types=["entry.edited"])
    assert [d["aggregate_id"] for d in own] == [str(hidden)]

    times = [datetime.fromisoformat(d["occurred_at"]) for d in whole]
    since, until = times[2], times[-1]
    window = activity(team.owner.user_id, since=since, until=until)
    assert window == [d for d, t in zip(whole, times, strict=True) if since <= t < until]
    assert activity(team.owner.user_id, actor=uuid4()) == []

    with connect(database_url) as conn:
        first = list_activity(conn, team.team_id, team.owner.user_id, cursor=None, limit=2)
        assert first.next_cursor is not None
        second = list_activity(
            conn, team.team_id, team.owner.user_id, cursor=first.next_cursor, limit=2
        )
        for bad in ("nope", encode_cursor("audit_activity", 0), encode_cursor("entries", 5)):
            with pytest.raises(InvalidCursor):
                list_activity(conn, team.team_id, team.owner.user_id, cursor=bad, limit=2)
    assert [*first.rows, *second.rows] == whole[:4]


def replace_with_v1_view(conn: Conn) -> None:
    """Points ``reads.public_events`` at the live table minus the columns version 2
    added, as the view is while a version-1 generation is live."""
    row = conn.execute(
        "SELECT id FROM projection_generations WHERE projection = 'event_feed' AND state = 'active'"
    ).fetchone()
    assert row is not None
    table = sql.Identifier(schema_of(row[0]), "public_events")
    conn.execute("DROP VIEW reads.public_events")
    conn.execute(
        sql.SQL(
            "CREATE VIEW reads.public_events AS"
            " SELECT position, team_id, type, aggregate_id, visible_to, doc FROM {}"
        ).format(table)
    )


def test_activity_reports_a_feed_without_its_columns_as_not_indexed(
    database_url: str, store: EventStore
) -> None:
    team = create_team(store)
    write_entry(store, team.owner, "one")
    project(database_url, store)
    with connect(database_url) as conn:
        # The live view as a version-1 generation has it, while version 2 is built.
        replace_with_v1_view(conn)
        assert everything(conn, team.team_id, team.owner.user_id)  # /events still reads
        with pytest.raises(ActivityNotIndexed):
            list_activity(conn, team.team_id, team.owner.user_id, cursor=None, limit=2)
