from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregates.base import Actor, Role
from aggregates.errors import (
    DomainError,
    Forbidden,
    InvalidValue,
    KeyExists,
    KeyRevoked,
    LastOwner,
    MemberExists,
    NotFound,
    UnknownKey,
    UnknownMember,
    UnknownPlan,
)
from aggregates.team import Team
from tests.unit.domain import AnyEvent, actor_in, data, names, replay


@dataclass
class Crew:
    """A team with one member of each role, and their actors."""

    team: Team
    history: list[AnyEvent]
    actors: dict[Role, Actor]

    def flush(self) -> list[AnyEvent]:
        new = list(self.team.collect_events())
        self.history += new
        return new

    def user(self, role: Role) -> UUID:
        return self.actors[role].user_id


def new_team(owner_id: UUID | None = None) -> Team:
    return Team.create(
        id=uuid4(),
        name="Crew",
        plan="free",
        owner_user_id=owner_id or uuid4(),
        owner_email="Owner@Example.org",
        owner_display_name="Olga",
    )


def crew() -> Crew:
    owner = uuid4()
    team = new_team(owner)
    actors = {Role.OWNER: Actor(user_id=owner, role=Role.OWNER, team_id=team.id)}
    for role in (Role.ADMIN, Role.MEMBER, Role.AUDITOR):
        user = uuid4()
        team.add_member(
            actors[Role.OWNER],
            user_id=user,
            email=f"{role.value}@example.org",
            display_name=role.value.title(),
            role=role,
        )
        actors[role] = Actor(user_id=user, role=role, team_id=team.id)
    result = Crew(team, [], actors)
    result.flush()
    return result


MANAGERS = {Role.OWNER, Role.ADMIN}
ALL_ROLES = list(Role)


def test_create_makes_the_creator_the_only_owner() -> None:
    owner = uuid4()
    team = new_team(owner)
    events = team.collect_events()
    assert names(events) == ["Created"]
    assert data(events[0]) == {
        "name": "Crew",
        "plan": "free",
        "owner_user_id": owner,
        "owner_email": "Owner@Example.org",
        "owner_display_name": "Olga",
    }
    assert [m.user_id for m in team.owners] == [owner]
    assert team.role_of(owner) is Role.OWNER
    assert replay(Team, events) == team


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("name", {"name": "  "}),
        ("plan", {"plan": "gold"}),
        ("email", {"owner_email": "no-at-sign"}),
        ("display_name", {"owner_display_name": ""}),
    ],
)
def test_create_refuses_bad_values(field: str, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "name": "Crew",
        "plan": "team",
        "owner_email": "a@b.c",
        "owner_display_name": "A",
    } | kwargs
    with pytest.raises(InvalidValue) as caught:
        Team.create(id=uuid4(), owner_user_id=uuid4(), **args)  # type: ignore[arg-type]
    assert caught.value.details["field"] == field


def test_client_chosen_id_is_the_team_id() -> None:
    chosen = uuid4()
    team = Team.create(
        id=chosen,
        name="x",
        plan="free",
        owner_user_id=uuid4(),
        owner_email="a@b.c",
        owner_display_name="A",
    )
    assert team.id == chosen


# -- who may do what ---------------------------------------------------------------

Command = Callable[[Crew, Actor], None]


def _add_member(role: Role) -> Command:
    def run(c: Crew, actor: Actor) -> None:
        c.team.add_member(
            actor, user_id=uuid4(), email=f"{uuid4()}@x.org", display_name="N", role=role
        )

    return run


def _change_role(target: Role, to: Role) -> Command:
    def run(c: Crew, actor: Actor) -> None:
        c.team.change_role(actor, c.user(target), to)

    return run


def _remove(target: Role) -> Command:
    def run(c: Crew, actor: Actor) -> None:
        c.team.remove_member(actor, c.user(target))

    return run


def _issue_for(holder: Role | None) -> Command:
    """``None``: the actor's own key."""

    def run(c: Crew, actor: Actor) -> None:
        user = actor.user_id if holder is None else c.user(holder)
        c.team.issue_api_key(actor, key_id="k-new", user_id=user, name="ci", secret_hash="h")

    return run


def _revoke_key_of(holder: Role) -> Command:
    def run(c: Crew, actor: Actor) -> None:
        owner = c.actors[Role.OWNER]
        c.team.issue_api_key(
            owner, key_id="k-old", user_id=c.user(holder), name="old", secret_hash="h"
        )
        c.flush()
        c.team.revoke_api_key(actor, "k-old")

    return run


