"""The public event catalog: every internal event's public form, and no secret in any."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import orjson
import pytest
from eventsourcing.persistence import StoredEvent

from aggregates.base import Actor, DomainEvent, EventMetadata, Role
from aggregates.journal_entry import JournalEntry
from aggregates.prompt import Prompt
from aggregates.quota import MonthlyQuota
from aggregates.team import Team
from infra.serialization import OrjsonTranscoder, PydanticMapper
from projections.base import Fact, topic_of
from projections.public_events import (
    PUBLIC_TOPICS,
    PUBLIC_TYPES,
    UnknownTeam,
    own_fields,
    public_event,
    public_type_of,
)
from tests.unit.projections import Log
from tests.unit.projections.history import History, full_history, with_an_issued_prompt

EXPECTED_TYPES = [
    "entry.created", "entry.edited", "entry.deleted", "entry.restored",
    "entry.visibility_changed", "team.created", "team.renamed", "team.plan_changed",
    "team.member_added", "team.member_role_changed", "team.member_removed",
    "team.api_key_issued", "team.api_key_revoked", "prompt.created", "prompt.edited",
    "prompt.archived", "prompt.issued", "webhook.registered", "webhook.updated",
    "webhook.secret_rotated", "webhook.disabled", "webhook.enabled", "webhook.deleted",
    "team.quota_threshold_reached", "team.quota_exhausted",
]  # fmt: skip
INTERNAL = {topic_of(MonthlyQuota, "Started"), topic_of(MonthlyQuota, "EntryCounted")}


DUE = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def history() -> History:
    return with_an_issued_prompt(full_history())


def docs_by_type(history: History) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for fact in history.facts:
        doc = public_event(fact)
        if doc is not None:
            found.setdefault(doc["type"], []).append(doc)
    return found


def test_the_catalog_has_every_public_type_once() -> None:
    assert sorted(PUBLIC_TYPES) == sorted(EXPECTED_TYPES)
    assert len(set(PUBLIC_TYPES)) == len(PUBLIC_TYPES)


def test_the_history_covers_every_type_and_every_internal_event(history: History) -> None:
    assert set(docs_by_type(history)) == set(EXPECTED_TYPES)
    assert {f.topic for f in history.facts} == PUBLIC_TOPICS | INTERNAL


def test_internal_bookkeeping_events_have_no_public_form(history: History) -> None:
    internal = [f for f in history.facts if f.topic in INTERNAL]
    assert len(internal) == 2
    assert all(public_event(f) is None for f in internal)


def test_the_envelope(history: History) -> None:
    fact = next(f for f in history.facts if f.topic == topic_of(JournalEntry, "Created"))
    doc = public_event(fact)
    assert doc is not None
    assert list(doc) == [
        "id", "type", "position", "team_id", "aggregate_id", "aggregate_version", "occurred_at",
        "actor", "data",
    ]  # fmt: skip
    assert doc["id"] == f"evt_{fact.position}"
    assert doc["type"] == "entry.created"
    assert doc["position"] == fact.position
    assert doc["team_id"] == str(history.owner.team_id)
    assert doc["aggregate_id"] == str(history.entry_id)
    assert doc["aggregate_version"] == 1
    assert doc["occurred_at"] == fact.event.timestamp.isoformat()
    assert doc["occurred_at"].endswith("+00:00")
    assert doc["actor"] == {"user_id": str(history.member.user_id), "key_id": "memberkey0000001"}


def test_every_type_publishes_exactly_its_fields(history: History) -> None:
    h = history
    member, owner, keys = str(h.member.user_id), str(h.owner.user_id), h.secrets
    expected: dict[str, list[dict[str, Any]]] = {
        "team.created": [{
            "name": "Acme", "plan": "team", "owner_user_id": owner,
            "owner_email": "o@example.com", "owner_display_name": "O",
        }],
        "team.renamed": [{"name": "Acme Inc"}],
        "team.plan_changed": [{"plan": "enterprise"}],
        "team.member_added": [
            {"user_id": member, "email": "m@example.com", "display_name": "M", "role": "admin"},
            {"user_id": str(h.leaver), "email": "l@example.com", "display_name": "L",
             "role": "member"},
        ],
        "team.member_role_changed": [{"user_id": member, "role": "member"}],
        "team.api_key_issued": [{"key_id": "k" * 16, "user_id": member, "name": "laptop"}],
        "team.api_key_revoked": [{"key_id": "k" * 16, "user_id": member, "reason": "revoked"}],
        "team.member_removed": [{"user_id": str(h.leaver)}],
        "prompt.created": [{
            "text": "What went well?",
            "schedule": {"cron": "0 9 * * 1", "timezone": "Europe/Berlin"},
        }, {"text": "Weekly?", "schedule": {"cron": "0 9 * * 1", "timezone": "UTC"}}],
        "prompt.edited": [{"text": "What did you learn?", "schedule": None}],
        "prompt.archived": [{}],
        "prompt.issued": [{"due_at": "2026-01-05T08:00:00+00:00", "text": "Weekly?"}],
        "entry.created": [{
            "author_id": member, "title": "Private", "body": "b", "tags": ["a"],
            "visibility": "private", "prompt_id": str(h.prompt_id),
        }],
        "entry.edited": [{"title": "Still private", "body": "b", "tags": ["a"]}],
        "entry.visibility_changed": [{"visibility": "team"}, {"visibility": "private"}],
        "entry.deleted": [{"deleted_at": "2026-01-02T03:04:05+00:00"}],
        "entry.restored": [{}],
        "team.quota_threshold_reached": [
            {"threshold_percent": 90, "used": 1, "limit": 1, "month": "2026-01"},
        ],
        "team.quota_exhausted": [{"used": 1, "limit": 1, "month": "2026-01"}],
        "webhook.registered": [{
            "url": "https://hooks.example.org/in", "event_types": ["entry.created"],
            "description": "CI", "secret_fingerprint": keys.fingerprint(0),
        }],
        "webhook.updated": [{
            "url": "https://hooks.example.org/in", "event_types": ["entry.created"],
            "description": "CI hook",
        }],
        "webhook.secret_rotated": [{
            "new_fingerprint": keys.fingerprint(1),
            "previous_valid_until": "2026-01-03T01:00:00+00:00",
        }],
        "webhook.disabled": [{"reason": "receiver is down"}],
        "webhook.enabled": [{}],
        "webhook.deleted": [{}],
    }  # fmt: skip
    found = {t: [d["data"] for d in docs] for t, docs in docs_by_type(h).items()}
    assert found == expected


def test_each_field_of_each_event_is_published_or_withheld_on_purpose(history: History) -> None:
    """A field added to an event fails here until the catalog says what becomes of it."""
    for fact in history.facts:
        public = public_type_of(fact.topic)
        if public is None:
            continue
        assert not set(public.fields) & public.withheld, public.name
        assert own_fields(fact) == set(public.fields) | public.withheld, public.name


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_no_public_document_holds_a_secret(history: History) -> None:
    keys = history.secrets
    forbidden = [keys.key_hash, keys.key_secret, *keys.webhook_secrets, *keys.secret_ids]
    # The history does hold them, so the test below can fail.
    stored = orjson.dumps([f.data for f in history.facts], default=str).decode()
    assert keys.key_hash in stored
    assert all(secret_id in stored for secret_id in keys.secret_ids)
    for fact in history.facts:
        doc = public_event(fact)
        if doc is None:
            continue
        text = orjson.dumps(doc).decode()
        assert "secret_hash" not in text
        assert "whsec_" not in text
        assert "secret_id" not in text
        assert not any(secret in text for secret in forbidden), doc["type"]
        assert not any(s.startswith("whsec_") for s in _strings(doc))


def test_documents_are_plain_json(history: History) -> None:
    for fact in history.facts:
        doc = public_event(fact)
        if doc is not None:
            # The standard library's encoder accepts no UUID, datetime or enum.
            assert json.loads(json.dumps(doc)) == doc


def test_no_metadata_means_no_actor_and_the_event_names_the_team() -> None:
    owner = Actor(uuid4(), Role.OWNER, uuid4())
    entry = JournalEntry.create(owner, id=uuid4(), title="t", body="")
    team = Team.create(
        id=owner.team_id, name="T", plan="team", owner_user_id=owner.user_id,
        owner_email="o@example.com", owner_display_name="O",
    )  # fmt: skip
    team.rename(owner, "U")
    log = Log()
    for fact in [*log.facts(entry), *log.facts(team)]:
        doc = public_event(fact)
        assert doc is not None
        assert doc["actor"] is None
        assert doc["team_id"] == str(owner.team_id)


def test_the_metadata_names_the_team_first() -> None:
    owner = Actor(uuid4(), Role.OWNER, uuid4())
    entry = JournalEntry.create(owner, id=uuid4(), title="t", body="")
    [fact] = Log().facts(entry)
    other = uuid4()
    metadata = EventMetadata(team_id=other, actor_user_id=None, actor_key_id="keyonly")
    doc = public_event(Fact(1, fact.topic, fact.event.model_copy(update={"metadata": metadata})))
    assert doc is not None
    assert doc["team_id"] == str(other)
    assert doc["actor"] == {"user_id": None, "key_id": "keyonly"}


def test_an_event_no_team_can_be_named_for_is_refused() -> None:
    owner = Actor(uuid4(), Role.OWNER, uuid4())
    entry = JournalEntry.create(owner, id=uuid4(), title="t", body="")
    log = Log()
    log.facts(entry)
    entry.edit(owner, title="u")
    [edited] = log.facts(entry)
    with pytest.raises(UnknownTeam):
        public_event(edited)


def test_a_threshold_event_stored_before_it_had_a_month_is_published_with_one() -> None:
    """Version 1 of MonthlyQuota.ThresholdReached, in the bytes it was stored as:
    the mapper upcasts it, so the document has ``month`` like a new one."""
    team_id = uuid4()
    quota_id = MonthlyQuota.id_for(team_id, "2026-01")
    stored = (
        f'{{"originator_id":"{quota_id}","originator_version":2,'
        f'"timestamp":"2026-01-09T08:00:00+00:00","metadata":{{"team_id":"{team_id}",'
        f'"actor_user_id":"{uuid4()}"}},"threshold_percent":90,"used":1,"limit":1}}'
    ).encode()
    topic = topic_of(MonthlyQuota, "ThresholdReached")
    mapper = PydanticMapper(transcoder=OrjsonTranscoder())
    event = mapper.to_domain_event(StoredEvent(quota_id, 2, topic, stored))
    assert isinstance(event, DomainEvent)
    doc = public_event(Fact(7, topic, event))
    assert doc is not None
    assert doc["type"] == "team.quota_threshold_reached"
    assert doc["team_id"] == str(team_id)
    assert doc["data"] == {"threshold_percent": 90, "used": 1, "limit": 1, "month": "2026-01"}
    # Whose entry crossed the threshold is not told (it may be a private one).
    assert doc["actor"] is None


def test_an_issued_prompt_names_its_team_and_no_actor(history: History) -> None:
    [fact] = [f for f in history.facts if f.topic == topic_of(Prompt, "Issued")]
    doc = public_event(fact)
    assert doc is not None
    assert doc["type"] == "prompt.issued"
    assert doc["team_id"] == str(history.owner.team_id)
    assert doc["actor"] is None
