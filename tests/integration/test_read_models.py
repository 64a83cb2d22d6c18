"""The teams, prompts, webhooks and quotas read models against real PostgreSQL:
commands write, a worker projects, and the tables and reads agree with the aggregates."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aggregates.base import Actor, EventMetadata, Role
from aggregates.prompt import Prompt
from aggregates.quota import MonthlyQuota
from aggregates.team import REVOKED_WITH_MEMBER, Team
from aggregates.webhook_endpoint import WebhookEndpoint
from commands import prompts, teams, webhooks
from commands.context import CommandContext
from commands.models import (
    AddMember,
    ChangeRole,
    CreatePrompt,
    EditPrompt,
    IssueApiKey,
    RegisterWebhook,
    RotateWebhookSecret,
    ScheduleIn,
    UpdateTeam,
    UpdateWebhook,
)
from commands.url_policy import check_webhook_url
from infra.event_store import EventStore
from projections import prompts as prompt_reads
from projections import quotas as quota_reads
from projections import teams as team_reads
from projections import webhooks as webhook_reads
from projections.base import Projection
from projections.pagination import Page
from projections.prompts import PromptsProjection
from projections.quotas import QuotasProjection
from projections.teams import TeamsProjection
from projections.webhooks import WebhooksProjection
from tests.projection_support import (
    connect,
    create_team,
    read_table,
    running_worker,
    wait_caught_up,
    write_entry,
)


def project(url: str, store: EventStore, *projections: Projection) -> None:
    """Runs a worker until each of ``projections`` has applied the whole log."""
    with running_worker(url, store, projections):
        for projection in projections:
            generation = wait_caught_up(url, projection.name)
            assert not generation.stalled


def all_pages(read: Callable[[str | None], Page]) -> list[list[dict[str, Any]]]:
    pages = [read(None)]
    while pages[-1].next_cursor is not None:
        pages.append(read(pages[-1].next_cursor))
    return [page.rows for page in pages]


def add_member(store: EventStore, owner: Actor, name: str, role: Role = Role.MEMBER) -> UUID:
    command = AddMember(email=f"{name}@example.com", display_name=name, role=role)
    return UUID(teams.add_member(store, CommandContext(actor=owner), command).data["user_id"])


def issue_key(store: EventStore, owner: Actor, user_id: UUID, name: str) -> str:
    command = IssueApiKey(user_id=user_id, name=name)
    key_id: str = teams.issue_api_key(store, CommandContext(actor=owner), command).data["key_id"]
    return key_id


def test_teams_members_and_keys(database_url: str, store: EventStore) -> None:
    team = create_team(store)
    ctx = CommandContext(actor=team.owner)
    ana = add_member(store, team.owner, "ana")
    ben = add_member(store, team.owner, "ben", Role.AUDITOR)
    cid = add_member(store, team.owner, "cid")
    teams.change_role(store, ctx, ana, ChangeRole(role=Role.ADMIN))
    ana_key = issue_key(store, team.owner, ana, "laptop")
    ben_key = issue_key(store, team.owner, ben, "phone")
    teams.remove_member(store, ctx, ben)
    teams.update_team(store, ctx, UpdateTeam(name="Renamed", plan="team"))
    project(database_url, store, TeamsProjection())

    aggregate = store.get(team.team_id, Team)
    assert aggregate is not None
    [row] = read_table(database_url, "teams", "position")
    assert (row["name"], row["plan"], row["version"]) == ("Renamed", "team", aggregate.version)
    members = read_table(database_url, "team_members", "joined_position")
    assert [(m["user_id"], m["role"]) for m in members] == [
        (team.owner.user_id, "owner"),
        (ana, "admin"),
        (cid, "member"),
    ]
    keys = {k["key_id"]: k for k in read_table(database_url, "api_keys", "created_position")}
    assert len(keys) == 3  # the owner's first key, Ana's and Ben's
    assert keys[ana_key]["revoked_at"] is None
    assert keys[ben_key]["revoke_reason"] == REVOKED_WITH_MEMBER
    assert all("secret_hash" not in k for k in keys.values())

    with connect(database_url) as conn:
        found = team_reads.get_team(conn, team.team_id)
        assert found is not None
        # The read model answers exactly what the aggregate-backed view did.
        assert team_reads.team_view(found) == teams.team_view(aggregate)
        member = team_reads.get_member(conn, team.team_id, cid)
        assert member is not None
        assert member["version"] == aggregate.version
        assert team_reads.get_member(conn, team.team_id, ben) is None

        pages = all_pages(lambda c: team_reads.list_members(conn, team.team_id, limit=2, cursor=c))
        assert [[m["user_id"] for m in p] for p in pages] == [[team.owner.user_id, ana], [cid]]

        everyone = all_pages(
            lambda c: team_reads.list_api_keys(conn, team.team_id, holder=None, limit=1, cursor=c)
        )
        assert [k["key_id"] for p in everyone for k in p][1:] == [ana_key, ben_key]
        own = team_reads.list_api_keys(conn, team.team_id, holder=ana, limit=10, cursor=None)
        assert [k["key_id"] for k in own.rows] == [ana_key]
        assert team_reads.get_api_key(conn, team.team_id, ben_key, holder=ana) is None
        assert team_reads.get_api_key(conn, team.team_id, ben_key, holder=None) is not None


def test_prompts(database_url: str, store: EventStore) -> None:
    team = create_team(store)
    ctx = CommandContext(actor=team.owner)
    schedule = ScheduleIn(cron="0 9 * * 1", timezone="Europe/Berlin")
    ids = [
        UUID(
            prompts.create_prompt(store, ctx, CreatePrompt(text=f"q{n}", schedule=schedule)).data[
                "id"
            ]
        )
        for n in range(3)
    ]
    prompts.edit_prompt(store, ctx, ids[0], EditPrompt(text="q0 again", clear_schedule=True))
    prompts.archive_prompt(store, ctx, ids[1])
    project(database_url, store, PromptsProjection())

    rows = read_table(database_url, "prompts", "created_position")
    assert [(r["text"], r["archived"]) for r in rows] == [
        ("q0 again", False),
        ("q1", True),
        ("q2", False),
    ]
    assert rows[0]["schedule"] is None
    assert rows[2]["schedule"] == {"cron": "0 9 * * 1", "timezone": "Europe/Berlin"}

    with connect(database_url) as conn:
        for prompt_id in ids:
            aggregate = store.get(prompt_id, Prompt)
            found = prompt_reads.get_prompt(conn, team.team_id, prompt_id)
            assert aggregate is not None
            assert found is not None
            assert prompt_reads.prompt_view(found) == prompts.prompt_view(aggregate)
        live = prompt_reads.list_prompts(
            conn, team.team_id, include_archived=False, limit=10, cursor=None
        )
        assert [r["id"] for r in live.rows] == [ids[2], ids[0]]
        pages = all_pages(
            lambda c: prompt_reads.list_prompts(
                conn, team.team_id, include_archived=True, limit=2, cursor=c
            )
        )
        assert [[r["id"] for r in p] for p in pages] == [[ids[2], ids[1]], [ids[0]]]


def test_webhooks(database_url: str, store: EventStore) -> None:
    team = create_team(store)
    ctx = CommandContext(actor=team.owner)

    def register(n: int) -> UUID:
        command = RegisterWebhook(
            url=f"https://hooks.example.com/{n}", event_types=["entry.created"]
        )
        result = webhooks.register_webhook(store, ctx, command, url_guard=check_webhook_url)
        return UUID(result.data["id"])

    kept, rotated, deleted = register(1), register(2), register(3)
    update = UpdateWebhook(description="kept")
    webhooks.update_webhook(store, ctx, kept, update, url_guard=check_webhook_url)
    webhooks.disable_webhook(store, ctx, kept)
    secret = webhooks.rotate_webhook_secret(store, ctx, rotated, RotateWebhookSecret())
    webhooks.delete_webhook(store, ctx, deleted)
    project(database_url, store, WebhooksProjection())

    rows = read_table(database_url, "webhooks", "created_position")
    assert [r["id"] for r in rows] == [kept, rotated]
    assert (rows[0]["description"], rows[0]["enabled"]) == ("kept", False)
    assert secret.data["secret"] not in str(rows)

    with connect(database_url) as conn:
        for webhook_id in (kept, rotated):
            aggregate = store.get(webhook_id, WebhookEndpoint)
            found = webhook_reads.get_webhook(conn, team.team_id, webhook_id)
            assert aggregate is not None
            assert found is not None
            assert webhook_reads.webhook_view(found) == webhooks.webhook_view(aggregate)
        assert webhook_reads.get_webhook(conn, team.team_id, deleted) is None
        page = webhook_reads.list_webhooks(conn, team.team_id, limit=1, cursor=None)
        assert [r["id"] for r in page.rows] == [rotated]
        assert page.next_cursor is not None
        rest = webhook_reads.list_webhooks(conn, team.team_id, limit=1, cursor=page.next_cursor)
        assert ([r["id"] for r in rest.rows], rest.next_cursor) == ([kept], None)


def test_quotas(database_url: str, store: EventStore) -> None:
    team = create_team(store)  # enterprise
    other = create_team(store, "Other")
    for n in range(3):
        write_entry(store, team.owner, f"entry {n}")
    write_entry(store, other.owner, "theirs")
    # An earlier month, as the quota aggregate would have recorded it then.
    earlier = MonthlyQuota.start(team.team_id, "2024-01")
    earlier.reserve(UUID(int=1), 100)
    store.save([earlier], metadata=EventMetadata())
    teams.update_team(store, CommandContext(actor=team.owner), UpdateTeam(plan="free"))
    project(database_url, store, QuotasProjection())

    month = datetime.now(UTC).strftime("%Y-%m")
    usage = {(r["team_id"], r["month"]): r for r in read_table(database_url, "quota_usage", "id")}
    assert usage[(team.team_id, month)]["used"] == 3
    assert usage[(other.team_id, month)]["used"] == 1
    plans = {r["team_id"]: r["plan"] for r in read_table(database_url, "team_plans", "team_id")}
    assert plans == {team.team_id: "free", other.team_id: "enterprise"}

    with connect(database_url) as conn:
        found = quota_reads.get_usage(conn, team.team_id, month)
        assert found is not None
        assert quota_reads.usage_view(found) == {
            "month": month,
            "used": 3,
            "limit": 100,  # the plan now, not the plan when the entries were written
            "remaining": 97,
            "threshold_reached": False,
        }
        quiet = quota_reads.get_usage(conn, team.team_id, "2023-02")
        assert quiet is not None
        assert quota_reads.usage_view(quiet)["used"] == 0
        assert quota_reads.get_usage(conn, UUID(int=7), month) is None
        pages = all_pages(lambda c: quota_reads.list_usage(conn, team.team_id, limit=1, cursor=c))
        assert [[r["month"] for r in p] for p in pages] == [[month], ["2024-01"]]
