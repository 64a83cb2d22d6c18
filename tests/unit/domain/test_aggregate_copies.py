"""Aggregates copy cheaply and completely (``Aggregate.__deepcopy__``): the event
store hands every command and every authentication a copy of a cached
aggregate, and a change to that copy must never reach the cache."""

from __future__ import annotations

import importlib
import pkgutil
from copy import deepcopy
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import aggregates
import aggregates.journal_entry
import aggregates.prompt
from aggregates.base import Aggregate, Role
from aggregates.notification_preferences import NotificationKind, NotificationPreferences
from aggregates.prompt import Schedule
from aggregates.quota import MonthlyQuota
from aggregates.team import Team
from aggregates.webhook_endpoint import WebhookEndpoint
from tests.unit.domain import actor_in

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _team() -> tuple[Team, Any]:
    owner = uuid4()
    team = Team.create(
        id=uuid4(), name="Crew", plan="free", owner_user_id=owner,
        owner_email="o@example.org", owner_display_name="Olga",
    )  # fmt: skip
    actor = actor_in(team.id, Role.OWNER, owner)
    team.add_member(
        actor, user_id=uuid4(), email="m@example.org", display_name="M", role=Role.MEMBER
    )
    team.issue_api_key(actor, key_id="k1", user_id=owner, name="laptop", secret_hash="scrypt$x")
    team.revoke_api_key(actor, "k1")
    return team, actor


def _examples() -> list[Aggregate]:
    team, owner = _team()
    entry = aggregates.journal_entry.JournalEntry.create(
        owner, id=uuid4(), title="Standup", body="Shipped.", tags=["ops", "daily"],
        visibility=aggregates.journal_entry.Visibility.TEAM,
    )  # fmt: skip
    preferences = NotificationPreferences.start(owner)
    preferences.change(owner, NotificationKind.ENTRY_SHARED, email=False)
    prompt = aggregates.prompt.Prompt.create(
        owner,
        id=uuid4(),
        text="How did it go?",
        schedule=Schedule(cron="0 9 * * 1", timezone="UTC"),
    )
    prompt.issue(NOW)
    quota = MonthlyQuota.start(team.id, "2026-12")
    quota.reserve(entry.id, 10)
    webhook = WebhookEndpoint.register(
        owner, id=uuid4(), url="https://example.org/hook", event_types=["entry.created"],
        description="ours", secret_id="s1", secret_fingerprint="f1",
    )  # fmt: skip
    webhook.rotate_secret(
        owner,
        new_secret_id="s2",
        new_fingerprint="f2",
        previous_valid_until=NOW + timedelta(days=1),
    )
    return [team, entry, preferences, prompt, quota, webhook]


def _subclasses(cls: type[Aggregate]) -> set[type[Aggregate]]:
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(sub) for sub in found))


def test_every_aggregate_class_has_an_example() -> None:
    for module in pkgutil.iter_modules(aggregates.__path__):
        importlib.import_module(f"aggregates.{module.name}")
    ours = {cls for cls in _subclasses(Aggregate) if cls.__module__.startswith("aggregates.")}
    assert {type(a) for a in _examples()} == ours


def _hashable(value: object) -> bool:
    """Hashable all the way down (a frozen record holding a list is not)."""
    try:
        hash(value)
    except TypeError:
        return False
    return True


def test_attributes_hold_immutable_values_or_containers_of_them() -> None:
    """What makes copying the containers a deep copy: values that hash all the
    way down are ours to share (frozen records, tuples, UUIDs, strings,
    datetimes). Pending events are the exception: copied as a list, shared as
    events, which are never changed once made."""
    for aggregate in _examples():
        for name, value in vars(aggregate).items():
            if name == "_pending_events":
                continue
            if isinstance(value, dict):
                items = [*value.keys(), *value.values()]
            elif isinstance(value, list | set):
                items = list(value)
            else:
                items = [value]
            unhashable = [item for item in items if not _hashable(item)]
            assert unhashable == [], f"{type(aggregate).__name__}.{name}"


def test_a_copy_is_equal_and_shares_no_container() -> None:
    for aggregate in _examples():
        copied = deepcopy(aggregate)
        assert type(copied) is type(aggregate)
        assert vars(copied) == vars(aggregate)
        for name, value in vars(aggregate).items():
            if isinstance(value, dict | list | set):
                assert vars(copied)[name] is not value, f"{type(aggregate).__name__}.{name}"


def test_changing_a_copy_leaves_the_original_as_it_was() -> None:
    team, owner = _team()
    before = deepcopy(vars(team))
    copied = deepcopy(team)
    copied.add_member(
        owner, user_id=uuid4(), email="n@example.org", display_name="N", role=Role.ADMIN
    )
    copied.issue_api_key(owner, key_id="k2", user_id=owner.user_id, name="phone", secret_hash="s$y")
    copied.collect_events()

    assert vars(team) == before
    assert len(copied.members) == len(team.members) + 1
    assert team.version + 2 == copied.version
