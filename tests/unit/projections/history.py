"""One history with every kind of event, stamped with metadata as commands
stamp it, for the public catalog's and the event feed's pure tests."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from eventsourcing.utils import get_topic

from aggregates.base import Actor, Aggregate, DomainEvent, EventMetadata, Role
from aggregates.journal_entry import JournalEntry, Visibility
from aggregates.prompt import Prompt, Schedule
from aggregates.quota import MonthlyQuota
from aggregates.team import Team
from aggregates.webhook_endpoint import WebhookEndpoint
from commands.auth import hash_secret
from projections.base import Fact

__all__ = ["History", "Secrets", "full_history", "stamped"]


def stamped(actor: Actor | None, facts: list[Fact]) -> list[Fact]:
    """``facts`` with the metadata a command run by ``actor`` gives its events."""
    if actor is None:
        return facts
    metadata = EventMetadata(
        team_id=actor.team_id,
        actor_user_id=actor.user_id,
        actor_key_id=actor.key_id,
        command="Test",
    )
    return [
        Fact(f.position, f.topic, f.event.model_copy(update={"metadata": metadata})) for f in facts
    ]


@dataclass
class Secrets:
    """Every secret (or secret's name) the history holds somewhere."""

    key_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    webhook_secrets: tuple[str, str] = ("whsec_" + "a" * 43, "whsec_" + "b" * 43)
    secret_ids: tuple[str, str] = ("sec_0011223344556677", "sec_8899aabbccddeeff")
    key_hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.key_hash = hash_secret(self.key_secret)

    def fingerprint(self, n: int) -> str:
        return hashlib.sha256(self.webhook_secrets[n].encode()).hexdigest()[:16]


@dataclass
class History:
    owner: Actor
    member: Actor
    facts: list[Fact] = field(default_factory=list)
    secrets: Secrets = field(default_factory=Secrets)
    entry_id: UUID = field(default_factory=uuid4)
    prompt_id: UUID = field(default_factory=uuid4)
    webhook_id: UUID = field(default_factory=uuid4)
    leaver: UUID = field(default_factory=uuid4)
    quota_id: UUID | None = None

    def add(self, actor: Actor | None, aggregate: Aggregate) -> list[Fact]:
        found: list[Fact] = []
        for event in aggregate.collect_events():
            assert isinstance(event, DomainEvent)
            found.append(Fact(len(self.facts) + len(found) + 1, get_topic(type(event)), event))
        found = stamped(actor, found)
        self.facts += found
        return found


def full_history() -> History:
    """A team with a member (and one who leaves), an entry made private and back, a prompt, a
    webhook through its whole life and a month's quota past its threshold."""
    team_id = uuid4()
    owner = Actor(uuid4(), Role.OWNER, team_id, key_id="ownerkey00000001")
    member = Actor(uuid4(), Role.MEMBER, team_id, key_id="memberkey0000001")
    history = History(owner, member)
    keys = history.secrets

    team = Team.create(
        id=team_id,
        name="Acme",
        plan="team",
        owner_user_id=owner.user_id,
        owner_email="o@example.com",
        owner_display_name="O",
    )
    team.rename(owner, "Acme Inc")
    team.change_plan(owner, "enterprise")
    team.add_member(
        owner, user_id=member.user_id, email="m@example.com", display_name="M", role=Role.ADMIN
    )
    team.change_role(owner, member.user_id, Role.MEMBER)
    team.issue_api_key(
        owner, key_id="k" * 16, user_id=member.user_id, name="laptop", secret_hash=keys.key_hash
    )
    team.revoke_api_key(owner, "k" * 16)
    team.add_member(
        owner, user_id=history.leaver, email="l@example.com", display_name="L", role=Role.MEMBER
    )
    team.remove_member(owner, history.leaver)
    history.add(owner, team)

    prompt = Prompt.create(
        owner,
        id=history.prompt_id,
        text="What went well?",
        schedule=Schedule(cron="0 9 * * 1", timezone="Europe/Berlin"),
    )
    prompt.edit(owner, text="What did you learn?", schedule=None)
    prompt.archive(owner)
    history.add(owner, prompt)

    entry = JournalEntry.create(
        member, id=history.entry_id, title="Private", body="b", tags=["A"],
        visibility=Visibility.PRIVATE, prompt_id=history.prompt_id,
    )  # fmt: skip
    entry.edit(member, title="Still private")
    entry.change_visibility(member, Visibility.TEAM)
    entry.delete(member, deleted_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    entry.restore(member)
    entry.change_visibility(member, Visibility.PRIVATE)
    history.add(member, entry)

    quota = MonthlyQuota.start(team_id, "2026-01")
    quota.reserve(history.entry_id, 1)
    history.quota_id = quota.id
    history.add(member, quota)

    webhook = WebhookEndpoint.register(
        owner,
        id=history.webhook_id,
        url="https://hooks.example.org/in",
        event_types=["entry.created"],
        description="CI",
        secret_id=keys.secret_ids[0],
        secret_fingerprint=keys.fingerprint(0),
    )
    webhook.update(owner, description="CI hook")
    webhook.rotate_secret(
        owner,
        new_secret_id=keys.secret_ids[1],
        new_fingerprint=keys.fingerprint(1),
        previous_valid_until=datetime(2026, 1, 3, tzinfo=UTC) + timedelta(hours=1),
    )
    webhook.disable(owner, reason="receiver is down")
    webhook.enable(owner)
    webhook.delete(owner)
    history.add(owner, webhook)

    return history


def with_an_issued_prompt(history: History) -> History:
    """``history`` and a prompt the scheduler issues, stamped as a system
    command stamps it: the team, no actor."""
    weekly = Prompt.create(
        history.owner,
        id=uuid4(),
        text="Weekly?",
        schedule=Schedule(cron="0 9 * * 1", timezone="UTC"),
    )
    history.add(history.owner, weekly)
    weekly.issue(datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
    [issued] = history.add(None, weekly)
    system = EventMetadata(team_id=history.owner.team_id, command="IssuePrompt")
    history.facts[-1] = Fact(
        issued.position, issued.topic, issued.event.model_copy(update={"metadata": system})
    )
    return history
