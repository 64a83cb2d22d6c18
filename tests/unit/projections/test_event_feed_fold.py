"""The event feed's fold: which rows a batch appends, and who may see each."""

from __future__ import annotations

from uuid import uuid4

import pytest

from aggregates.base import Actor, Role
from aggregates.journal_entry import JournalEntry, Visibility
from projections.event_feed import EventFeedProjection, feed_rows
from projections.folding import MissingRow
from projections.public_events import PUBLIC_TOPICS
from tests.unit.projections import Log
from tests.unit.projections.history import full_history, stamped

AUTHOR = Actor(uuid4(), Role.MEMBER, uuid4())


def test_every_public_event_is_appended_in_order_and_internal_ones_are_not() -> None:
    history = full_history()
    rows, _ = feed_rows(history.facts, {})
    public = [f for f in history.facts if f.topic in PUBLIC_TOPICS]
    assert [r.position for r in rows] == [f.position for f in public]
    assert all(r.team_id == history.owner.team_id for r in rows)
    assert all(r.doc["position"] == r.position for r in rows)
    assert EventFeedProjection().topics == PUBLIC_TOPICS


def test_an_entry_is_its_authors_alone_while_private_from_the_event_that_makes_it_so() -> None:
    history = full_history()
    rows, scopes = feed_rows(history.facts, {})
    entry_rows = [(r.type, r.visible_to) for r in rows if r.aggregate_id == history.entry_id]
    author = history.member.user_id
    assert entry_rows == [
        ("entry.created", author),  # created private
        ("entry.edited", author),
        ("entry.visibility_changed", None),  # made team: the team sees this one on
        ("entry.deleted", None),
        ("entry.restored", None),
        ("entry.visibility_changed", author),  # made private again: hidden from here
    ]
    assert all(r.visible_to is None for r in rows if r.aggregate_id != history.entry_id)
    assert scopes == [{"entry_id": history.entry_id, "author_id": author, "visibility": "private"}]


def test_a_later_batch_reads_the_stored_scope_and_writes_only_what_changed() -> None:
    entry = JournalEntry.create(
        AUTHOR, id=uuid4(), title="t", body="", visibility=Visibility.PRIVATE
    )
    log = Log()
    first, scopes = feed_rows(stamped(AUTHOR, log.facts(entry)), {})
    stored = {(entry.id,): scopes[0]}
    entry.edit(AUTHOR, title="u")
    edited, unchanged = feed_rows(stamped(AUTHOR, log.facts(entry)), stored)
    assert [r.visible_to for r in [*first, *edited]] == [AUTHOR.user_id, AUTHOR.user_id]
    assert unchanged == []
    entry.change_visibility(AUTHOR, Visibility.TEAM)
    entry.edit(AUTHOR, title="v")
    later, changed = feed_rows(stamped(AUTHOR, log.facts(entry)), stored)
    assert [r.visible_to for r in later] == [None, None]
    assert changed == [{**scopes[0], "visibility": "team"}]


def test_an_entry_event_without_a_stored_scope_stops_the_batch() -> None:
    entry = JournalEntry.create(AUTHOR, id=uuid4(), title="t", body="")
    log = Log()
    log.facts(entry)
    entry.edit(AUTHOR, title="u")
    with pytest.raises(MissingRow):
        feed_rows(stamped(AUTHOR, log.facts(entry)), {})


def test_each_row_carries_who_when_and_the_whole_metadata_for_the_audit() -> None:
    history = full_history()
    rows, _ = feed_rows(history.facts, {})
    facts = {f.position: f for f in history.facts}
    for row in rows:
        event = facts[row.position].event
        assert event.metadata is not None
        assert row.actor_user_id == event.metadata.actor_user_id
        assert row.occurred_at == event.timestamp
        assert row.metadata == event.metadata.model_dump(mode="json")
        assert "metadata" not in row.doc  # the public document stays as it was
    assert {r.actor_user_id for r in rows} == {history.owner.user_id, history.member.user_id}


def test_an_event_without_metadata_has_no_actor() -> None:
    entry = JournalEntry.create(AUTHOR, id=uuid4(), title="t", body="")
    [row], _ = feed_rows(Log().facts(entry), {})
    assert (row.actor_user_id, row.metadata) == (None, None)
