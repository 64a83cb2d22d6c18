from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from aggregates.base import Actor, Role
from aggregates.webhook_endpoint import WebhookEndpoint
from projections.folding import MissingRow
from projections.webhooks import WebhookFold, WebhooksProjection
from tests.unit.projections import Log, fold_rows

OWNER = Actor(user_id=uuid4(), role=Role.OWNER, team_id=uuid4())
LATER = datetime.now(UTC) + timedelta(days=1)


def register() -> WebhookEndpoint:
    return WebhookEndpoint.register(
        OWNER,
        id=uuid4(),
        url="https://hooks.example.org/in",
        event_types=["entry.created"],
        description="CI",
        secret_id="sec_first",
        secret_fingerprint="fp-first",
    )


def test_registered_makes_an_enabled_endpoint_with_its_fingerprint_only() -> None:
    endpoint = register()
    facts = Log().facts(endpoint)
    assert {f.topic for f in facts} <= WebhooksProjection().topics
    assert fold_rows(WebhookFold(), facts) == {
        (endpoint.id,): {
            "id": endpoint.id,
            "team_id": OWNER.team_id,
            "url": "https://hooks.example.org/in",
            "event_types": ["entry.created"],
            "description": "CI",
            "enabled": True,
            "disabled_reason": None,
            "secret_fingerprint": "fp-first",
            "version": 1,
            "created_at": endpoint.created_on,
            "updated_at": endpoint.created_on,
            "created_position": 1,
            "position": 1,
        }
    }


def test_updates_rotation_and_disabling_follow_the_aggregate() -> None:
    endpoint = register()
    endpoint.update(OWNER, url="https://hooks.example.org/v2", event_types=[], description="")
    endpoint.rotate_secret(
        OWNER, new_secret_id="sec_second", new_fingerprint="fp-second", previous_valid_until=LATER
    )
    endpoint.disable(OWNER, reason="receiver is down")
    facts = Log().facts(endpoint)
    assert {f.topic for f in facts} <= WebhooksProjection().topics
    row = fold_rows(WebhookFold(), facts)[(endpoint.id,)]
    assert (row["url"], row["event_types"], row["description"]) == (
        "https://hooks.example.org/v2",
        [],
        "",
    )
    assert row["secret_fingerprint"] == "fp-second"
    assert (row["enabled"], row["disabled_reason"]) == (False, "receiver is down")
    assert (row["version"], row["position"]) == (endpoint.version, 4)
    assert not {"sec_first", "sec_second"} & set(map(str, row.values()))

    endpoint.enable(OWNER)
    [enabled] = Log().facts(endpoint)
    again = WebhookFold().fold((endpoint.id,), row, enabled)
    assert again is not None
    assert (again["enabled"], again["disabled_reason"]) == (True, None)


def test_deleting_removes_the_row() -> None:
    endpoint = register()
    log = Log()
    stored = fold_rows(WebhookFold(), log.facts(endpoint))
    endpoint.delete(OWNER)
    assert fold_rows(WebhookFold(), log.facts(endpoint), stored) == {}


def test_a_change_to_an_endpoint_the_table_lacks_stops_the_fold() -> None:
    endpoint = register()
    log = Log()
    log.facts(endpoint)
    endpoint.delete(OWNER)
    with pytest.raises(MissingRow):
        fold_rows(WebhookFold(), log.facts(endpoint))
