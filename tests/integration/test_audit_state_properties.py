"""Properties of the audit reads against real PostgreSQL, for random histories
of an entry and of a team: the state at version N is the state after applying
the first N events, the state at time T is the one of the last version stamped
at or before T (none before the first event's time), and a reader who did not
write an entry sees exactly the events and versions at which it was the team's,
and never learns how many versions it has past them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates.base import Actor, Aggregate, DomainError, DomainEvent, EventMetadata, Role
from aggregates.journal_entry import JournalEntry, Visibility
from aggregates.team import Team
from infra.audit_history import (
    AuditHistory,
    NoSuchVersion,
    NotVisibleAtVersion,
    NotYetCreated,
    Stream,
)
from infra.audit_state import state_of
from infra.event_store import EventStore
from projections.pagination import InvalidCursor, encode_cursor

PROPERTIES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TEXT = st.text(alphabet="abcxyz ", min_size=1, max_size=8).filter(str.strip)
Op = Callable[[Any, Actor], None]


def _entry_ops() -> st.SearchStrategy[list[Op]]:
    def edit(title: str, body: str, tags: list[str]) -> Op:
        return lambda e, a: e.edit(a, title=title, body=body, tags=tags)

    def visibility(value: Visibility) -> Op:
        return lambda e, a: e.change_visibility(a, value)

    def delete(at: datetime) -> Op:
        return lambda e, a: e.delete(a, deleted_at=at)

    one = st.one_of(
        st.builds(edit, TEXT, st.text(max_size=8), st.lists(TEXT, max_size=3)),
        st.builds(visibility, st.sampled_from(Visibility)),
        st.builds(delete, st.datetimes(timezones=st.just(UTC))),
        st.just(lambda e, a: e.restore(a)),
    )
    return st.lists(one, max_size=12)


def _team_ops() -> st.SearchStrategy[list[Op]]:
    def add(role: Role) -> Op:
        return lambda t, a: t.add_member(
            a, user_id=uuid4(), email=f"{uuid4().hex[:8]}@example.com", display_name="M", role=role
        )

    def change_role(n: int, role: Role) -> Op:
        return lambda t, a: t.change_role(a, t.members[n % len(t.members)].user_id, role)

    def remove(n: int) -> Op:
        return lambda t, a: t.remove_member(a, t.members[n % len(t.members)].user_id)

    def issue(n: int) -> Op:
        return lambda t, a: t.issue_api_key(
            a,
            key_id=uuid4().hex[:16],
            user_id=t.members[n % len(t.members)].user_id,
            name="k",
            secret_hash="scrypt$not-a-real-hash",
        )

    def revoke(n: int) -> Op:
        return lambda t, a: t.revoke_api_key(a, t.keys[n % len(t.keys)].key_id) if t.keys else None

    def rename(name: str) -> Op:
        return lambda t, a: t.rename(a, name)

    def plan(name: str) -> Op:
        return lambda t, a: t.change_plan(a, name)

    index = st.integers(0, 10)
    one = st.one_of(
        st.builds(add, st.sampled_from(Role)),
        st.builds(change_role, index, st.sampled_from(Role)),
        st.builds(remove, index),
        st.builds(issue, index),
        st.builds(revoke, index),
        st.builds(rename, TEXT),
        st.builds(plan, st.sampled_from(["free", "team", "enterprise"])),
    )
    return st.lists(one, max_size=12)


def _play(store: EventStore, aggregate: Aggregate, actor: Actor, ops: Sequence[Op]) -> list[Any]:
    """Saves ``aggregate`` after its creation and after each op that changed it
    (ops a rule refuses are skipped); every event, in version order."""
    metadata = EventMetadata(team_id=actor.team_id, actor_user_id=actor.user_id)
    events: list[Any] = list(aggregate.pending_events)
    store.save([aggregate], metadata=metadata)
    for op in ops:
        try:
            op(aggregate, actor)
        except DomainError:
            aggregate.collect_events()  # a refused op leaves nothing pending anyway
            continue
        events += aggregate.pending_events
        store.save([aggregate], metadata=metadata)
    return events


def _after(events: Sequence[Any], n: int) -> dict[str, Any]:
    """The state after applying the first ``n`` events, folded here without the store."""
    aggregate: Any = None
    for event in events[:n]:
        aggregate = event.mutate(aggregate)
    return state_of(aggregate)


def _last_version_at(events: Sequence[DomainEvent], at: datetime) -> int | None:
    if at < events[0].timestamp:
        return None
    stamped = [e.originator_version for e in events if e.timestamp <= at]
    return max(stamped) if stamped else None


def _check_states(history: AuditHistory, stream: Stream, events: Sequence[Any]) -> None:
    for n in range(1, len(events) + 1):
        found = history.state(stream, version=n)
        assert (found.version, found.as_of) == (n, events[n - 1].timestamp)
        assert found.state == _after(events, n)
    latest = history.state(stream)
    assert (latest.version, latest.state) == (len(events), _after(events, len(events)))


def _check_times(
    history: AuditHistory, stream: Stream, events: Sequence[Any], picks: Sequence[tuple[int, int]]
) -> None:
    for index, offset in picks:
        at = events[index % len(events)].timestamp + timedelta(microseconds=offset)
        expected = _last_version_at(events, at)
        if expected is None:
            with pytest.raises(NotYetCreated):
                history.state(stream, at=at)
            continue
        found = history.state(stream, at=at)
        assert found.version == expected
        assert found.state == _after(events, expected)


PICKS = st.lists(st.tuples(st.integers(0, 50), st.integers(-2, 2)), min_size=1, max_size=6)


@PROPERTIES
@given(ops=_entry_ops(), visibility=st.sampled_from(Visibility), picks=PICKS)
def test_an_entry_s_state_at_any_version_or_time(
    store: EventStore, ops: list[Op], visibility: Visibility, picks: list[tuple[int, int]]
) -> None:
    author = Actor(uuid4(), Role.MEMBER, uuid4())
    entry = JournalEntry.create(author, id=uuid4(), title="t", body="", visibility=visibility)
    events = _play(store, entry, author, ops)
    history = AuditHistory(store)
    stream = history.stream(author.team_id, entry.id, author.user_id)
    assert stream is not None

    _check_states(history, stream, events)
    _check_times(history, stream, events, picks)
    page = history.events(stream, cursor=None, limit=1000)
    assert [e["aggregate_version"] for e in page.events] == list(range(1, len(events) + 1))
    assert page.next_cursor is None
    with pytest.raises(NoSuchVersion) as past:
        history.state(stream, version=len(events) + 1)
    assert past.value.latest == len(events)


@PROPERTIES
@given(ops=_entry_ops(), visibility=st.sampled_from(Visibility), limit=st.integers(1, 4))
def test_another_reader_sees_an_entry_only_while_it_is_the_team_s(
    store: EventStore, ops: list[Op], visibility: Visibility, limit: int
) -> None:
    author, reader = Actor(uuid4(), Role.ADMIN, uuid4()), uuid4()
    entry = JournalEntry.create(author, id=uuid4(), title="t", body="", visibility=visibility)
    events = _play(store, entry, author, ops)
    shared = [
        n for n in range(1, len(events) + 1) if _after(events, n)["visibility"] == Visibility.TEAM
    ]
    history = AuditHistory(store)
    stream = history.stream(author.team_id, entry.id, reader)
    if not shared:
        assert stream is None
        return
    assert stream is not None
    seen: list[int] = []
    cursor: str | None = None
    while True:
        page = history.events(stream, cursor=cursor, limit=limit)
        assert len(page.events) <= limit
        seen += [e["aggregate_version"] for e in page.events]
        if page.next_cursor is None:
            break
        assert len(page.events) == limit
        cursor = page.next_cursor
    assert seen == shared
    for n in range(1, len(events) + 1):
        if n in shared:
            assert history.state(stream, version=n).state == _after(events, n)
        else:
            with pytest.raises(NotVisibleAtVersion):
                history.state(stream, version=n)
    # Past the latest version: told only when the reader may see the latest one.
    for n in (len(events) + 1, len(events) + 100):
        if len(events) in shared:
            with pytest.raises(NoSuchVersion):
                history.state(stream, version=n)
        else:
            with pytest.raises(NotVisibleAtVersion):
                history.state(stream, version=n)
    assert history.stream(uuid4(), entry.id, author.user_id) is None  # another team's


@PROPERTIES
@given(ops=_team_ops(), picks=PICKS)
def test_a_team_s_state_at_any_version_or_time(
    store: EventStore, ops: list[Op], picks: list[tuple[int, int]]
) -> None:
    team_id, owner_id = uuid4(), uuid4()
    team = Team.create(
        id=team_id,
        name="Acme",
        plan="team",
        owner_user_id=owner_id,
        owner_email="o@example.com",
        owner_display_name="O",
    )
    owner = Actor(owner_id, Role.OWNER, team_id)
    events = _play(store, team, owner, ops)
    history = AuditHistory(store)
    stream = history.stream(team_id, team_id, owner_id)
    assert stream is not None
    assert stream.type == "team"

    _check_states(history, stream, events)
    _check_times(history, stream, events, picks)
    assert history.stream(uuid4(), team_id, owner_id) is None
    texts = str(history.events(stream, cursor=None, limit=1000).events)
    assert "not-a-real-hash" not in texts
    assert "not-a-real-hash" not in str(history.state(stream).state)


def _edit(title: str) -> Op:
    return lambda e, a: e.edit(a, title=title)


class _CountingHistory(AuditHistory):
    """Counts the stored events it decodes."""

    decoded = 0

    def _rows(self, query: str, params: dict[str, Any]) -> list[Any]:
        rows = super()._rows(query, params)
        self.decoded += len(rows)
        return rows


def test_a_time_before_creation_decodes_no_event_past_the_first(store: EventStore) -> None:
    author = Actor(uuid4(), Role.MEMBER, uuid4())
    entry = JournalEntry.create(author, id=uuid4(), title="t", body="")
    edits = [_edit(f"v{n}") for n in range(20)]
    events = _play(store, entry, author, edits)
    history = _CountingHistory(store)
    stream = history.stream(author.team_id, entry.id, author.user_id)
    assert stream is not None
    assert stream.created_at == events[0].timestamp
    history.decoded = 0
    with pytest.raises(NotYetCreated) as early:
        history.state(stream, at=events[0].timestamp - timedelta(microseconds=1))
    assert early.value.created_at == events[0].timestamp
    assert history.decoded == 0  # the stream's first event was read already


def test_history_cursors_belong_to_their_stream(store: EventStore) -> None:
    author = Actor(uuid4(), Role.MEMBER, uuid4())
    entries = [JournalEntry.create(author, id=uuid4(), title="t", body="") for _ in range(2)]
    history = AuditHistory(store)
    streams = []
    for entry in entries:
        _play(store, entry, author, [_edit("v2")])
        stream = history.stream(author.team_id, entry.id, author.user_id)
        assert stream is not None
        streams.append(stream)
    first = history.events(streams[0], cursor=None, limit=1)
    assert first.next_cursor is not None
    rest = history.events(streams[0], cursor=first.next_cursor, limit=1)
    assert [e["aggregate_version"] for e in rest.events] == [2]
    assert rest.next_cursor is None
    stream_id = str(streams[0].aggregate_id)
    for bad in (
        "not a cursor",
        encode_cursor("audit_history", stream_id),
        encode_cursor("audit_history", stream_id, 0),
        encode_cursor("audit_history", stream_id, 2**63),
        encode_cursor("audit_activity", 1),
    ):
        with pytest.raises(InvalidCursor):
            history.events(streams[0], cursor=bad, limit=1)
    with pytest.raises(InvalidCursor):  # another aggregate's
        history.events(streams[1], cursor=first.next_cursor, limit=1)
