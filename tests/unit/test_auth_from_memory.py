"""The authenticator's no-wait path (what the event loop asks before handing a
request to a thread): it answers from memory or says it cannot (no database)."""

from __future__ import annotations

import uuid

import pytest

import commands.auth
from aggregates.base import Actor, Role
from aggregates.team import Team
from commands.auth import Authenticator, new_key
from commands.errors import Unauthenticated
from tests.unit.auth_support import TeamStore, team_with_owner_key


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def verify(secret: str, stored: str) -> bool:
        calls.append(secret)
        return secret.startswith("right")

    monkeypatch.setattr(commands.auth, "verify_secret", verify)
    return calls


def _setup() -> tuple[Team, Actor, str, TeamStore]:
    team, owner, key_id = team_with_owner_key()
    return team, owner, key_id, TeamStore(team, key_id)


RIGHT = "right-secret-0000000000"


def test_a_key_seen_before_is_answered_from_memory(scrypt_calls: list[str]) -> None:
    team, actor, key_id, store = _setup()
    authenticator = Authenticator(store)  # type: ignore[arg-type]
    token = f"chk_{key_id}_{RIGHT}"
    assert authenticator.authenticate_from_memory(token) is None  # the key is new here

    first = authenticator.authenticate(token)
    queries = store.queries
    again = authenticator.authenticate_from_memory(token)

    assert again is not None
    assert again.actor == first.actor == Actor(actor.user_id, Role.OWNER, team.id, key_id=key_id)
    assert scrypt_calls == [RIGHT]  # once, by authenticate
    assert store.queries == queries


def test_what_memory_cannot_tell_is_left_to_authenticate(scrypt_calls: list[str]) -> None:
    _, _, key_id, store = _setup()
    authenticator = Authenticator(store)  # type: ignore[arg-type]
    authenticator.authenticate(f"chk_{key_id}_{RIGHT}")

    # Another secret for the same key: only scrypt can judge it.
    assert authenticator.authenticate_from_memory(f"chk_{key_id}_wrong-secret-000000000") is None
    store.in_memory = False  # the team's copy is not known to be current
    assert authenticator.authenticate_from_memory(f"chk_{key_id}_{RIGHT}") is None
    assert scrypt_calls == [RIGHT]


def test_a_revoked_key_is_refused_from_memory(scrypt_calls: list[str]) -> None:
    team, actor, key_id, store = _setup()
    authenticator = Authenticator(store)  # type: ignore[arg-type]
    token = f"chk_{key_id}_{RIGHT}"
    authenticator.authenticate(token)

    team.revoke_api_key(actor, key_id)

    with pytest.raises(Unauthenticated):
        authenticator.authenticate_from_memory(token)
    with pytest.raises(Unauthenticated):
        authenticator.authenticate(token)


def test_a_members_new_role_and_removal_are_judged_from_memory(scrypt_calls: list[str]) -> None:
    team, owner, _, store = _setup()
    member, key = uuid.uuid4(), new_key()
    team.add_member(
        owner, user_id=member, email="m@example.org", display_name="M", role=Role.MEMBER
    )
    team.issue_api_key(owner, key_id=key.key_id, user_id=member, name="k", secret_hash="scrypt$m")
    store.key_id = key.key_id
    authenticator = Authenticator(store)  # type: ignore[arg-type]
    token = f"chk_{key.key_id}_{RIGHT}"
    assert authenticator.authenticate(token).actor.role is Role.MEMBER

    team.change_role(owner, member, Role.ADMIN)
    promoted = authenticator.authenticate_from_memory(token)
    assert promoted is not None
    assert promoted.actor.role is Role.ADMIN

    team.remove_member(owner, member)
    with pytest.raises(Unauthenticated):
        authenticator.authenticate_from_memory(token)
    assert scrypt_calls == [RIGHT]


def test_a_key_its_team_does_not_hold_is_refused_from_memory(scrypt_calls: list[str]) -> None:
    team, _, key_id, store = _setup()
    authenticator = Authenticator(store)  # type: ignore[arg-type]
    authenticator.authenticate(f"chk_{key_id}_{RIGHT}")
    # The key's team, as memory has it, does not list the key.
    store.team = Team.create(
        id=team.id, name="Crew", plan="free", owner_user_id=uuid.uuid4(),
        owner_email="p@example.org", owner_display_name="Pia",
    )  # fmt: skip

    with pytest.raises(Unauthenticated):
        authenticator.authenticate_from_memory(f"chk_{key_id}_{RIGHT}")


def test_a_wrong_secret_is_left_to_scrypt_which_refuses_it(scrypt_calls: list[str]) -> None:
    _, _, key_id, store = _setup()
    authenticator = Authenticator(store)  # type: ignore[arg-type]
    authenticator.authenticate(f"chk_{key_id}_{RIGHT}")
    wrong = f"chk_{key_id}_wrong-secret-000000000"

    assert authenticator.authenticate_from_memory(wrong) is None
    with pytest.raises(Unauthenticated):
        authenticator.authenticate(wrong)
    assert scrypt_calls == [RIGHT, "wrong-secret-000000000"]
