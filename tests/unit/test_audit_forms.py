"""The audit forms, pure: every event class is reviewed for secrets, items and
states never carry secret material, and entry visibility as version ranges."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from eventsourcing.utils import get_topic

from aggregates.base import Aggregate, AggregateSnapshot, DomainEvent
from aggregates.journal_entry import Visibility
from aggregates.quota import MonthlyQuota
from infra.audit_events import ACTOR_WITHHELD, KNOWN_TOPICS, audit_type, event_item, withheld_of
from infra.audit_history import entry_ranges
from infra.audit_state import AGGREGATE_TYPES, state_of
from projections.base import Fact, topic_of
from projections.public_events import PUBLIC_TOPICS, public_type_of
from tests.unit.projections.history import History, full_history, with_an_issued_prompt

_ENVELOPE = {"originator_id", "originator_version", "originator_topic", "timestamp", "metadata"}


def _event_classes() -> list[type[DomainEvent]]:
    """Every event class of every aggregate (snapshots are not events of the log)."""
    return [
        value
        for aggregate in AGGREGATE_TYPES
        for name, value in vars(aggregate).items()
        if isinstance(value, type)
        and issubclass(value, DomainEvent)
        and not issubclass(value, AggregateSnapshot)
        and name != "Event"
    ]


@pytest.fixture
def history() -> History:
    return with_an_issued_prompt(full_history())


def _rebuilt(facts: list[Fact]) -> dict[UUID, Aggregate]:
    aggregates: dict[UUID, Any] = {}
    for fact in facts:
        aggregates[fact.aggregate_id] = fact.event.mutate(aggregates.get(fact.aggregate_id))  # type: ignore[attr-defined]
    return aggregates


def _secrets(history: History) -> list[str]:
    keys = history.secrets
    return [keys.key_hash, keys.key_secret, *keys.webhook_secrets, *keys.secret_ids]


def test_every_event_class_was_reviewed_for_secrets(history: History) -> None:
    classes = {get_topic(cls): cls for cls in _event_classes()}
    # The library gives every aggregate a Created class; where creation has another
    # name (Started, Registered) it is never stored, and it has no fields anyway.
    unused = {
        t
        for t, cls in classes.items()
        if t.endswith(".Created") and set(cls.model_fields) <= _ENVELOPE
    }
    assert set(classes) - unused == set(KNOWN_TOPICS)
    assert {f.topic for f in history.facts} == set(KNOWN_TOPICS)


def test_what_the_public_catalog_withholds_the_audit_withholds_too() -> None:
    # Except team_id: the public envelope has it; an audit item's data may repeat it.
    for topic in PUBLIC_TOPICS:
        public = public_type_of(topic)
        assert public is not None
        withheld = withheld_of(topic)
        assert withheld is not None
        assert public.withheld - {"team_id"} <= withheld, topic


def test_items_carry_every_field_but_secrets_and_the_metadata(history: History) -> None:
    items = [event_item(f.position, f.topic, f.event) for f in history.facts]
    text = orjson.dumps(items).decode()
    for secret in _secrets(history):
        assert secret not in text
    for fact, item in zip(history.facts, items, strict=True):
        withheld = withheld_of(fact.topic)
        assert withheld is not None
        assert set(item["data"]) == set(fact.data) - _ENVELOPE - withheld
        assert item["position"] == fact.position
        assert item["aggregate_version"] == fact.version
        assert item["occurred_at"] == fact.event.timestamp.isoformat()
        metadata = fact.event.metadata
        assert metadata is not None
        if fact.topic in ACTOR_WITHHELD:
            continue
        assert item["metadata"] == orjson.loads(metadata.model_dump_json())
        if metadata.actor_user_id is None:  # Chronik's own act (the scheduler's)
            assert item["actor"] is None
            continue
        assert item["actor"] == {
            "user_id": str(metadata.actor_user_id),
            "key_id": metadata.actor_key_id,
        }
    types = [item["type"] for item in items]
    assert "team.api_key_issued" in types
    assert "quota.started" in types
    assert "quota.entry_counted" in types
    assert "team.quota_threshold_reached" in types


def test_a_counted_entry_names_neither_its_author_nor_its_command(history: History) -> None:
    # A quota counts an entry in the command that writes it: who, through which
    # command and request would tell that a member wrote a (maybe private) entry then.
    # The month's quota is started in such a command too.
    withheld = {topic_of(MonthlyQuota, "Started"), topic_of(MonthlyQuota, "EntryCounted")}
    assert withheld == ACTOR_WITHHELD
    counted = [f for f in history.facts if f.topic in withheld]
    assert {f.topic for f in counted} == withheld
    for fact in counted:
        metadata = fact.event.metadata
        assert metadata is not None
        assert metadata.actor_user_id is not None
        item = event_item(fact.position, fact.topic, fact.event)
        assert item["actor"] is None
        assert item["metadata"] == {"team_id": str(metadata.team_id)}
        assert "entry_id" not in item["data"]
        # Where and when stay: somebody's entry counted at that time.
        assert (item["position"], item["aggregate_version"], item["type"]) == (
            fact.position,
            fact.version,
            audit_type(fact.topic),
        )
        assert item["occurred_at"] == fact.event.timestamp.isoformat()
        text = orjson.dumps(item).decode()
        for value in (
            metadata.actor_user_id,
            metadata.actor_key_id,
            metadata.command,
            metadata.idempotency_key,
            metadata.correlation_id,
            metadata.causation_id,
            metadata.request_id,
            fact.data.get("entry_id"),
        ):
            if value is not None:
                assert str(value) not in text


def test_derived_type_names_are_stable_snake_case() -> None:
    assert audit_type("aggregates.quota:MonthlyQuota.EntryCounted") == "quota.entry_counted"
    assert audit_type("aggregates.journal_entry:JournalEntry.Edited") == "entry.edited"
    assert audit_type("somewhere:Unknown.ThingHappened") == "unknown.thing_happened"


def test_an_event_class_nobody_reviewed_gives_no_data(history: History) -> None:
    fact = history.facts[0]
    item = event_item(fact.position, "somewhere:Unknown.ThingHappened", fact.event)
    assert item["data"] is None
    assert item["type"] == "unknown.thing_happened"


def test_every_aggregate_has_a_state_form_without_secrets() -> None:
    history = full_history()  # one prompt: states are keyed by type below
    aggregates = _rebuilt(history.facts)
    states = {AGGREGATE_TYPES[type(a)]: state_of(a) for a in aggregates.values()}
    assert set(states) == {"team", "entry", "prompt", "webhook", "quota"}
    text = orjson.dumps(states).decode()
    for secret in _secrets(history):
        assert secret not in text
    team = states["team"]
    assert team["name"] == "Acme Inc"
    assert team["api_keys"] == [
        {"key_id": "k" * 16, "user_id": str(history.member.user_id), "name": "laptop",
         "revoked": True},
    ]  # fmt: skip
    assert history.leaver not in {m["user_id"] for m in team["members"]}
    entry = states["entry"]
    assert (entry["title"], entry["visibility"], entry["deleted_at"]) == (
        "Still private",
        "private",
        None,
    )
    webhook = states["webhook"]
    assert [s["fingerprint"] for s in webhook["secrets"]] == [
        history.secrets.fingerprint(0),
        history.secrets.fingerprint(1),
    ]
    assert (webhook["deleted"], webhook["disabled"]) == (True, False)
    assert states["prompt"]["archived"] is True
    assert (states["quota"]["used"], states["quota"]["threshold_reached"]) == (1, True)
    for state in states.values():
        assert state["created_at"].endswith("+00:00")


AUTHOR, READER = uuid4(), uuid4()
P, T = Visibility.PRIVATE, Visibility.TEAM


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ([(1, T)], ((1, None),)),
        ([(1, P)], ()),
        ([(1, P), (3, T)], ((3, None),)),
        ([(1, T), (4, P)], ((1, 3),)),
        ([(1, P), (3, T), (5, P), (9, T)], ((3, 4), (9, None))),
    ],
)
def test_a_reader_sees_an_entry_s_events_while_it_is_the_team_s(
    changes: list[tuple[int, Visibility]], expected: tuple[tuple[int, int | None], ...]
) -> None:
    assert entry_ranges(AUTHOR, changes, READER) == expected
    assert entry_ranges(AUTHOR, changes, AUTHOR) == ((1, None),)
