"""A team: its plan, its members and their API keys.

Guards judge an actor by the role the team itself records for them, not by the
role copied into ``Actor``: this aggregate is the source of truth for roles, and a
stale copy must not outrank it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from uuid import UUID

from eventsourcing.domain import event
from pydantic import Field

from aggregates.base import Actor, Aggregate, AggregateSnapshot, Role, SnapshotState
from aggregates.errors import (
    Forbidden,
    InvalidValue,
    KeyExists,
    KeyRevoked,
    LastOwner,
    MemberExists,
    NotFound,
    UnknownKey,
    UnknownMember,
    require_text,
)
from aggregates.plans import quota_for

__all__ = [
    "REVOKED_BY_REQUEST",
    "REVOKED_WITH_MEMBER",
    "ApiKey",
    "Member",
    "Team",
    "TeamState",
]

REVOKED_BY_REQUEST = "revoked"
REVOKED_WITH_MEMBER = "member_removed"
_MANAGERS = frozenset({Role.OWNER, Role.ADMIN})


@dataclass(frozen=True, slots=True)
class Member:
    user_id: UUID
    email: str
    display_name: str
    role: Role


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's record. ``secret_hash`` is the caller's scrypt hash, never the secret;
    the public event feed must still leave it out."""

    key_id: str
    user_id: UUID
    name: str
    secret_hash: str
    revoked: bool = False


def _email_key(email: str) -> str:
    return email.casefold()


def _check_email(email: str) -> str:
    email = require_text(email, field="email")
    local, at, domain = email.rpartition("@")
    if not (at and local and domain):
        raise InvalidValue("email must look like name@domain", field="email")
    return email


class TeamState(SnapshotState):
    """Everything a Team holds. A new attribute on Team must be declared here too,
    or taking a snapshot fails (and is only logged: commands go on without one)."""

    name: str
    plan: str
    members: dict[UUID, Member] = Field(alias="_members")
    keys: dict[str, ApiKey] = Field(alias="_keys")


