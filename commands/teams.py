"""Team commands: the team, its members and their API keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from aggregates.base import Actor, Role
from aggregates.team import Team
from commands.auth import hash_secret, new_key
from commands.context import CommandContext
from commands.models import AddMember, ChangeRole, CreateTeam, IssueApiKey, UpdateTeam
from commands.ports import EventStorePort
from commands.records import ApiKeyIndexed
from commands.unit_of_work import CommandResult, Decision, Session, run_command

__all__ = [
    "CreatedTeam",
    "add_member",
    "change_role",
    "create_team",
    "issue_api_key",
    "remove_member",
    "revoke_api_key",
    "team_view",
    "update_team",
]


@dataclass(frozen=True, slots=True)
class CreatedTeam:
    result: CommandResult
    owner_key: str


def team_view(team: Team) -> dict[str, Any]:
    return {
        "id": str(team.id),
        "name": team.name,
        "plan": team.plan,
        "version": team.version,
        "members": [
            {
                "user_id": str(m.user_id),
                "email": m.email,
                "display_name": m.display_name,
                "role": m.role.value,
            }
            for m in team.members
        ],
    }


def create_team(
    store: EventStorePort, command: CreateTeam, *, request_id: str | None = None
) -> CreatedTeam:
    """Operator command: a team, its owner, and the owner's first key."""
    team_id, owner_id, key = uuid.uuid4(), uuid.uuid4(), new_key()
    owner = Actor(user_id=owner_id, role=Role.OWNER, team_id=team_id)
    context = CommandContext(actor=owner, request_id=request_id)
    secret_hash = hash_secret(key.secret)

    def decide(session: Session) -> Decision:
        team = session.add(
            Team.create(
                id=team_id,
                name=command.name,
                plan=command.plan,
                owner_user_id=owner_id,
                owner_email=str(command.owner_email),
                owner_display_name=command.owner_display_name
                or str(command.owner_email).split("@")[0],
            ),
            id_from_client=False,
        )
        team.issue_api_key(
            owner, key_id=key.key_id, user_id=owner_id, name="owner", secret_hash=secret_hash
        )
        session.record(ApiKeyIndexed(key.key_id, team_id))
        return Decision(
            {"id": str(team_id), "owner_user_id": str(owner_id), "owner_key": key.token},
            team,
            status_code=201,
            shown_once=("owner_key",),
        )

    result = run_command(store, context, "CreateTeam", command.model_dump(mode="json"), decide)
    return CreatedTeam(result, key.token)


def update_team(store: EventStorePort, ctx: CommandContext, command: UpdateTeam) -> CommandResult:
    def decide(session: Session) -> Decision:
        team = session.get(ctx.actor.team_id, Team, what="team", precondition=True)
        if command.name is not None:
            team.rename(ctx.actor, command.name)
        if command.plan is not None:
            team.change_plan(ctx.actor, command.plan)
        return Decision(team_view(team), team)

    return run_command(store, ctx, "UpdateTeam", command.model_dump(mode="json"), decide)


def add_member(store: EventStorePort, ctx: CommandContext, command: AddMember) -> CommandResult:
    user_id = uuid.uuid4()

    def decide(session: Session) -> Decision:
        team = session.get(ctx.actor.team_id, Team, what="team", precondition=True)
        team.add_member(
            ctx.actor,
            user_id=user_id,
            email=str(command.email),
            display_name=command.display_name,
            role=command.role,
        )
        return Decision({"user_id": str(user_id)}, team, status_code=201)

    return run_command(store, ctx, "AddMember", command.model_dump(mode="json"), decide)


def change_role(
    store: EventStorePort, ctx: CommandContext, user_id: UUID, command: ChangeRole
) -> CommandResult:
    def decide(session: Session) -> Decision:
        team = session.get(ctx.actor.team_id, Team, what="team", precondition=True)
        team.change_role(ctx.actor, user_id, command.role)
        return Decision({"user_id": str(user_id), "role": command.role.value}, team)

    payload = {"user_id": str(user_id), **command.model_dump(mode="json")}
    return run_command(store, ctx, "ChangeMemberRole", payload, decide)


def remove_member(store: EventStorePort, ctx: CommandContext, user_id: UUID) -> CommandResult:
    def decide(session: Session) -> Decision:
        team = session.get(ctx.actor.team_id, Team, what="team", precondition=True)
        team.remove_member(ctx.actor, user_id)
        return Decision({"user_id": str(user_id), "removed": True}, team)

    return run_command(store, ctx, "RemoveMember", {"user_id": str(user_id)}, decide)


def issue_api_key(
    store: EventStorePort, ctx: CommandContext, command: IssueApiKey
) -> CommandResult:
    key = new_key()
    secret_hash = hash_secret(key.secret)

    def decide(session: Session) -> Decision:
        team = session.get(ctx.actor.team_id, Team, what="team", precondition=True)
        team.issue_api_key(
            ctx.actor,
            key_id=key.key_id,
            user_id=command.user_id,
            name=command.name,
            secret_hash=secret_hash,
        )
        session.record(ApiKeyIndexed(key.key_id, team.id))
        return Decision(
            {"key_id": key.key_id, "key": key.token}, team, status_code=201, shown_once=("key",)
        )

    return run_command(store, ctx, "IssueApiKey", command.model_dump(mode="json"), decide)


def revoke_api_key(store: EventStorePort, ctx: CommandContext, key_id: str) -> CommandResult:
    def decide(session: Session) -> Decision:
        team = session.get(ctx.actor.team_id, Team, what="team", precondition=True)
        team.revoke_api_key(ctx.actor, key_id)
        return Decision({"key_id": key_id, "revoked": True}, team)

    return run_command(store, ctx, "RevokeApiKey", {"key_id": key_id}, decide)
