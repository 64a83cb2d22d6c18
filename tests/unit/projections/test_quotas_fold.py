from __future__ import annotations

from uuid import uuid4

import pytest

from aggregates.quota import MonthlyQuota
from projections.folding import MissingRow
from projections.quotas import QuotasProjection, QuotaUsageFold, TeamPlanFold
from tests.unit.projections import Log, fold_rows, new_team


def test_the_plan_follows_creation_and_changes_only() -> None:
    team, owner = new_team()
    log = Log()
    created = log.facts(team)
    assert fold_rows(TeamPlanFold(), created) == {
        (team.id,): {"team_id": team.id, "plan": "free", "position": 1}
    }
    team.rename(owner, "Renamed")
    team.change_plan(owner, "enterprise")
    later = log.facts(team)
    # Only creation and plan changes are read: a rename is not even decoded.
    assert [f.topic in QuotasProjection().topics for f in later] == [False, True]
    handled = [f for f in later if f.topic in QuotasProjection().topics]
    rows = fold_rows(TeamPlanFold(), handled, fold_rows(TeamPlanFold(), created))
    assert rows[(team.id,)] == {"team_id": team.id, "plan": "enterprise", "position": 3}


def test_a_month_counts_entries_and_marks_its_threshold() -> None:
    team_id = uuid4()
    quota = MonthlyQuota.start(team_id, "2025-05")
    for _ in range(9):
        quota.reserve(uuid4(), limit=10)
    facts = Log().facts(quota)
    assert {f.topic for f in facts} <= QuotasProjection().topics
    row = fold_rows(QuotaUsageFold(), facts)[(quota.id,)]
    assert row == {
        "id": quota.id,
        "team_id": team_id,
        "month": "2025-05",
        "used": 9,
        "threshold_reached": True,
        "updated_at": quota.modified_on,
        "position": len(facts),
    }


def test_the_threshold_stays_unmarked_below_it() -> None:
    quota = MonthlyQuota.start(uuid4(), "2025-06")
    quota.reserve(uuid4(), limit=100)
    row = fold_rows(QuotaUsageFold(), Log().facts(quota))[(quota.id,)]
    assert (row["used"], row["threshold_reached"]) == (1, False)


def test_team_events_do_not_touch_usage_nor_quota_events_plans() -> None:
    team, _ = new_team()
    quota = MonthlyQuota.start(team.id, "2025-05")
    log = Log()
    facts = log.facts(team) + log.facts(quota)
    assert set(fold_rows(TeamPlanFold(), facts)) == {(team.id,)}
    assert set(fold_rows(QuotaUsageFold(), facts)) == {(quota.id,)}


def test_counting_in_a_month_the_table_lacks_stops_the_fold() -> None:
    quota = MonthlyQuota.start(uuid4(), "2025-05")
    log = Log()
    log.facts(quota)
    quota.reserve(uuid4(), limit=10)
    with pytest.raises(MissingRow):
        fold_rows(QuotaUsageFold(), log.facts(quota))


def test_a_plan_change_for_a_team_the_table_lacks_stops_the_fold() -> None:
    team, owner = new_team()
    log = Log()
    log.facts(team)
    team.change_plan(owner, "team")
    with pytest.raises(MissingRow):
        fold_rows(TeamPlanFold(), log.facts(team))


def test_only_a_teams_creation_and_a_months_start_skip_loading() -> None:
    team, owner = new_team()
    team.change_plan(owner, "team")
    quota = MonthlyQuota.start(team.id, "2025-05")
    quota.reserve(uuid4(), limit=1)
    log = Log()
    facts = log.facts(team) + log.facts(quota)
    assert [f.name for f in facts if TeamPlanFold().creates(f)] == ["Created"]
    assert [f.name for f in facts if QuotaUsageFold().creates(f)] == ["Started"]