def _on_second_owner(command: Callable[[Crew, Actor, UUID], None]) -> Command:
    """Runs ``command`` on an owner who is not the last one, nor any actor."""

    def run(c: Crew, actor: Actor) -> None:
        second = uuid4()
        c.team.add_member(
            c.actors[Role.OWNER],
            user_id=second,
            email="second@example.org",
            display_name="Second",
            role=Role.OWNER,
        )
        c.flush()
        command(c, actor, second)

    return run


GUARDS: list[tuple[str, Command, set[Role]]] = [
    ("rename", lambda c, a: c.team.rename(a, "New name"), MANAGERS),
    ("change plan", lambda c, a: c.team.change_plan(a, "team"), {Role.OWNER}),
    ("add member", _add_member(Role.MEMBER), MANAGERS),
    ("add admin", _add_member(Role.ADMIN), MANAGERS),
    ("add auditor", _add_member(Role.AUDITOR), MANAGERS),
    ("add owner", _add_member(Role.OWNER), {Role.OWNER}),
    ("promote member to admin", _change_role(Role.MEMBER, Role.ADMIN), MANAGERS),
    ("demote admin", _change_role(Role.ADMIN, Role.MEMBER), MANAGERS),
    ("promote to owner", _change_role(Role.MEMBER, Role.OWNER), {Role.OWNER}),
    (
        "demote an owner",
        _on_second_owner(lambda c, a, user: c.team.change_role(a, user, Role.ADMIN)),
        {Role.OWNER},
    ),
    ("remove member", _remove(Role.MEMBER), MANAGERS),
    ("remove auditor", _remove(Role.AUDITOR), MANAGERS),
    (
        "remove an owner",
        _on_second_owner(lambda c, a, user: c.team.remove_member(a, user)),
        {Role.OWNER},
    ),
    ("issue own key", _issue_for(None), {Role.OWNER, Role.ADMIN, Role.MEMBER}),
    ("issue key for a member", _issue_for(Role.MEMBER), MANAGERS | {Role.MEMBER}),
    ("issue key for an auditor", _issue_for(Role.AUDITOR), MANAGERS),
    ("issue key for an owner", _issue_for(Role.OWNER), {Role.OWNER}),
    ("revoke a member's key", _revoke_key_of(Role.MEMBER), MANAGERS | {Role.MEMBER}),
    ("revoke an auditor's key", _revoke_key_of(Role.AUDITOR), MANAGERS),
    ("revoke an owner's key", _revoke_key_of(Role.OWNER), {Role.OWNER}),
]


@pytest.mark.parametrize("role", ALL_ROLES)
@pytest.mark.parametrize(("label", "command", "allowed"), GUARDS, ids=[g[0] for g in GUARDS])
def test_guards(label: str, command: Command, allowed: set[Role], role: Role) -> None:
    c = crew()
    if role in allowed:
        command(c, c.actors[role])
        assert c.flush(), f"{role} {label} recorded nothing"
    else:
        with pytest.raises(Forbidden):
            command(c, c.actors[role])
        assert c.flush() == [], "a refused command must record nothing"
    assert replay(Team, c.history) == c.team


@pytest.mark.parametrize(("label", "command", "allowed"), GUARDS, ids=[g[0] for g in GUARDS])
def test_actors_of_another_team_get_not_found(
    label: str, command: Command, allowed: set[Role]
) -> None:
    c = crew()
    stranger = actor_in(uuid4(), Role.OWNER, user_id=c.user(Role.OWNER))
    with pytest.raises(NotFound):
        command(c, stranger)


def test_the_team_not_the_key_decides_the_role() -> None:
    c = crew()
    stale = Actor(user_id=c.user(Role.MEMBER), role=Role.OWNER, team_id=c.team.id)
    with pytest.raises(Forbidden):
        c.team.change_plan(stale, "team")
    outsider = actor_in(c.team.id, Role.OWNER)
    with pytest.raises(Forbidden):
        c.team.rename(outsider, "mine now")


# -- rules ---------------------------------------------------------------------------


def test_the_last_owner_can_be_neither_removed_nor_demoted() -> None:
    c = crew()
    owner = c.actors[Role.OWNER]
    with pytest.raises(LastOwner):
        c.team.remove_member(owner, owner.user_id)
    with pytest.raises(LastOwner):
        c.team.change_role(owner, owner.user_id, Role.ADMIN)
    assert c.flush() == []
    c.team.change_role(owner, c.user(Role.ADMIN), Role.OWNER)
    c.team.change_role(owner, owner.user_id, Role.MEMBER)
    assert [m.user_id for m in c.team.owners] == [c.user(Role.ADMIN)]
    assert names(c.flush()) == ["MemberRoleChanged", "MemberRoleChanged"]


