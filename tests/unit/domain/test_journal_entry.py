from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregates.base import Actor, Role
from aggregates.errors import (
    EntryDeleted,
    EntryNotDeleted,
    Forbidden,
    InvalidValue,
    NotFound,
)
from aggregates.journal_entry import JournalEntry, Visibility, normalise_tags
from tests.unit.domain import AnyEvent, actor_in, data, names, replay

TEAM = uuid4()
AUTHOR = actor_in(TEAM, Role.MEMBER)
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def write(visibility: Visibility = Visibility.TEAM, author: Actor = AUTHOR) -> JournalEntry:
    return JournalEntry.create(
        author,
        id=uuid4(),
        title="Standup",
        body="Shipped it.",
        tags=["Ops"],
        visibility=visibility,
    )


def test_create_records_the_entry_under_the_client_chosen_id() -> None:
    chosen, prompt = uuid4(), uuid4()
    entry = JournalEntry.create(
        AUTHOR,
        id=chosen,
        title="  Day one ",
        body=" raw body ",
        tags=[" Work", "work", "Life "],
        visibility=Visibility.PRIVATE,
        prompt_id=prompt,
    )
    events = entry.collect_events()
    assert entry.id == chosen
    assert names(events) == ["Created"]
    assert data(events[0]) == {
        "team_id": TEAM,
        "author_id": AUTHOR.user_id,
        "title": "Day one",
        "body": " raw body ",
        "tags": ["work", "life"],
        "visibility": Visibility.PRIVATE,
        "prompt_id": prompt,
    }
    assert replay(JournalEntry, events) == entry


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN, Role.MEMBER])
def test_every_writing_role_may_create(role: Role) -> None:
    writer = actor_in(TEAM, role)
    entry = write(author=writer)
    assert (entry.author_id, entry.team_id) == (writer.user_id, TEAM)


def test_auditors_may_not_create() -> None:
    with pytest.raises(Forbidden):
        write(author=actor_in(TEAM, Role.AUDITOR))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"title": " "}, "title"),
        ({"tags": ["ok", "  "]}, "tags"),
        ({"visibility": "x"}, "visibility"),
    ],
)
def test_create_refuses_bad_values(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"title": "t", "body": "", "tags": []} | kwargs
    with pytest.raises(InvalidValue) as caught:
        JournalEntry.create(AUTHOR, id=uuid4(), **args)  # type: ignore[arg-type]
    assert caught.value.details["field"] == field


# -- who may change an entry --------------------------------------------------------

Change = Callable[[JournalEntry, Actor], None]
CHANGES: dict[str, Change] = {
    "edit": lambda e, a: e.edit(a, body="changed"),
    "toggle visibility": lambda e, a: e.change_visibility(
        a, Visibility.TEAM if e.visibility is Visibility.PRIVATE else Visibility.PRIVATE
    ),
    "delete": lambda e, a: e.delete(a, deleted_at=NOW),
    "restore": lambda e, a: e.restore(a),
}


def _readers() -> dict[str, Actor]:
    return {
        "author": AUTHOR,
        "author now auditor": Actor(user_id=AUTHOR.user_id, role=Role.AUDITOR, team_id=TEAM),
        "owner": actor_in(TEAM, Role.OWNER),
        "admin": actor_in(TEAM, Role.ADMIN),
        "other member": actor_in(TEAM, Role.MEMBER),
        "auditor": actor_in(TEAM, Role.AUDITOR),
        "author's id, other team": Actor(user_id=AUTHOR.user_id, role=Role.OWNER, team_id=uuid4()),
    }


# What each reader gets when changing a team entry / a private entry.
OUTCOMES: dict[str, tuple[type[Exception] | None, type[Exception] | None]] = {
    "author": (None, None),
    "author now auditor": (Forbidden, Forbidden),
    "owner": (None, NotFound),
    "admin": (None, NotFound),
    "other member": (Forbidden, NotFound),
    "auditor": (Forbidden, NotFound),
    "author's id, other team": (NotFound, NotFound),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("reader", sorted(OUTCOMES))
@pytest.mark.parametrize("visibility", list(Visibility))
def test_who_may_change_an_entry(change: str, reader: str, visibility: Visibility) -> None:
    entry = write(visibility)
    if change == "restore":
        entry.delete(AUTHOR, deleted_at=NOW)
    history = list(entry.collect_events())
    refused = OUTCOMES[reader][0 if visibility is Visibility.TEAM else 1]
    if refused is None:
        CHANGES[change](entry, _readers()[reader])
        history += entry.collect_events()
        assert len(history) == (3 if change == "restore" else 2)
    else:
        with pytest.raises(refused):
            CHANGES[change](entry, _readers()[reader])
        assert entry.collect_events() == []
    assert replay(JournalEntry, history) == entry


@pytest.mark.parametrize("reader", sorted(OUTCOMES))
@pytest.mark.parametrize("visibility", list(Visibility))
def test_visibility(reader: str, visibility: Visibility) -> None:
    entry = write(visibility)
    team_readers = {"author", "author now auditor", "owner", "admin", "other member", "auditor"}
    private_readers = {"author", "author now auditor"}
    expected = team_readers if visibility is Visibility.TEAM else private_readers
    assert entry.is_visible_to(_readers()[reader]) is (reader in expected)


# -- edits, deletes, restores -------------------------------------------------------


def test_edit_records_the_full_new_state() -> None:
    entry = write()
    entry.collect_events()
    entry.edit(AUTHOR, tags=["B", "a", "b"])
    (edited,) = entry.collect_events()
    assert names([edited]) == ["Edited"]
    assert data(edited) == {"title": "Standup", "body": "Shipped it.", "tags": ["b", "a"]}
    assert entry.tags == ("b", "a")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"title": " Standup "},
        {"body": "Shipped it."},
        {"tags": ["OPS", " ops"]},
        {"title": "Standup", "body": "Shipped it.", "tags": ["ops"]},
    ],
)
def test_edits_that_change_nothing_record_nothing(kwargs: dict[str, object]) -> None:
    entry = write()
    entry.collect_events()
    entry.edit(AUTHOR, **kwargs)  # type: ignore[arg-type]
    entry.change_visibility(AUTHOR, Visibility.TEAM)
    assert entry.collect_events() == []


