from __future__ import annotations

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
