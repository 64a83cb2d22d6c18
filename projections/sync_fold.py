"""What a sync client holds of each entity, and which bucket it lives in.

Pure functions over JSON-ready dicts (the exact ``data`` a client receives), so
the sync projection stores them as they are and the rules are unit-tested
without a database. An entity lives in exactly one bucket at a time:
``team:<id>`` (everyone in the team) or ``user:<id>`` (a private entry's author).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from aggregates.journal_entry import JournalEntry
from aggregates.prompt import Prompt
from aggregates.team import Team
from projections.base import Fact, topic_of
from projections.folding import MissingRow

__all__ = ["ENTITY_TOPICS", "EntityState", "entity_key", "fold_entity"]

ENTITY_TOPICS: Final = frozenset(
    [topic_of(JournalEntry, e) for e in ("Created", "Edited", "VisibilityChanged", "Deleted")]
    + [topic_of(JournalEntry, "Restored")]
    + [topic_of(Prompt, e) for e in ("Created", "Edited", "Archived", "Issued")]
    + [topic_of(Team, e) for e in ("Created", "MemberAdded", "MemberRoleChanged", "MemberRemoved")]
)
_ENTRY: Final = topic_of(JournalEntry, "")
_PROMPT: Final = topic_of(Prompt, "")


@dataclass(frozen=True, slots=True)
class EntityState:
    entity: str  # "entry", "prompt" or "member"
    entity_id: UUID
    team_id: UUID
    bucket: str
    deleted: bool
    version: int
    data: dict[str, Any]


def team_bucket(team_id: UUID | str) -> str:
    return f"team:{team_id}"


def user_bucket(user_id: UUID | str) -> str:
    return f"user:{user_id}"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def entity_key(fact: Fact) -> tuple[str, UUID]:
    if fact.topic.startswith(_ENTRY):
        return "entry", fact.aggregate_id
    if fact.topic.startswith(_PROMPT):
        return "prompt", fact.aggregate_id
    if fact.name == "Created":  # a team's first member is its owner
        return "member", fact.data["owner_user_id"]
    return "member", fact.data["user_id"]


def fold_entity(state: EntityState | None, fact: Fact) -> EntityState:
    entity, _ = entity_key(fact)
    if entity == "entry":
        return _fold_entry(state, fact)
    if entity == "prompt":
        return _fold_prompt(state, fact)
    return _fold_member(state, fact)


def _require(state: EntityState | None, fact: Fact) -> EntityState:
    if state is None:
        raise MissingRow(f"{fact.name} for {entity_key(fact)} that sync does not hold")
    return state


def _stamped(state: EntityState, fact: Fact, **changes: Any) -> EntityState:
    data = {**state.data, **changes, "version": fact.version}
    data["updated_at"] = _iso(fact.data["timestamp"])
    return replace(state, version=fact.version, data=data)


def _entry_bucket(data: dict[str, Any], team_id: UUID) -> str:
    return team_bucket(team_id) if data["visibility"] == "team" else user_bucket(data["author_id"])


def _fold_entry(state: EntityState | None, fact: Fact) -> EntityState:
    data = fact.data
    if fact.name == "Created":
        stamp = _iso(data["timestamp"])
        view = {
            "id": str(fact.aggregate_id),
            "title": data["title"],
            "body": data["body"],
            "tags": list(data["tags"]),
            "visibility": str(data["visibility"]),
            "prompt_id": str(data["prompt_id"]) if data["prompt_id"] else None,
            "author_id": str(data["author_id"]),
            "version": fact.version,
            "created_at": stamp,
            "updated_at": stamp,
            "deleted_at": None,
        }
        team_id = data["team_id"]
        return EntityState(
            "entry", fact.aggregate_id, team_id, _entry_bucket(view, team_id), False,
            fact.version, view,
        )  # fmt: skip
    state = _require(state, fact)
    match fact.name:
        case "Edited":
            return _stamped(state, fact, title=data["title"], body=data["body"], tags=data["tags"])
        case "VisibilityChanged":
            moved = _stamped(state, fact, visibility=str(data["visibility"]))
            return replace(moved, bucket=_entry_bucket(moved.data, state.team_id))
        case "Deleted":
            return replace(_stamped(state, fact, deleted_at=_iso(data["deleted_at"])), deleted=True)
        case _:  # Restored
            return replace(_stamped(state, fact, deleted_at=None), deleted=False)


def _fold_prompt(state: EntityState | None, fact: Fact) -> EntityState:
    data = fact.data
    schedule = data.get("schedule")
    schedule_view = schedule.model_dump() if schedule is not None else None
    if fact.name == "Created":
        stamp = _iso(data["timestamp"])
        view = {
            "id": str(fact.aggregate_id),
            "text": data["text"],
            "schedule": schedule_view,
            "archived": False,
            "last_issued_at": None,
            "version": fact.version,
            "created_at": stamp,
            "updated_at": stamp,
        }
        team_id = data["team_id"]
        return EntityState(
            "prompt", fact.aggregate_id, team_id, team_bucket(team_id), False, fact.version, view
        )
    state = _require(state, fact)
    if fact.name == "Edited":
        return _stamped(state, fact, text=data["text"], schedule=schedule_view)
    if fact.name == "Issued":
        # The version moves with it, so a synced client's If-Match stays current.
        return _stamped(state, fact, last_issued_at=_iso(data["due_at"]))
    return _stamped(state, fact, archived=True)


def _fold_member(state: EntityState | None, fact: Fact) -> EntityState:
    data = fact.data
    team_id = fact.aggregate_id
    if fact.name in ("Created", "MemberAdded"):
        prefix = "owner_" if fact.name == "Created" else ""
        user_id = data[f"{prefix}user_id"]
        view = {
            "user_id": str(user_id),
            "email": data[f"{prefix}email"],
            "display_name": data[f"{prefix}display_name"],
            "role": "owner" if fact.name == "Created" else str(data["role"]),
            "joined_at": _iso(data["timestamp"]),
        }
        return EntityState(
            "member", user_id, team_id, team_bucket(team_id), False, fact.version, view
        )
    state = _require(state, fact)
    if fact.name == "MemberRoleChanged":
        data_view = {**state.data, "role": str(data["role"])}
        return replace(state, version=fact.version, data=data_view)
    return replace(state, version=fact.version, deleted=True)
