from __future__ import annotations

from uuid import uuid4

import pytest

from aggregates.base import Role
from aggregates.errors import Forbidden, InvalidValue
from aggregates.notification_preferences import (
    DEFAULT_CHANNELS,
    Channels,
    NotificationKind,
    NotificationPreferences,
    parse_kind,
)
from tests.unit.domain import actor_in, data, names, replay

TEAM = uuid4()
MEMBER = actor_in(TEAM, Role.MEMBER)


def test_the_id_is_derived_from_team_and_member() -> None:
    prefs = NotificationPreferences.start(MEMBER)
    assert prefs.id == NotificationPreferences.id_for(TEAM, MEMBER.user_id)
    assert prefs.id != NotificationPreferences.id_for(uuid4(), MEMBER.user_id)
    assert prefs.id != NotificationPreferences.id_for(TEAM, uuid4())
    events = prefs.collect_events()
    assert names(events) == ["Created"]
    assert data(events[0]) == {"team_id": TEAM, "user_id": MEMBER.user_id}


def test_defaults_are_inbox_and_email_at_once() -> None:
    prefs = NotificationPreferences.start(MEMBER)
    for kind in NotificationKind:
        assert prefs.channels(kind) == DEFAULT_CHANNELS == Channels(True, True, False)
    assert DEFAULT_CHANNELS.email_mode == "immediate"


def test_a_change_records_the_kinds_three_flags_and_no_change_records_nothing() -> None:
    prefs = NotificationPreferences.start(MEMBER)
    history = list(prefs.collect_events())
    prefs.change(MEMBER, NotificationKind.ENTRY_SHARED, email=False)
    prefs.change(MEMBER, NotificationKind.ENTRY_SHARED, email=False)
    prefs.change(MEMBER, NotificationKind.PROMPT_ISSUED, inbox=True, email=True, digest=False)
    prefs.change(MEMBER, NotificationKind.PROMPT_ISSUED, digest=True)
    events = prefs.collect_events()
    assert names(events) == ["KindChanged", "KindChanged"]
    assert [data(e) for e in events] == [
        {"kind": "entry_shared", "inbox": True, "email": False, "digest": False},
        {"kind": "prompt_issued", "inbox": True, "email": True, "digest": True},
    ]
    assert prefs.channels(NotificationKind.ENTRY_SHARED).email_mode == "off"
    assert prefs.channels(NotificationKind.PROMPT_ISSUED).email_mode == "digest"
    assert prefs.channels(NotificationKind.MEMBER_ADDED) == DEFAULT_CHANNELS
    assert replay(NotificationPreferences, [*history, *events]) == prefs


def test_digest_decides_how_email_goes_whatever_email_says() -> None:
    assert Channels(inbox=True, email=False, digest=True).email_mode == "digest"
    assert Channels(inbox=False, email=False, digest=False).email_mode == "off"
    assert Channels(inbox=False, email=True, digest=False).email_mode == "immediate"


def test_only_the_member_sets_their_own() -> None:
    prefs = NotificationPreferences.start(MEMBER)
    owner = actor_in(TEAM, Role.OWNER)
    with pytest.raises(Forbidden):
        prefs.change(owner, NotificationKind.ENTRY_SHARED, inbox=False)
    elsewhere = actor_in(uuid4(), Role.MEMBER, MEMBER.user_id)
    with pytest.raises(Forbidden):
        prefs.change(elsewhere, NotificationKind.ENTRY_SHARED, inbox=False)


def test_unknown_kinds_are_refused() -> None:
    assert parse_kind("quota_exhausted") is NotificationKind.QUOTA_EXHAUSTED
    with pytest.raises(InvalidValue) as caught:
        parse_kind("everything")
    assert caught.value.details["field"] == "kind"
    assert "entry_shared" in caught.value.details["allowed"]
