from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregates.base import Role
from aggregates.errors import (
    DomainError,
    Forbidden,
    InvalidValue,
    NotFound,
    PromptAlreadyIssued,
    PromptArchived,
    PromptNotScheduled,
)
from aggregates.prompt import UNCHANGED, Prompt, Schedule, check_schedule
from tests.unit.domain import actor_in, data, names, replay

TEAM = uuid4()
ADMIN = actor_in(TEAM, Role.ADMIN)
DAILY = Schedule(cron="0 9 * * *", timezone="Europe/Berlin")


def new_prompt(schedule: Schedule | None = DAILY) -> Prompt:
    return Prompt.create(ADMIN, id=uuid4(), text=" What did you learn? ", schedule=schedule)


def test_create_records_text_and_schedule_under_the_given_id() -> None:
    chosen = uuid4()
    prompt = Prompt.create(
        ADMIN, id=chosen, text="Why?", schedule=Schedule(cron="0  9 * *  MON-fri", timezone="UTC")
    )
    events = prompt.collect_events()
    assert prompt.id == chosen
    assert names(events) == ["Created"]
    assert data(events[0]) == {
        "team_id": TEAM,
        "text": "Why?",
        "schedule": {"cron": "0 9 * * MON-fri", "timezone": "UTC"},
    }
    assert replay(Prompt, events) == prompt


@pytest.mark.parametrize(
    "cron",
    [
        "* * * * *",
        "*/15 0-23/2 1,15,31 JAN-dec sun",
        "59 23 31 12 7",
        "0 0 1 * 0",
        "5-10,20 * * feb mon-sat/2",
    ],
)
def test_valid_cron_lines(cron: str) -> None:
    assert check_schedule(Schedule(cron=cron, timezone="UTC")).cron == cron


@pytest.mark.parametrize(
    "cron",
    [
        "",
        "* * * *",
        "* * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * 8",
        "10-5 * * * *",
        "*/0 * * * *",
        "a * * * *",
        "@daily",
        "1,,2 * * * *",
        "* * ? * *",
        "* * L * *",
        "٣ * * * *",
    ],
)
def test_invalid_cron_lines(cron: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        check_schedule(Schedule(cron=cron, timezone="UTC"))
    assert caught.value.details["field"] == "schedule.cron"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "Europe", "../etc/passwd", "/etc/localtime"])
