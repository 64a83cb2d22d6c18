"""The notification rules, pure: event document + members -> who is told what,
and then what the members' preferences make of it."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import orjson
import pytest

from aggregates.notification_preferences import Channels, NotificationKind
from infra.inbox import MARK_ALL_READ, MARK_READ, SELECT_ONE, UNREAD_COUNT
from infra.notification_consumer import parse_document
from infra.notification_rules import Context, EntryTitle, Member, email_text, notices_for
from infra.notifications import DELIVERY_KEY, plan_rows

TEAM = str(uuid4())
OWNER = Member(str(uuid4()), "o@example.com", "Olga", "owner", 1)
ADMIN = Member(str(uuid4()), "a@example.com", "Ada", "admin", 5)
WRITER = Member(str(uuid4()), "w@example.com", "Wim", "member", 7)
AUDITOR = Member(str(uuid4()), "u@example.com", "Uli", "auditor", 9)
LATE = Member(str(uuid4()), "l@example.com", "Lea", "member", 50)  # joined after the events
MEMBERS = [OWNER, ADMIN, WRITER, AUDITOR, LATE]
ENTRY = str(uuid4())


def doc(
    type_: str, data: dict[str, Any], *, position: int = 20, actor: str | None = None
) -> dict[str, Any]:
    return {
        "id": f"evt_{position}",
        "type": type_,
        "position": position,
        "team_id": TEAM,
        "aggregate_id": ENTRY,
        "aggregate_version": 1,
        "occurred_at": "2026-01-05T08:00:00+00:00",
        "actor": None if actor is None else {"user_id": actor, "key_id": "k"},
        "data": data,
    }


def recipients(document: dict[str, Any], context: Context | None = None) -> list[str]:
    return [n.user_id for n in notices_for(document, MEMBERS, context)]


def created(visibility: str = "team", author: Member = WRITER) -> dict[str, Any]:
    data: dict[str, Any] = {
        "author_id": author.user_id, "title": "Monday", "body": "Shipped  sync.\nAll good.",
        "tags": [], "visibility": visibility, "prompt_id": None,
    }  # fmt: skip
    return doc("entry.created", data, actor=author.user_id)


def test_an_entry_shared_with_the_team_tells_every_other_member_who_was_there() -> None:
    (first, *rest) = notices_for(created(), MEMBERS)
    assert [first.user_id, *(n.user_id for n in rest)] == [
        OWNER.user_id, ADMIN.user_id, AUDITOR.user_id,
    ]  # fmt: skip
    assert first.kind is NotificationKind.ENTRY_SHARED
    assert first.title == "Wim shared “Monday”"
    assert first.body == "Wim shared “Monday” with the team.\n\nShipped sync. All good."
    assert first.data == {
        "event_id": "evt_20", "event_type": "entry.created", "aggregate_id": ENTRY,
        "occurred_at": "2026-01-05T08:00:00+00:00", "entry_id": ENTRY,
        "author_id": WRITER.user_id, "title": "Monday",
    }  # fmt: skip


def test_a_private_entry_tells_nobody() -> None:
    assert recipients(created("private")) == []
    assert recipients(doc("entry.visibility_changed", {"visibility": "private"})) == []


def test_an_entry_made_team_visible_tells_all_but_its_author() -> None:
    made_public = doc("entry.visibility_changed", {"visibility": "team"}, actor=ADMIN.user_id)
    context = Context(entry_titles={ENTRY: EntryTitle("Retro", "team", 20)})
    notices = notices_for(made_public, MEMBERS, context)
    assert [n.user_id for n in notices] == [OWNER.user_id, WRITER.user_id, AUDITOR.user_id]
    assert notices[0].title == "Ada shared “Retro”"
    assert notices_for(made_public, MEMBERS)[0].title == "Ada shared an entry"


@pytest.mark.parametrize(
    "known",
    [
        EntryTitle("Secret plans", "private", 25),  # made private again and retitled since
        EntryTitle("Secret plans", "team", 30),  # ... and made team-visible again, later
        EntryTitle("Secret plans", "private", 15),  # the read model is behind the event
    ],
)
def test_an_entry_made_team_visible_never_tells_a_title_the_team_could_not_see(
    known: EntryTitle,
) -> None:
    made_public = doc("entry.visibility_changed", {"visibility": "team"}, actor=ADMIN.user_id)
    notices = notices_for(made_public, MEMBERS, Context(entry_titles={ENTRY: known}))
    assert [n.user_id for n in notices] == [OWNER.user_id, WRITER.user_id, AUDITOR.user_id]
    for notice in notices:
        assert "Secret" not in notice.title + notice.body
        assert notice.title == "Ada shared an entry"
        assert notice.data["title"] is None
    # As of the event itself, or team-visible since before it: the title is told.
    for ok in (EntryTitle("Retro", "team", 20), EntryTitle("Retro", "team", 12)):
        assert notices_for(made_public, MEMBERS, Context(entry_titles={ENTRY: ok}))[0].title == (
            "Ada shared “Retro”"
        )


def test_a_member_added_is_told_themself_if_still_a_member() -> None:
    added = doc(
        "team.member_added",
        {"user_id": LATE.user_id, "email": LATE.email, "display_name": "Lea", "role": "admin"},
        position=50,
    )
    (notice,) = notices_for(added, MEMBERS, Context(team_name="Acme"))
    assert notice.user_id == LATE.user_id
    assert notice.kind is NotificationKind.MEMBER_ADDED
    assert notice.body == "You were added to the team Acme as an admin."
    # Removed since (not among the members any more): nobody is told.
    assert notices_for(added, [OWNER, ADMIN], Context()) == []
    # Removed and added again later: the later addition tells them, not this one.
    readded = Member(LATE.user_id, LATE.email, "Lea", "member", 60)
    assert notices_for(added, [OWNER, readded], Context()) == []


def test_a_role_change_tells_that_member() -> None:
    changed = doc("team.member_role_changed", {"user_id": WRITER.user_id, "role": "admin"})
    (notice,) = notices_for(changed, MEMBERS)
    assert (notice.user_id, notice.kind) == (WRITER.user_id, NotificationKind.ROLE_CHANGED)
    assert notice.data["role"] == "admin"
    gone = [m for m in MEMBERS if m is not WRITER]
    assert notices_for(changed, gone) == []


@pytest.mark.parametrize(
    ("type_", "kind", "data"),
    [
        ("team.quota_threshold_reached", NotificationKind.QUOTA_THRESHOLD,
         {"threshold_percent": 90, "used": 90, "limit": 100, "month": "2026-01"}),
        ("team.quota_exhausted", NotificationKind.QUOTA_EXHAUSTED,
         {"used": 100, "limit": 100, "month": "2026-01"}),
        ("webhook.disabled", NotificationKind.WEBHOOK_DISABLED, {"reason": "HTTP 410 Gone"}),
    ],
)  # fmt: skip
def test_quota_and_webhook_events_tell_owners_and_admins(
    type_: str, kind: NotificationKind, data: dict[str, Any]
) -> None:
    notices = notices_for(doc(type_, data), MEMBERS)
    assert [n.user_id for n in notices] == [OWNER.user_id, ADMIN.user_id]
    assert {n.kind for n in notices} == {kind}
    for key, value in data.items():
        assert notices[0].data[key] == value


def test_texts_say_what_happened() -> None:
    exhausted = doc("team.quota_exhausted", {"used": 100, "limit": 100, "month": "2026-01"})
    assert notices_for(exhausted, MEMBERS)[0].title == "The entry quota for 2026-01 is used up"
    disabled = doc("webhook.disabled", {"reason": "HTTP 410 Gone"})
    context = Context(webhook_urls={ENTRY: "https://hooks.example.org/in"})
    assert notices_for(disabled, MEMBERS, context)[0].body == (
        "The webhook endpoint https://hooks.example.org/in was disabled: HTTP 410 Gone."
    )


def test_an_issued_prompt_tells_every_member_who_writes() -> None:
    issued = doc("prompt.issued", {"due_at": "2026-01-05T08:00:00+00:00", "text": "Why?"})
    notices = notices_for(issued, MEMBERS)
    assert [n.user_id for n in notices] == [OWNER.user_id, ADMIN.user_id, WRITER.user_id]
    assert notices[0].body == "Today's prompt: Why?"
    assert notices[0].data["due_at"] == "2026-01-05T08:00:00+00:00"


def test_other_events_tell_nobody() -> None:
    assert recipients(doc("entry.edited", {"title": "t", "body": "", "tags": []})) == []
    assert recipients(doc("team.member_removed", {"user_id": WRITER.user_id})) == []


def test_the_email_names_the_team_and_greets_the_member() -> None:
    (notice, *_) = notices_for(created(), MEMBERS)
    subject, body = email_text(notice, OWNER, "Acme")
    assert subject == "[Acme] Wim shared “Monday”"
    assert body.startswith("Hello Olga,\n\nWim shared “Monday” with the team.")


def _plan(prefs: dict[tuple[str, str, str], Channels]) -> dict[str, tuple[bool, str, bool]]:
    rows = plan_rows([created()], {TEAM: MEMBERS}, {TEAM: Context(team_name="Acme")}, prefs)
    return {r.member.user_id: (r.inbox, r.email_mode, r.email is not None) for r in rows}


def test_preferences_choose_the_channels() -> None:
    kind = NotificationKind.ENTRY_SHARED.value
    planned = _plan({
        (TEAM, ADMIN.user_id, kind): Channels(inbox=False, email=False, digest=False),
        (TEAM, AUDITOR.user_id, kind): Channels(inbox=True, email=True, digest=True),
    })  # fmt: skip
    assert planned == {
        OWNER.user_id: (True, "immediate", True),  # the defaults
        # ADMIN: every channel off, so no notification at all
        AUDITOR.user_id: (True, "digest", False),  # in the digest, no email at once
    }
    hidden = _plan({(TEAM, OWNER.user_id, kind): Channels(inbox=False, email=True, digest=False)})
    assert hidden[OWNER.user_id] == (False, "immediate", True)


def test_a_row_records_how_it_was_delivered_apart_from_the_data() -> None:
    rows = plan_rows([created(), created()], {TEAM: MEMBERS}, {}, {})
    assert len(rows) == 3  # the same event twice in a batch: one row per member
    stored = rows[0].data_json()
    assert f'"{DELIVERY_KEY}":{{"inbox":true,"email":"immediate"}}' in stored
    for query in (UNREAD_COUNT, SELECT_ONE, MARK_READ, MARK_ALL_READ):
        assert f"'{DELIVERY_KEY}'" in query


def test_only_the_relays_documents_are_accepted() -> None:
    good = created()
    assert parse_document(orjson.dumps(good)) == good
    assert parse_document(b"not json") is None
    assert parse_document(b"[1, 2]") is None
    assert parse_document(orjson.dumps({**good, "team_id": "nope"})) is None
    assert parse_document(orjson.dumps({**good, "position": "7"})) is None
    assert parse_document(orjson.dumps({k: v for k, v in good.items() if k != "data"})) is None
