from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from aggregates.base import Actor, Role
from aggregates.errors import (
    Forbidden,
    InvalidValue,
    NotFound,
    WebhookDeleted,
    WebhookDisabled,
)
from aggregates.webhook_endpoint import WebhookEndpoint
from tests.unit.domain import AnyEvent, actor_in, data, names, replay

TEAM = uuid4()
ADMIN = actor_in(TEAM, Role.ADMIN)
NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def register(actor: Actor = ADMIN) -> WebhookEndpoint:
    return WebhookEndpoint.register(
        actor,
        id=uuid4(),
        url=" https://hooks.example.org/in ",
        event_types=["entry.created", " entry.deleted", "entry.created"],
        description=" CI ",
        secret_id="sec-1",
        secret_fingerprint="fp-1",
    )


def test_register_records_the_secrets_id_and_fingerprint_only() -> None:
    endpoint = register()
    events = endpoint.collect_events()
    assert names(events) == ["Registered"]
    assert data(events[0]) == {
        "team_id": TEAM,
        "url": "https://hooks.example.org/in",
        "event_types": ["entry.created", "entry.deleted"],
        "description": "CI",
        "secret_id": "sec-1",
        "secret_fingerprint": "fp-1",
    }
    assert endpoint.active_secret_ids(NOW) == ["sec-1"]
    assert replay(WebhookEndpoint, events) == endpoint


def test_event_filter() -> None:
    endpoint = register()
    assert endpoint.accepts("entry.created")
    assert not endpoint.accepts("team.member_added")
    endpoint.update(ADMIN, event_types=[])
    assert endpoint.accepts("team.member_added"), "no filter means every event"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"url": "  "}, "url"), ({"event_types": ["ok", ""]}, "event_types")],
)
def test_register_and_update_refuse_blank_values(kwargs: dict[str, object], field: str) -> None:
    endpoint = register()
    endpoint.collect_events()
    with pytest.raises(InvalidValue) as caught:
        endpoint.update(ADMIN, **kwargs)  # type: ignore[arg-type]
    assert caught.value.details["field"] == field
    assert endpoint.collect_events() == []


Command = Callable[[WebhookEndpoint, Actor], None]


def _disabled_then_enable(endpoint: WebhookEndpoint, actor: Actor) -> None:
    endpoint.disable_automatically(reason="410 Gone")
    endpoint.enable(actor)