def test_clearing_tags_is_a_change() -> None:
    entry = write()
    entry.collect_events()
    entry.edit(AUTHOR, tags=[])
    assert names(entry.collect_events()) == ["Edited"]
    assert entry.tags == ()


def test_soft_delete_and_restore() -> None:
    entry = write()
    history = list(entry.collect_events())
    berlin = timezone(timedelta(hours=1))
    entry.delete(AUTHOR, deleted_at=datetime(2025, 3, 1, 13, 0, tzinfo=berlin))
    assert entry.is_deleted
    assert entry.deleted_at == NOW
    assert entry.deleted_at.tzinfo is UTC
    with pytest.raises(EntryDeleted):
        entry.edit(AUTHOR, title="x")
    with pytest.raises(EntryDeleted):
        entry.change_visibility(AUTHOR, Visibility.PRIVATE)
    with pytest.raises(EntryDeleted):
        entry.delete(AUTHOR, deleted_at=NOW)
    history += entry.collect_events()
    assert names(history) == ["Created", "Deleted"]
    assert replay(JournalEntry, history) == entry
    entry.restore(AUTHOR)
    assert not entry.is_deleted
    with pytest.raises(EntryNotDeleted):
        entry.restore(AUTHOR)
    history += entry.collect_events()
    assert names(history) == ["Created", "Deleted", "Restored"]
    assert replay(JournalEntry, history) == entry


def test_delete_needs_an_aware_time() -> None:
    entry = write()
    with pytest.raises(InvalidValue):
        entry.delete(AUTHOR, deleted_at=datetime(2025, 1, 1))  # noqa: DTZ001
    assert not entry.is_deleted


def test_making_an_entry_private_hides_it_from_the_admin_who_did_it() -> None:
    entry = write()
    admin = actor_in(TEAM, Role.ADMIN)
    entry.change_visibility(admin, Visibility.PRIVATE)
    assert not entry.is_visible_to(admin)
    with pytest.raises(NotFound):
        entry.change_visibility(admin, Visibility.TEAM)


# -- properties -------------------------------------------------------------------------

tag_text = st.text(min_size=1, max_size=8).filter(lambda t: t.strip() != "")


@given(st.lists(tag_text, max_size=12))
def test_tag_normalisation_properties(tags: list[str]) -> None:
    result = normalise_tags(tags)
    assert result == normalise_tags(result), "normalising twice changes nothing"
    assert len(result) == len(set(result))
    assert all(t == t.strip().lower() and t for t in result)
    assert set(result) == {t.strip().lower() for t in tags}
    firsts = [t.strip().lower() for t in tags]
    assert result == sorted(set(firsts), key=firsts.index), "first appearance keeps its place"


edits = st.lists(
    st.tuples(
        st.sampled_from(["edit", "visibility", "delete", "restore"]),
        st.sampled_from(["a", "B", " a "]),
        st.lists(st.sampled_from(["x", "X", "y"]), max_size=3),
    ),
    max_size=15,
)


@given(edits)
def test_any_history_replays_to_the_live_entry(steps: list[tuple[str, str, list[str]]]) -> None:
    entry = write()
    history: list[AnyEvent] = list(entry.collect_events())
    for kind, text, tags in steps:
        try:
            if kind == "edit":
                entry.edit(AUTHOR, title=text, tags=tags)
            elif kind == "visibility":
                entry.change_visibility(AUTHOR, Visibility(["team", "private"][len(tags) % 2]))
            elif kind == "delete":
                entry.delete(AUTHOR, deleted_at=NOW)
            else:
                entry.restore(AUTHOR)
        except (EntryDeleted, EntryNotDeleted):
            assert entry.pending_events == []
        history += entry.collect_events()
    assert replay(JournalEntry, history) == entry
    assert [e.originator_version for e in history] == list(range(1, len(history) + 1))


def test_event_ids_belong_to_the_entry() -> None:
    entry = write()
    entry.edit(AUTHOR, body="b")
    assert {e.originator_id for e in entry.collect_events()} == {entry.id}
    assert isinstance(entry.id, UUID)
