from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from aggregates.base import Actor, Role
from aggregates.team import REVOKED_BY_REQUEST, REVOKED_WITH_MEMBER, Team
from projections.folding import MissingRow
from projections.teams import ApiKeyFold, MemberFold, TeamFold, TeamsProjection
from tests.unit.projections import Log, fold_rows, new_team

SECRET_HASH = "scrypt$not-for-readers"


def add(team: Team, owner: Actor, name: str, role: Role = Role.MEMBER) -> UUID:
    user_id = uuid4()
    team.add_member(
        owner, user_id=user_id, email=f"{name}@example.org", display_name=name, role=role
    )
    return user_id


def test_every_team_event_is_handled() -> None:
    team, owner = new_team()
    member = add(team, owner, "max")
    team.issue_api_key(owner, key_id="k1", user_id=member, name="cli", secret_hash=SECRET_HASH)
    team.remove_member(owner, member)
    facts = Log().facts(team)
    assert {f.topic for f in facts} <= TeamsProjection().topics


def test_created_makes_the_team_and_its_owner() -> None:
    team, owner = new_team()
    facts = Log().facts(team)
    [row] = fold_rows(TeamFold(), facts).values()
    assert row == {
        "id": team.id,
        "name": "Crew",
        "plan": "free",
        "version": 1,
        "created_at": team.created_on,
        "updated_at": team.created_on,
        "position": 1,
    }
    members = fold_rows(MemberFold(), facts)
    assert members == {
        (team.id, owner.user_id): {
            "team_id": team.id,
            "user_id": owner.user_id,
            "email": "olga@example.org",
            "display_name": "Olga",
            "role": "owner",
            "joined_at": team.created_on,
            "joined_position": 1,
            "position": 1,
        }
    }


def test_every_event_bumps_the_teams_version_so_its_etag_is_the_aggregates() -> None:
    team, owner = new_team()
    member = add(team, owner, "max")
    team.rename(owner, "Crew 2")
    team.change_plan(owner, "team")
    team.change_role(owner, member, Role.ADMIN)
    team.issue_api_key(owner, key_id="k1", user_id=member, name="cli", secret_hash=SECRET_HASH)
    team.revoke_api_key(owner, "k1")
    team.remove_member(owner, member)
    facts = Log().facts(team)
    [row] = fold_rows(TeamFold(), facts).values()
    assert (row["name"], row["plan"]) == ("Crew 2", "team")
    assert row["version"] == team.version == len(facts)
    assert row["position"] == facts[-1].position
    assert row["updated_at"] == team.modified_on
    assert row["created_at"] == team.created_on


def test_members_join_change_role_and_leave() -> None:
    team, owner = new_team()
    log = Log()
    first = log.facts(team)
    ana = add(team, owner, "ana")
    ben = add(team, owner, "ben", Role.AUDITOR)
    team.change_role(owner, ana, Role.ADMIN)
    team.remove_member(owner, ben)
    rows = fold_rows(MemberFold(), first + log.facts(team))
    assert set(rows) == {(team.id, owner.user_id), (team.id, ana)}
    ana_row = rows[(team.id, ana)]
    assert (ana_row["role"], ana_row["email"]) == ("admin", "ana@example.org")
    assert (ana_row["joined_position"], ana_row["position"]) == (2, 4)


def test_a_removed_members_row_is_deleted_even_across_batches() -> None:
    team, owner = new_team()
    log = Log()
    ana = add(team, owner, "ana")
    stored = fold_rows(MemberFold(), log.facts(team))
    team.remove_member(owner, ana)
    assert set(fold_rows(MemberFold(), log.facts(team), stored)) == {(team.id, owner.user_id)}


def test_keys_are_recorded_without_their_secret_hash() -> None:
    team, owner = new_team()
    ana = add(team, owner, "ana")
    team.issue_api_key(owner, key_id="k1", user_id=ana, name="laptop", secret_hash=SECRET_HASH)
    team.issue_api_key(owner, key_id="k2", user_id=owner.user_id, name="ci", secret_hash="h2")
    team.revoke_api_key(owner, "k2")
    facts = Log().facts(team)
    rows = fold_rows(ApiKeyFold(), facts)
    assert rows[("k1",)] == {
        "key_id": "k1",
        "team_id": team.id,
        "user_id": ana,
        "name": "laptop",
        "created_at": facts[2].data["timestamp"],
        "revoked_at": None,
        "revoke_reason": None,
        "created_position": 3,
        "position": 3,
    }
    revoked = rows[("k2",)]
    assert revoked["revoked_at"] == facts[4].data["timestamp"]
    assert (revoked["revoke_reason"], revoked["created_position"], revoked["position"]) == (
        REVOKED_BY_REQUEST,
        4,
        5,
    )
    for row in rows.values():
        assert "secret_hash" not in row
        assert SECRET_HASH not in map(str, row.values())
        assert "h2" not in map(str, row.values())


def test_removing_a_member_revokes_their_keys_and_keeps_the_records() -> None:
    team, owner = new_team()
    ana = add(team, owner, "ana")
    team.issue_api_key(owner, key_id="k1", user_id=ana, name="laptop", secret_hash=SECRET_HASH)
    team.remove_member(owner, ana)
    rows = fold_rows(ApiKeyFold(), Log().facts(team))
    assert rows[("k1",)]["revoke_reason"] == REVOKED_WITH_MEMBER


@pytest.mark.parametrize("fold", [TeamFold(), MemberFold(), ApiKeyFold()])
def test_an_event_for_a_row_that_is_not_there_stops_the_fold(
    fold: TeamFold | MemberFold | ApiKeyFold,
) -> None:
    team, owner = new_team()
    ana = add(team, owner, "ana")
    team.issue_api_key(owner, key_id="k1", user_id=ana, name="laptop", secret_hash=SECRET_HASH)
    log = Log()
    log.facts(team)  # the history the table never saw
    team.change_role(owner, ana, Role.ADMIN)
    team.revoke_api_key(owner, "k1")
    with pytest.raises(MissingRow):
        fold_rows(fold, log.facts(team))


def test_only_creations_skip_loading_their_rows() -> None:
    team, owner = new_team()
    ana = add(team, owner, "ana")
    team.change_role(owner, ana, Role.ADMIN)
    team.issue_api_key(owner, key_id="k1", user_id=ana, name="laptop", secret_hash=SECRET_HASH)
    team.revoke_api_key(owner, "k1")
    team.remove_member(owner, ana)
    facts = Log().facts(team)
    created = {
        type(fold).__name__: [f.name for f in facts if fold.creates(f)]
        for fold in (TeamFold(), MemberFold(), ApiKeyFold())
    }
    assert created == {
        "TeamFold": ["Created"],
        "MemberFold": ["Created", "MemberAdded"],
        "ApiKeyFold": ["ApiKeyIssued"],
    }