class Team(Aggregate):
    """Long-lived, and loaded by every authenticated request: the event store
    snapshots it every TEAM_SNAPSHOT_INTERVAL events (infra/event_store.py)."""

    class Snapshot(AggregateSnapshot):
        state: TeamState

    @classmethod
    def create(
        cls,
        *,
        id: UUID,
        name: str,
        plan: str,
        owner_user_id: UUID,
        owner_email: str,
        owner_display_name: str,
    ) -> Team:
        """Creates a team whose first member, its owner, is the person it is made for.

        No actor: teams are created by the operator, who is not a member of any team.
        """
        quota_for(plan)
        return cls(
            id=id,
            name=require_text(name, field="name"),
            plan=plan,
            owner_user_id=owner_user_id,
            owner_email=_check_email(owner_email),
            owner_display_name=require_text(owner_display_name, field="display_name"),
        )

    @event("Created")
    def __init__(
        self,
        *,
        id: UUID,
        name: str,
        plan: str,
        owner_user_id: UUID,
        owner_email: str,
        owner_display_name: str,
    ) -> None:
        self.name = name
        self.plan = plan
        self._members: dict[UUID, Member] = {
            owner_user_id: Member(owner_user_id, owner_email, owner_display_name, Role.OWNER)
        }
        self._keys: dict[str, ApiKey] = {}

    # -- lookups the command layer needs ---------------------------------------

    @property
    def members(self) -> tuple[Member, ...]:
        return tuple(self._members.values())

    @property
    def owners(self) -> tuple[Member, ...]:
        return tuple(m for m in self._members.values() if m.role is Role.OWNER)

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        return tuple(self._keys.values())

    def member(self, user_id: UUID) -> Member:
        try:
            return self._members[user_id]
        except KeyError:
            raise UnknownMember("member not found", user_id=str(user_id)) from None

    def member_by_email(self, email: str) -> Member | None:
        wanted = _email_key(email.strip())
        return next((m for m in self._members.values() if _email_key(m.email) == wanted), None)

    def role_of(self, user_id: UUID) -> Role | None:
        found = self._members.get(user_id)
        return found.role if found else None

    def key(self, key_id: str) -> ApiKey:
        try:
            return self._keys[key_id]
        except KeyError:
            raise UnknownKey("API key not found", key_id=key_id) from None

    def active_keys_of(self, user_id: UUID) -> Iterator[ApiKey]:
        return (k for k in self._keys.values() if k.user_id == user_id and not k.revoked)

    # -- commands ----------------------------------------------------------------

    def rename(self, actor: Actor, name: str) -> None:
        self._require_manager(actor)
        name = require_text(name, field="name")
        if name != self.name:
            self._renamed(name=name)

    def change_plan(self, actor: Actor, plan: str) -> None:
        self._require_owner(actor)
        quota_for(plan)
        if plan != self.plan:
            self._plan_changed(plan=plan)

    def add_member(
        self, actor: Actor, *, user_id: UUID, email: str, display_name: str, role: Role
    ) -> None:
        self._require_may_grant(self._require_manager(actor), role)
        email = _check_email(email)
        display_name = require_text(display_name, field="display_name")
        if user_id in self._members:
            raise MemberExists("already a member", user_id=str(user_id))
        if self.member_by_email(email) is not None:
            raise MemberExists("a member already has this email", email=email)
        self._member_added(user_id=user_id, email=email, display_name=display_name, role=role)

    def change_role(self, actor: Actor, user_id: UUID, role: Role) -> None:
        acting = self._require_manager(actor)
        target = self.member(user_id)
        self._require_may_grant(acting, target.role)
        self._require_may_grant(acting, role)
        if role is target.role:
            return
        if target.role is Role.OWNER:
            self._require_another_owner(user_id)
        self._member_role_changed(user_id=user_id, role=role)

    def remove_member(self, actor: Actor, user_id: UUID) -> None:
        """Removes a member and revokes their keys first, each as its own event, so
        that no projection ever sees an active key of someone who left."""
        acting = self._require_manager(actor)
        target = self.member(user_id)
        self._require_may_grant(acting, target.role)
        if target.role is Role.OWNER:
            self._require_another_owner(user_id)
        for key in list(self.active_keys_of(user_id)):
            self._api_key_revoked(key_id=key.key_id, user_id=user_id, reason=REVOKED_WITH_MEMBER)
        self._member_removed(user_id=user_id)

    def issue_api_key(
        self, actor: Actor, *, key_id: str, user_id: UUID, name: str, secret_hash: str
    ) -> None:
        """Records a key for a member; the caller made the secret and hashed it."""
        acting = self._acting_member(actor)
        self._require_may_manage_keys_of(acting, self.member(user_id))
        key_id = require_text(key_id, field="key_id")
        name = require_text(name, field="name")
        secret_hash = require_text(secret_hash, field="secret_hash")
        if key_id in self._keys:
            raise KeyExists("an API key with this id exists", key_id=key_id)
        self._api_key_issued(key_id=key_id, user_id=user_id, name=name, secret_hash=secret_hash)

    def revoke_api_key(self, actor: Actor, key_id: str) -> None:
        acting = self._acting_member(actor)
        key = self.key(key_id)
        self._require_may_manage_keys_of(acting, self.member(key.user_id))
        if key.revoked:
            raise KeyRevoked("API key is already revoked", key_id=key_id)
        self._api_key_revoked(key_id=key_id, user_id=key.user_id, reason=REVOKED_BY_REQUEST)

    # -- guards --------------------------------------------------------------------

    def _acting_member(self, actor: Actor) -> Member:
        # Another team's key learns nothing, not even that this team exists.
        if actor.team_id != self.id:
            raise NotFound("team not found", team_id=str(actor.team_id))
        found = self._members.get(actor.user_id)
        if found is None:
            raise Forbidden("not a member of this team")
        return found

    def _require_manager(self, actor: Actor) -> Member:
        acting = self._acting_member(actor)
        if acting.role not in _MANAGERS:
            raise Forbidden("only owners and admins may do this", role=acting.role.value)
        return acting

    def _require_owner(self, actor: Actor) -> None:
        acting = self._acting_member(actor)
        if acting.role is not Role.OWNER:
            raise Forbidden("only an owner may do this", role=acting.role.value)

    @staticmethod
    def _require_may_grant(acting: Member, role: Role) -> None:
        """The owner role is granted and taken by owners only, so that an admin
        cannot lift themselves or anyone else to owner, nor depose an owner."""
        if role is Role.OWNER and acting.role is not Role.OWNER:
            raise Forbidden("only an owner may grant or remove the owner role")

    def _require_may_manage_keys_of(self, acting: Member, holder: Member) -> None:
        """Own keys, or anyone's as a manager; an owner's keys only as an owner,
        because a key acts with its holder's role and would lift an admin to owner."""
        if acting.role is Role.AUDITOR:
            raise Forbidden("auditors may not manage API keys")
        if holder.user_id == acting.user_id:
            return
        if acting.role not in _MANAGERS:
            raise Forbidden("only owners and admins may manage other members' keys")
        self._require_may_grant(acting, holder.role)

    def _require_another_owner(self, user_id: UUID) -> None:
        if not any(m.user_id != user_id for m in self.owners):
            raise LastOwner("a team must keep at least one owner", user_id=str(user_id))

    # -- events ----------------------------------------------------------------------

    @event("Renamed")
    def _renamed(self, name: str) -> None:
        self.name = name

    @event("PlanChanged")
    def _plan_changed(self, plan: str) -> None:
        self.plan = plan

    @event("MemberAdded")
    def _member_added(self, user_id: UUID, email: str, display_name: str, role: Role) -> None:
        self._members[user_id] = Member(user_id, email, display_name, role)

    @event("MemberRoleChanged")
    def _member_role_changed(self, user_id: UUID, role: Role) -> None:
        self._members[user_id] = replace(self._members[user_id], role=role)

    @event("MemberRemoved")
    def _member_removed(self, user_id: UUID) -> None:
        del self._members[user_id]

    @event("ApiKeyIssued")
    def _api_key_issued(self, key_id: str, user_id: UUID, name: str, secret_hash: str) -> None:
        self._keys[key_id] = ApiKey(key_id, user_id, name, secret_hash)

    @event("ApiKeyRevoked")
    def _api_key_revoked(self, key_id: str, user_id: UUID, reason: str) -> None:
        self._keys[key_id] = replace(self._keys[key_id], revoked=True)
