from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from aggregates.base import Actor, Role
from aggregates.prompt import Prompt, Schedule
from projections.folding import MissingRow
from projections.prompts import PromptFold, PromptsProjection
from tests.unit.projections import Log, fold_rows

ADMIN = Actor(user_id=uuid4(), role=Role.ADMIN, team_id=uuid4())
WEEKLY = Schedule(cron="0  9 * * 1", timezone="Europe/Berlin")


def new_prompt() -> Prompt:
    return Prompt.create(ADMIN, id=uuid4(), text="What went well?", schedule=WEEKLY)


def test_created_stores_the_schedule_as_a_plain_mapping() -> None:
    prompt = new_prompt()
    facts = Log().facts(prompt)
    assert {f.topic for f in facts} <= PromptsProjection().topics
    assert fold_rows(PromptFold(), facts) == {
        (prompt.id,): {
            "id": prompt.id,
            "team_id": ADMIN.team_id,
            "text": "What went well?",
            "schedule": {"cron": "0 9 * * 1", "timezone": "Europe/Berlin"},
            "archived": False,
            "version": 1,
            "created_at": prompt.created_on,
            "updated_at": prompt.created_on,
            "created_position": 1,
            "position": 1,
            "last_issued_at": None,
            "scheduled_since": prompt.created_on,
        }
    }


def test_edits_and_archiving_follow_the_aggregate() -> None:
    prompt = new_prompt()
    prompt.edit(ADMIN, text="What did you learn?", schedule=None)
    prompt.archive(ADMIN)
    facts = Log().facts(prompt)
    assert {f.topic for f in facts} <= PromptsProjection().topics
    row = fold_rows(PromptFold(), facts)[(prompt.id,)]
    assert (row["text"], row["schedule"], row["archived"]) == ("What did you learn?", None, True)
    assert (row["version"], row["position"], row["created_position"]) == (3, 3, 1)
    assert (row["created_at"], row["updated_at"]) == (prompt.created_on, prompt.modified_on)


def test_a_later_batch_folds_onto_the_stored_row() -> None:
    prompt = new_prompt()
    log = Log()
    stored = fold_rows(PromptFold(), log.facts(prompt))
    prompt.edit(ADMIN, schedule=Schedule(cron="0 17 * * 5", timezone="UTC"))
    row = fold_rows(PromptFold(), log.facts(prompt), stored)[(prompt.id,)]
    assert row["schedule"] == {"cron": "0 17 * * 5", "timezone": "UTC"}
    assert row["text"] == "What went well?"


def test_an_edit_of_a_prompt_the_table_lacks_stops_the_fold() -> None:
    prompt = new_prompt()
    log = Log()
    log.facts(prompt)
    prompt.archive(ADMIN)
    with pytest.raises(MissingRow):
        fold_rows(PromptFold(), log.facts(prompt))


def test_issues_move_the_version_and_the_last_due_time() -> None:
    prompt = new_prompt()
    due = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    prompt.issue(due)
    prompt.issue(due + timedelta(weeks=1))
    facts = Log().facts(prompt)
    assert {f.topic for f in facts} <= PromptsProjection().topics
    row = fold_rows(PromptFold(), facts)[(prompt.id,)]
    assert row["last_issued_at"] == due + timedelta(weeks=1)
    assert (row["version"], row["position"], row["updated_at"]) == (3, 3, prompt.modified_on)
    assert row["text"] == "What went well?"
    assert row["scheduled_since"] == prompt.created_on


def test_scheduled_since_follows_changes_of_the_schedule_only() -> None:
    prompt = Prompt.create(ADMIN, id=uuid4(), text="Unscheduled")
    log = Log()
    rows = fold_rows(PromptFold(), log.facts(prompt))
    assert rows[(prompt.id,)]["scheduled_since"] is None
    prompt.edit(ADMIN, schedule=WEEKLY)
    scheduled_at = prompt.modified_on
    prompt.edit(ADMIN, text="Still weekly")
    rows = fold_rows(PromptFold(), log.facts(prompt), rows)
    assert rows[(prompt.id,)]["scheduled_since"] == scheduled_at
    prompt.edit(ADMIN, schedule=Schedule(cron="0 17 * * 5", timezone="UTC"))
    rows = fold_rows(PromptFold(), log.facts(prompt), rows)
    assert rows[(prompt.id,)]["scheduled_since"] == prompt.modified_on > scheduled_at
    prompt.edit(ADMIN, schedule=None)
    rows = fold_rows(PromptFold(), log.facts(prompt), rows)
    assert rows[(prompt.id,)]["scheduled_since"] is None