def test_unknown_time_zones_are_refused(zone: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        check_schedule(Schedule(cron="* * * * *", timezone=zone))
    assert caught.value.details["field"] == "schedule.timezone"


cron_token = st.sampled_from(["*", "*/5", "0", "7", "1-5", "5-1", "mon", "JAN", "60", "x", "1,2"])
cron_like = st.lists(cron_token, min_size=4, max_size=6).map(" ".join)
zone_like = st.sampled_from(["UTC", "Europe/Berlin", "America/Sao_Paulo", "Nowhere/Land"])


@given(st.one_of(st.text(max_size=30), cron_like), st.one_of(st.text(max_size=20), zone_like))
def test_any_schedule_is_accepted_or_refused_as_invalid(cron: str, zone: str) -> None:
    try:
        checked = check_schedule(Schedule(cron=cron, timezone=zone))
    except InvalidValue:
        return
    assert len(checked.cron.split(" ")) == 5
    assert checked.timezone == zone


@pytest.mark.parametrize("role", list(Role))
def test_only_managers_create_edit_and_archive(role: Role) -> None:
    actor = actor_in(TEAM, role)
    prompt = new_prompt()
    history = list(prompt.collect_events())
    if actor.is_manager:
        Prompt.create(actor, id=uuid4(), text="t")
        prompt.edit(actor, text="Changed")
        prompt.archive(actor)
        history += prompt.collect_events()
        assert names(history) == ["Created", "Edited", "Archived"]
        assert replay(Prompt, history) == prompt
    else:
        with pytest.raises(Forbidden):
            Prompt.create(actor, id=uuid4(), text="t")
        with pytest.raises(Forbidden):
            prompt.edit(actor, text="Changed")
        with pytest.raises(Forbidden):
            prompt.archive(actor)
        assert prompt.collect_events() == []


def test_another_teams_manager_gets_not_found() -> None:
    prompt = new_prompt()
    stranger = actor_in(uuid4(), Role.OWNER)
    with pytest.raises(NotFound):
        prompt.edit(stranger, text="mine")
    with pytest.raises(NotFound):
        prompt.archive(stranger)


def test_edit_keeps_removes_or_replaces_the_schedule() -> None:
    prompt = new_prompt()
    prompt.collect_events()
    prompt.edit(ADMIN, text="New text")
    assert prompt.schedule == DAILY
    prompt.edit(ADMIN, schedule=Schedule(cron="30 8 * * 1", timezone="Asia/Tokyo"))
    assert prompt.schedule == Schedule(cron="30 8 * * 1", timezone="Asia/Tokyo")
    prompt.edit(ADMIN, schedule=None)
    assert prompt.schedule is None
    events = prompt.collect_events()
    assert [data(e) for e in events] == [
        {"text": "New text", "schedule": DAILY.model_dump()},
        {"text": "New text", "schedule": {"cron": "30 8 * * 1", "timezone": "Asia/Tokyo"}},
        {"text": "New text", "schedule": None},
    ]


def test_edits_that_change_nothing_record_nothing() -> None:
    prompt = new_prompt()
    prompt.collect_events()
    prompt.edit(ADMIN)
    prompt.edit(ADMIN, text="What did you learn?", schedule=UNCHANGED)
    prompt.edit(ADMIN, schedule=Schedule(cron=" 0 9 *  * * ", timezone="Europe/Berlin"))
    assert prompt.collect_events() == []


def test_edit_refuses_a_bad_schedule_and_blank_text() -> None:
    prompt = new_prompt()
    prompt.collect_events()
    with pytest.raises(InvalidValue):
        prompt.edit(ADMIN, schedule=Schedule(cron="0 9 * *", timezone="UTC"))
    with pytest.raises(InvalidValue):
        prompt.edit(ADMIN, text="   ")
    assert prompt.collect_events() == []
    assert prompt.schedule == DAILY


def test_archived_prompts_cannot_be_edited_or_archived_again() -> None:
    prompt = new_prompt(schedule=None)
    prompt.archive(ADMIN)
    assert prompt.archived
    with pytest.raises(PromptArchived):
        prompt.edit(ADMIN, text="late")
    with pytest.raises(PromptArchived):
        prompt.archive(ADMIN)
    assert names(prompt.collect_events()) == ["Created", "Archived"]


NINE = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # 09:00 in Berlin


def test_issue_records_the_due_time_and_the_text_of_that_moment() -> None:
    prompt = new_prompt()
    prompt.issue(NINE)
    prompt.edit(ADMIN, text="And today?")
    prompt.issue(NINE + timedelta(days=1))
    events = prompt.collect_events()
    assert names(events) == ["Created", "Issued", "Edited", "Issued"]
    assert data(events[1]) == {"due_at": NINE, "text": "What did you learn?"}
    assert data(events[3]) == {"due_at": NINE + timedelta(days=1), "text": "And today?"}
    assert prompt.last_issued_at == NINE + timedelta(days=1)
    assert replay(Prompt, events) == prompt


def test_due_times_are_stored_in_utc_and_naive_ones_are_refused() -> None:
    prompt = new_prompt()
    prompt.issue(datetime(2026, 3, 2, 9, 0, tzinfo=timezone(timedelta(hours=1))))
    assert prompt.last_issued_at == NINE
    assert prompt.last_issued_at.tzinfo == UTC
    with pytest.raises(InvalidValue):
        prompt.issue(datetime(2026, 3, 3, 9, 0))  # noqa: DTZ001 - naive on purpose


@pytest.mark.parametrize("offset", [timedelta(0), -timedelta(minutes=1), -timedelta(days=7)])
def test_a_due_time_not_after_the_last_issued_one_is_refused(offset: timedelta) -> None:
    prompt = new_prompt()
    prompt.issue(NINE)
    prompt.collect_events()
    with pytest.raises(PromptAlreadyIssued) as caught:
        prompt.issue(NINE + offset)
    assert caught.value.details["last_issued_at"] == NINE.isoformat()
    assert isinstance(caught.value, DomainError)
    assert prompt.collect_events() == []
    assert prompt.last_issued_at == NINE


def test_two_schedulers_issuing_one_due_time_record_it_once() -> None:
    """What the store's optimistic concurrency leads to: both load version 1,
    both decide; one saves version 2, the other conflicts, loads again and is
    refused by the guard."""
    prompt = new_prompt()
    history = prompt.collect_events()
    first, second = replay(Prompt, history), replay(Prompt, history)
    first.issue(NINE)
    second.issue(NINE)
    won = first.collect_events()
    lost = second.collect_events()
    assert [e.originator_version for e in won] == [e.originator_version for e in lost] == [2]
    reloaded = replay(Prompt, [*history, *won])
    with pytest.raises(PromptAlreadyIssued):
        reloaded.issue(NINE)


def test_a_prompt_without_a_schedule_or_archived_is_not_issued() -> None:
    unscheduled = new_prompt(schedule=None)
    with pytest.raises(PromptNotScheduled):
        unscheduled.issue(NINE)
    unscheduled.collect_events()
    scheduled = new_prompt()
    scheduled.edit(ADMIN, schedule=None)
    with pytest.raises(PromptNotScheduled):
        scheduled.issue(NINE)
    archived = new_prompt()
    archived.archive(ADMIN)
    with pytest.raises(PromptArchived):
        archived.issue(NINE)
    assert "Issued" not in names([*scheduled.collect_events(), *archived.collect_events()])


def test_a_due_time_computed_from_another_schedule_is_refused() -> None:
    prompt = new_prompt()
    prompt.edit(ADMIN, schedule=Schedule(cron="0 17 * * *", timezone="Europe/Berlin"))
    prompt.collect_events()
    with pytest.raises(PromptNotScheduled):
        prompt.issue(NINE, schedule=DAILY)
    prompt.issue(NINE, schedule=Schedule(cron="0 17 * * *", timezone="Europe/Berlin"))
    assert names(prompt.collect_events()) == ["Issued"]
