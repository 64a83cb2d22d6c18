"""A journal entry, written by one member, seen by the team or by its author only."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import Actor, Aggregate, Role
from aggregates.errors import (
    EntryDeleted,
    EntryNotDeleted,
    Forbidden,
    InvalidValue,
    NotFound,
    require_aware,
    require_text,
)

__all__ = ["JournalEntry", "Visibility", "normalise_tags", "parse_visibility"]


class Visibility(StrEnum):
    PRIVATE = "private"
    TEAM = "team"


def parse_visibility(value: str) -> Visibility:
    try:
        return Visibility(value)
    except ValueError:
        allowed = [v.value for v in Visibility]
        raise InvalidValue(
            f"visibility must be one of {allowed}", field="visibility", allowed=allowed
        ) from None


def normalise_tags(tags: Iterable[str]) -> list[str]:
    """Tags compare case-blind, so they are stored lower-case; first spelling wins
    the position, so a client's order survives."""
    seen: dict[str, None] = {}
    for tag in tags:
        seen.setdefault(require_text(tag, field="tags").lower(), None)
    return list(seen)


class JournalEntry(Aggregate):
    @classmethod
    def create(
        cls,
        actor: Actor,
        *,
        id: UUID,
        title: str,
        body: str,
        tags: Iterable[str] = (),
        visibility: Visibility = Visibility.TEAM,
        prompt_id: UUID | None = None,
    ) -> JournalEntry:
        """Writes a new entry as ``actor``. ``id`` may come from an offline client."""
        if actor.role is Role.AUDITOR:
            raise Forbidden("auditors may not write entries")
        return cls(
            id=id,
            team_id=actor.team_id,
            author_id=actor.user_id,
            title=require_text(title, field="title"),
            body=body,
            tags=normalise_tags(tags),
            visibility=parse_visibility(visibility),
            prompt_id=prompt_id,
        )

    @event("Created")
    def __init__(
        self,
        *,
        id: UUID,
        team_id: UUID,
        author_id: UUID,
        title: str,
        body: str,
        tags: list[str],
        visibility: Visibility,
        prompt_id: UUID | None,
    ) -> None:
        self.team_id = team_id
        self.author_id = author_id
        self.title = title
        self.body = body
        self.tags = tuple(tags)
        self.visibility = visibility
        self.prompt_id = prompt_id
        self.deleted_at: datetime | None = None

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def is_visible_to(self, actor: Actor) -> bool:
        """Team entries to every member of the team, auditors included; private
        entries to their author only, whatever the reader's role."""
        if actor.team_id != self.team_id:
            return False
        return self.visibility is Visibility.TEAM or actor.user_id == self.author_id

    def edit(
        self,
        actor: Actor,
        *,
        title: str | None = None,
        body: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> None:
        """Changes the given fields; an edit that changes nothing records nothing."""
        self._require_can_change(actor)
        self._require_not_deleted()
        new_title = self.title if title is None else require_text(title, field="title")
        new_body = self.body if body is None else body
        new_tags = list(self.tags) if tags is None else normalise_tags(tags)
        if (new_title, new_body, new_tags) == (self.title, self.body, list(self.tags)):
            return
        self._edited(title=new_title, body=new_body, tags=new_tags)

    def change_visibility(self, actor: Actor, visibility: Visibility) -> None:
        self._require_can_change(actor)
        self._require_not_deleted()
        visibility = parse_visibility(visibility)
        if visibility is not self.visibility:
            self._visibility_changed(visibility=visibility)

    def delete(self, actor: Actor, *, deleted_at: datetime) -> None:
        """Soft delete: the entry stays in history and can be restored."""
        self._require_can_change(actor)
        self._require_not_deleted()
        self._deleted(deleted_at=require_aware(deleted_at, field="deleted_at"))

    def restore(self, actor: Actor) -> None:
        self._require_can_change(actor)
        if not self.is_deleted:
            raise EntryNotDeleted("entry is not deleted", entry_id=str(self.id))
        self._restored()

    def _require_can_change(self, actor: Actor) -> None:
        # An entry the actor may not see does not exist for them: 404, not 403, so
        # a private entry leaks not even its existence, and only its author gets past.
        if not self.is_visible_to(actor):
            raise NotFound("entry not found", entry_id=str(self.id))
        if actor.role is Role.AUDITOR:
            raise Forbidden("auditors may not change entries")
        if actor.user_id != self.author_id and not actor.is_manager:
            raise Forbidden("only the author, an admin or an owner may change this entry")

    def _require_not_deleted(self) -> None:
        if self.is_deleted:
            raise EntryDeleted("entry is deleted", entry_id=str(self.id))

    @event("Edited")
    def _edited(self, title: str, body: str, tags: list[str]) -> None:
        self.title = title
        self.body = body
        self.tags = tuple(tags)

    @event("VisibilityChanged")
    def _visibility_changed(self, visibility: Visibility) -> None:
        self.visibility = visibility

    @event("Deleted")
    def _deleted(self, deleted_at: datetime) -> None:
        self.deleted_at = deleted_at

    @event("Restored")
    def _restored(self) -> None:
        self.deleted_at = None