COMMANDS: dict[str, Command] = {
    "update": lambda w, a: w.update(a, description="changed"),
    "rotate": lambda w, a: w.rotate_secret(
        a, new_secret_id="sec-2", new_fingerprint="fp-2", previous_valid_until=NOW
    ),
    "disable": lambda w, a: w.disable(a, reason="maintenance"),
    "enable": _disabled_then_enable,
    "delete": lambda w, a: w.delete(a),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("role", list(Role))
def test_only_managers_manage_webhooks(command: str, role: Role) -> None:
    actor = actor_in(TEAM, role)
    if actor.is_manager:
        endpoint = register(actor)
        history: list[AnyEvent] = list(endpoint.collect_events())
        COMMANDS[command](endpoint, actor)
        history += endpoint.collect_events()
        assert len(history) >= 2
        assert replay(WebhookEndpoint, history) == endpoint
    else:
        with pytest.raises(Forbidden):
            register(actor)
        endpoint = register()
        endpoint.collect_events()
        with pytest.raises(Forbidden):
            COMMANDS[command](endpoint, actor)
        assert names(endpoint.collect_events()) in ([], ["Disabled"])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_another_teams_owner_gets_not_found(command: str) -> None:
    endpoint = register()
    with pytest.raises(NotFound):
        COMMANDS[command](endpoint, actor_in(uuid4(), Role.OWNER))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_deleted_endpoints_refuse_everything(command: str) -> None:
    endpoint = register()
    endpoint.delete(ADMIN)
    endpoint.collect_events()
    with pytest.raises(WebhookDeleted):
        COMMANDS[command](endpoint, ADMIN)
    with pytest.raises(WebhookDeleted):
        endpoint.require_deliverable()
    with pytest.raises(WebhookDeleted):
        endpoint.disable_automatically(reason="410")
    assert endpoint.collect_events() == []


def test_update_no_op_records_nothing() -> None:
    endpoint = register()
    endpoint.collect_events()
    endpoint.update(ADMIN)
    endpoint.update(
        ADMIN,
        url="https://hooks.example.org/in",
        event_types=["entry.created", "entry.deleted", "entry.created"],
        description="CI ",
    )
    assert endpoint.collect_events() == []
    endpoint.update(ADMIN, event_types=["entry.deleted", "entry.created"])
    assert names(endpoint.collect_events()) == ["Updated"]


def test_rotation_keeps_the_previous_secret_until_the_given_time() -> None:
    endpoint = register()
    history = list(endpoint.collect_events())
    endpoint.rotate_secret(
        ADMIN,
        new_secret_id="sec-2",
        new_fingerprint="fp-2",
        previous_valid_until=NOW + timedelta(hours=24),
    )
    (rotated,) = endpoint.collect_events()
    history.append(rotated)
    assert data(rotated) == {
        "new_secret_id": "sec-2",
        "new_fingerprint": "fp-2",
        "previous_secret_id": "sec-1",
        "previous_valid_until": NOW + timedelta(hours=24),
    }
    assert endpoint.current_secret.fingerprint == "fp-2"
    assert endpoint.active_secret_ids(NOW) == ["sec-2", "sec-1"]
    assert endpoint.active_secret_ids(NOW + timedelta(hours=24)) == ["sec-2"]
    endpoint.rotate_secret(
        ADMIN, new_secret_id="sec-3", new_fingerprint="fp-3", previous_valid_until=NOW
    )
    history += endpoint.collect_events()
    assert endpoint.active_secret_ids(NOW - timedelta(seconds=1)) == ["sec-3", "sec-2", "sec-1"]
    assert endpoint.active_secret_ids(NOW) == ["sec-3", "sec-1"]
    assert replay(WebhookEndpoint, history) == endpoint


def test_rotation_refuses_a_reused_secret_id_and_naive_times() -> None:
    endpoint = register()
    endpoint.collect_events()
    with pytest.raises(InvalidValue):
        endpoint.rotate_secret(
            ADMIN, new_secret_id="sec-1", new_fingerprint="fp", previous_valid_until=NOW
        )
    with pytest.raises(InvalidValue):
        endpoint.rotate_secret(
            ADMIN,
            new_secret_id="sec-2",
            new_fingerprint="fp",
            previous_valid_until=datetime(2025, 1, 1),  # noqa: DTZ001
        )
    with pytest.raises(InvalidValue):
        endpoint.active_secret_ids(datetime(2025, 1, 1))  # noqa: DTZ001
    assert endpoint.collect_events() == []


def test_disable_and_enable() -> None:
    endpoint = register()
    history = list(endpoint.collect_events())
    endpoint.require_deliverable()
    endpoint.disable_automatically(reason="receiver answered 410")
    endpoint.disable(ADMIN, reason="again")
    endpoint.disable_automatically(reason="and again")
    assert endpoint.disabled_reason == "receiver answered 410"
    with pytest.raises(WebhookDisabled) as caught:
        endpoint.require_deliverable()
    assert caught.value.details["reason"] == "receiver answered 410"
    endpoint.update(ADMIN, url="https://fixed.example.org/")
    endpoint.enable(ADMIN)
    endpoint.enable(ADMIN)
    endpoint.require_deliverable()
    history += endpoint.collect_events()
    assert names(history) == ["Registered", "Disabled", "Updated", "Enabled"]
    with pytest.raises(InvalidValue):
        endpoint.disable(ADMIN, reason=" ")
    assert replay(WebhookEndpoint, history) == endpoint