def test_email_is_unique_ignoring_case() -> None:
    c = crew()
    with pytest.raises(MemberExists):
        c.team.add_member(
            c.actors[Role.OWNER],
            user_id=uuid4(),
            email=" OWNER@example.ORG ",
            display_name="Twin",
            role=Role.MEMBER,
        )
    member = c.team.member_by_email("owner@EXAMPLE.org")
    assert member is not None
    assert member.user_id == c.user(Role.OWNER)
    assert c.team.member_by_email("nobody@example.org") is None


def test_a_user_cannot_be_added_twice() -> None:
    c = crew()
    with pytest.raises(MemberExists):
        c.team.add_member(
            c.actors[Role.OWNER],
            user_id=c.user(Role.MEMBER),
            email="other@example.org",
            display_name="Again",
            role=Role.ADMIN,
        )


def test_add_member_records_who_joined() -> None:
    c = crew()
    user = uuid4()
    c.team.add_member(
        c.actors[Role.ADMIN], user_id=user, email=" n@x.org ", display_name=" Nia ", role=Role.ADMIN
    )
    (added,) = c.flush()
    assert names([added]) == ["MemberAdded"]
    assert data(added) == {
        "user_id": user,
        "email": "n@x.org",
        "display_name": "Nia",
        "role": Role.ADMIN,
    }
    assert c.team.member(user).role is Role.ADMIN


def test_lookups_of_unknown_ids_are_not_found() -> None:
    c = crew()
    with pytest.raises(UnknownMember) as caught:
        c.team.member(uuid4())
    assert caught.value.code == "NOT_FOUND"
    with pytest.raises(UnknownKey):
        c.team.key("nope")
    assert c.team.role_of(uuid4()) is None
    with pytest.raises(UnknownMember):
        c.team.change_role(c.actors[Role.OWNER], uuid4(), Role.ADMIN)
    with pytest.raises(UnknownMember):
        c.team.issue_api_key(
            c.actors[Role.OWNER], key_id="k", user_id=uuid4(), name="n", secret_hash="h"
        )
    with pytest.raises(UnknownKey):
        c.team.revoke_api_key(c.actors[Role.OWNER], "nope")


def test_no_op_commands_record_nothing() -> None:
    c = crew()
    owner = c.actors[Role.OWNER]
    c.team.rename(owner, " Crew ")
    c.team.change_plan(owner, "free")
    c.team.change_role(owner, c.user(Role.ADMIN), Role.ADMIN)
    assert c.flush() == []


def test_rename_and_plan_change() -> None:
    c = crew()
    c.team.rename(c.actors[Role.ADMIN], "Renamed")
    c.team.change_plan(c.actors[Role.OWNER], "enterprise")
    assert names(c.flush()) == ["Renamed", "PlanChanged"]
    assert (c.team.name, c.team.plan) == ("Renamed", "enterprise")
    with pytest.raises(UnknownPlan):
        c.team.change_plan(c.actors[Role.OWNER], "platinum")
    assert replay(Team, c.history) == c.team


def test_keys_are_issued_with_their_hash_and_revoked_once() -> None:
    c = crew()
    member = c.actors[Role.MEMBER]
    c.team.issue_api_key(
        member, key_id="k1", user_id=member.user_id, name="laptop", secret_hash="$s"
    )
    (issued,) = c.flush()
    assert data(issued) == {
        "key_id": "k1",
        "user_id": member.user_id,
        "name": "laptop",
        "secret_hash": "$s",
    }
    key = c.team.key("k1")
    assert (key.user_id, key.secret_hash, key.revoked) == (member.user_id, "$s", False)
    with pytest.raises(KeyExists):
        c.team.issue_api_key(member, key_id="k1", user_id=member.user_id, name="x", secret_hash="h")
    c.team.revoke_api_key(member, "k1")
    (revoked,) = c.flush()
    assert data(revoked) == {"key_id": "k1", "user_id": member.user_id, "reason": "revoked"}
    assert c.team.key("k1").revoked
    with pytest.raises(KeyRevoked):
        c.team.revoke_api_key(c.actors[Role.OWNER], "k1")
    assert replay(Team, c.history) == c.team


def test_removing_a_member_revokes_their_active_keys_first() -> None:
    c = crew()
    owner, member = c.actors[Role.OWNER], c.actors[Role.MEMBER]
    for key_id in ("a", "b", "c"):
        c.team.issue_api_key(
            member, key_id=key_id, user_id=member.user_id, name=key_id, secret_hash="h"
        )
    c.team.issue_api_key(owner, key_id="mine", user_id=owner.user_id, name="o", secret_hash="h")
    c.team.revoke_api_key(member, "b")
    c.flush()
    c.team.remove_member(owner, member.user_id)
    events = c.flush()
    assert names(events) == ["ApiKeyRevoked", "ApiKeyRevoked", "MemberRemoved"]
    assert [data(e)["key_id"] for e in events[:2]] == ["a", "c"]
    assert {data(e)["reason"] for e in events[:2]} == {"member_removed"}
    assert c.team.role_of(member.user_id) is None
    assert all(c.team.key(k).revoked for k in ("a", "b", "c"))
    assert not c.team.key("mine").revoked
    assert replay(Team, c.history) == c.team


def test_refused_commands_are_domain_errors_with_codes() -> None:
    c = crew()
    with pytest.raises(DomainError) as caught:
        c.team.remove_member(c.actors[Role.OWNER], c.user(Role.OWNER))
    assert caught.value.code == "LAST_OWNER"
    assert caught.value.details == {"user_id": str(c.user(Role.OWNER))}
    assert caught.value.message


# -- invariants under any sequence of commands ----------------------------------------

USERS = [UUID(int=i) for i in range(1, 7)]
KEY_IDS = ["k1", "k2", "k3", "k4"]


@dataclass(frozen=True)
class Op:
    kind: str
    actor: int  # mostly a current member, see _pick
    claimed_role: Role
    foreign: bool
    target: int
    role: Role
    email: int
    key_id: str


def _often(value: bool) -> st.SearchStrategy[bool]:
    return st.sampled_from([value] * 7 + [not value])


ops = st.builds(
    Op,
    kind=st.sampled_from(["add", "add", "change_role", "remove", "issue", "revoke", "plan"]),
    actor=st.integers(0, 99),
    claimed_role=st.sampled_from(ALL_ROLES),
    foreign=_often(False),
    target=st.integers(0, 99),
    role=st.sampled_from(ALL_ROLES),
    email=st.integers(0, len(USERS) - 1),
    key_id=st.sampled_from(KEY_IDS),
)


def _pick(team: Team, index: int) -> UUID:
    """Mostly a current member (where commands succeed), sometimes anyone."""
    if index % 8 == 0:
        return USERS[index % len(USERS)]
    members = [m.user_id for m in team.members]
    return members[index % len(members)]


def _apply(team: Team, op: Op) -> None:
    actor = Actor(
        user_id=_pick(team, op.actor),
        role=op.claimed_role,
        team_id=uuid4() if op.foreign else team.id,
    )
    if op.kind == "add":
        email = f"U{op.email}@Example.org" if op.email % 2 else f"u{op.email}@example.ORG"
        user = USERS[op.target % len(USERS)]
        team.add_member(actor, user_id=user, email=email, display_name="x", role=op.role)
    elif op.kind == "change_role":
        team.change_role(actor, _pick(team, op.target), op.role)
    elif op.kind == "remove":
        team.remove_member(actor, _pick(team, op.target))
    elif op.kind == "issue":
        user = _pick(team, op.target)
        team.issue_api_key(actor, key_id=op.key_id, user_id=user, name="n", secret_hash="h")
    elif op.kind == "revoke":
        issued = [k.key_id for k in team.keys]
        team.revoke_api_key(actor, issued[op.target % len(issued)] if issued else op.key_id)
    else:
        team.change_plan(actor, "team" if team.plan == "free" else "free")


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=60))
def test_team_invariants_hold_for_any_command_sequence(sequence: list[Op]) -> None:
    team = Team.create(
        id=uuid4(),
        name="T",
        plan="free",
        owner_user_id=USERS[0],
        owner_email="u0@example.org",
        owner_display_name="Zero",
    )
    history = list(team.collect_events())
    for op in sequence:
        try:
            _apply(team, op)
        except DomainError:
            assert team.pending_events == [], "a refused command must record nothing"
        history += team.collect_events()
        assert team.owners, "a team always keeps an owner"
        for key in team.keys:
            assert key.revoked or team.role_of(key.user_id) is not None
        emails = [m.email.casefold() for m in team.members]
        assert len(emails) == len(set(emails))
    assert replay(Team, history) == team
