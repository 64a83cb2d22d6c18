"""The audit ledger against real PostgreSQL: every stored event chained, signed
checkpoints, and verification that finds exactly where the log was touched."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import pytest

from infra import operations
from infra.audit_verify import Verification, head, verify
from infra.event_store import EventStore
from infra.settings import Settings, load_settings
from projections.audit_chain import CheckpointSigner
from projections.audit_ledger import LedgerProjection
from tests.projection_support import (
    TeamFixture,
    connect,
    create_team,
    running_worker,
    wait_caught_up,
    write_entry,
)

EVERY = 5
OLD_KEY = b"o" * 32
NEW_KEY = b"n" * 32
SIGNER = CheckpointSigner({"k2": NEW_KEY, "k1": OLD_KEY})


def _chain(url: str, store: EventStore, signer: CheckpointSigner | None = SIGNER) -> None:
    with running_worker(url, store, [LedgerProjection(signer, checkpoint_every=EVERY)]):
        wait_caught_up(url, "audit_ledger")


def _verify(url: str, signer: CheckpointSigner | None = SIGNER, **kwargs: Any) -> Verification:
    with connect(url) as conn:
        return verify(conn, signer=signer, checkpoint_every=EVERY, **kwargs)


def _positions(url: str) -> list[int]:
    with connect(url) as conn:
        rows = conn.execute("SELECT notification_id FROM chronik_events ORDER BY 1").fetchall()
    return [row[0] for row in rows]


@pytest.fixture
def team(store: EventStore) -> TeamFixture:
    return create_team(store)


@pytest.fixture
def chained(database_url: str, store: EventStore, team: TeamFixture) -> list[int]:
    """A log of a few dozen events, all chained; its positions."""
    for n in range(22):
        write_entry(store, team.owner, f"entry {n}")
    _chain(database_url, store)
    return _positions(database_url)


def test_every_event_is_chained_and_checkpointed(database_url: str, chained: list[int]) -> None:
    with connect(database_url) as conn:
        ledger = conn.execute("SELECT position, seq FROM reads.audit_ledger ORDER BY 1").fetchall()
        checkpoints = conn.execute(
            "SELECT count, position, key_id FROM audit_checkpoints ORDER BY 1"
        ).fetchall()
        published = head(conn)
    assert [row[0] for row in ledger] == chained
    assert [row[1] for row in ledger] == list(range(1, len(chained) + 1))
    assert [(c, p) for c, p, _ in checkpoints] == [
        (n, chained[n - 1]) for n in range(EVERY, len(chained) + 1, EVERY)
    ]
    assert {key for _, _, key in checkpoints} == {"k2"}
    assert published.position == chained[-1]
    assert published.count == len(chained)
    assert published.unchained_events == 0
    assert published.checkpoint is not None
    assert published.checkpoint["count"] == len(chained) // EVERY * EVERY


def test_an_untouched_log_verifies(database_url: str, chained: list[int]) -> None:
    report = _verify(database_url)
    assert report.ok
    assert report.checked == len(chained)
    assert report.checkpoints_checked == len(chained) // EVERY
    assert report.signatures_checked
    assert report.last_position == chained[-1]
    assert report.last_hash == report.head_hash


def test_a_range_verifies_from_the_recorded_link_before_it(
    database_url: str, chained: list[int]
) -> None:
    whole = _verify(database_url)
    part = _verify(database_url, first=chained[7], last=chained[12])
    assert part.ok
    assert part.checked == 6
    upto = _verify(database_url, last=chained[12])
    assert upto.last_hash == part.last_hash
    assert whole.last_hash == whole.head_hash


def test_one_changed_byte_is_found_at_its_position(database_url: str, chained: list[int]) -> None:
    target = chained[9]
    with connect(database_url) as conn:
        conn.execute(
            "UPDATE chronik_events SET state = overlay(state placing "
            "(CASE WHEN get_byte(state, 20) = 65 THEN '\\x42' ELSE '\\x41' END)::bytea "
            "from 21 for 1) WHERE notification_id = %s",
            (target,),
        )
    report = _verify(database_url)
    assert (report.ok, report.first_bad_position, report.problem) == (False, target, "changed")
    assert report.checked == 9
    # A check that ends before the change does not see it.
    assert _verify(database_url, last=chained[8]).ok


def test_a_deleted_event_is_found_at_its_position(database_url: str, chained: list[int]) -> None:
    target = chained[3]
    with connect(database_url) as conn:
        conn.execute("DELETE FROM chronik_events WHERE notification_id = %s", (target,))
    report = _verify(database_url)
    assert (report.first_bad_position, report.problem) == (target, "removed")


def test_an_inserted_event_is_found_at_its_position(
    database_url: str, store: EventStore, team: TeamFixture
) -> None:
    write_entry(store, team.owner, "before the gap")
    with connect(database_url) as conn:
        # Burned ids leave gaps, as rolled-back inserts do.
        for _ in range(3):
            conn.execute("SELECT nextval('chronik_events_notification_id_seq')")
    write_entry(store, team.owner, "after the gap")
    _chain(database_url, store)
    positions = _positions(database_url)
    gap = next(p + 1 for p, q in itertools.pairwise(positions) if q > p + 1)
    with connect(database_url) as conn:
        conn.execute(
            "INSERT INTO chronik_events (originator_id, originator_version, topic, state, "
            "notification_id) SELECT originator_id, 99, topic, state, %s FROM chronik_events "
            "WHERE notification_id = %s",
            (gap, positions[-1]),
        )
    report = _verify(database_url)
    assert (report.first_bad_position, report.problem) == (gap, "inserted")


def test_an_event_removed_with_its_ledger_row_breaks_the_chain_at_the_next(
    database_url: str, chained: list[int]
) -> None:
    with connect(database_url) as conn:
        conn.execute("DELETE FROM chronik_events WHERE notification_id = %s", (chained[5],))
        conn.execute("DELETE FROM reads.audit_ledger WHERE position = %s", (chained[5],))
    report = _verify(database_url)
    assert (report.first_bad_position, report.problem) == (chained[6], "chain_broken")


def test_the_tail_removed_with_its_ledger_rows_is_found(
    database_url: str, chained: list[int]
) -> None:
    with connect(database_url) as conn:
        conn.execute("DELETE FROM chronik_events WHERE notification_id >= %s", (chained[-4],))
        conn.execute("DELETE FROM reads.audit_ledger WHERE position >= %s", (chained[-4],))
    report = _verify(database_url)
    assert report.problem == "removed"
    assert report.first_bad_position is not None
    assert chained[-4] <= report.first_bad_position <= chained[-1]


def test_a_ledger_row_changed_to_match_a_changed_event_is_found(
    database_url: str, chained: list[int]
) -> None:
    with connect(database_url) as conn:
        conn.execute(
            "UPDATE reads.audit_ledger SET chain_hash = sha256(chain_hash) WHERE position = %s",
            (chained[2],),
        )
    report = _verify(database_url)
    assert (report.first_bad_position, report.problem) == (chained[2], "chain_broken")


def test_a_ledger_row_whose_event_hash_alone_was_edited_is_not_blamed_on_the_log(
    database_url: str, chained: list[int]
) -> None:
    with connect(database_url) as conn:
        conn.execute(
            "UPDATE reads.audit_ledger SET event_hash = sha256(event_hash) WHERE position = %s",
            (chained[4],),
        )
    report = _verify(database_url)
    assert (report.first_bad_position, report.problem) == (chained[4], "chain_broken")


def test_a_deleted_checkpoint_leaves_a_gap_that_is_found(
    database_url: str, chained: list[int]
) -> None:
    with connect(database_url) as conn:
        conn.execute("DELETE FROM audit_checkpoints WHERE count = 10")
    report = _verify(database_url)
    assert (report.first_bad_position, report.problem) == (chained[9], "checkpoint_missing")
    # A range that starts after the next checkpoint does not pass through the gap.
    assert _verify(database_url, first=chained[15]).ok


def test_a_changed_event_rechained_after_deleting_later_checkpoints_is_found(
    database_url: str, store: EventStore, chained: list[int]
) -> None:
    """Someone with write access but no key: change an event, delete the
    checkpoints it would contradict, rebuild the ledger over the changed log."""
    with connect(database_url) as conn:
        conn.execute(
            "UPDATE chronik_events SET state = state || '\\x20'::bytea WHERE notification_id = %s",
            (chained[12],),
        )
        conn.execute("DELETE FROM audit_checkpoints WHERE count >= 13")
        conn.execute("DELETE FROM reads.audit_ledger")
        conn.execute("UPDATE projection_generations SET position = 0, applied_events = 0")
    _chain(database_url, store, signer=None)  # without the key: no new checkpoints
    report = _verify(database_url)
    assert (report.first_bad_position, report.problem) == (chained[14], "checkpoint_missing")


def test_a_forged_checkpoint_signature_is_found(database_url: str, chained: list[int]) -> None:
    with connect(database_url) as conn:
        conn.execute("UPDATE audit_checkpoints SET signature = sha256(signature) WHERE count = 10")
    report = _verify(database_url)
    assert (report.first_bad_position, report.problem) == (chained[9], "bad_signature")
    # Without the keys, signatures (and gaps) are not checked, and the report says so.
    unsigned = _verify(database_url, signer=None)
    assert unsigned.ok
    assert not unsigned.signatures_checked


def test_checkpoints_by_a_retired_key_fail_once_the_key_is_dropped(
    database_url: str, chained: list[int]
) -> None:
    assert _verify(database_url, signer=CheckpointSigner({"k3": b"t" * 32, "k2": NEW_KEY})).ok
    report = _verify(database_url, signer=CheckpointSigner({"k3": b"t" * 32}))
    assert (report.first_bad_position, report.problem) == (chained[EVERY - 1], "bad_signature")


def test_a_ledger_rebuilt_over_a_changed_log_disagrees_with_the_checkpoints(
    settings: Settings, database_url: str, chained: list[int]
) -> None:
    with connect(database_url) as conn:
        conn.execute("DELETE FROM chronik_events WHERE notification_id = %s", (chained[12],))
    keys = "k2:" + NEW_KEY.decode() + ",k1:" + OLD_KEY.decode()
    rebuilt = settings.model_copy(
        update={"audit_signing_keys": load_settings(audit_signing_keys=keys).audit_signing_keys}
    )
    operations.rebuild(rebuilt, "audit_ledger")
    report = _verify(database_url)
    # The new chain agrees with itself; the first checkpoint after the change does not.
    assert (report.first_bad_position, report.problem) == (chained[15], "checkpoint_mismatch")


def test_verification_can_stop_at_a_cap(database_url: str, chained: list[int]) -> None:
    report = _verify(database_url, max_events=7)
    assert report.ok
    assert report.truncated
    assert report.checked == 7
    assert report.last_position == chained[6]


def test_without_a_ledger_verification_says_so(database_url: str) -> None:
    with connect(database_url) as conn, pytest.raises(Exception, match="has not been built"):
        verify(conn)


def test_the_unchained_tail_is_reported_not_failed(
    database_url: str, store: EventStore, team: TeamFixture, chained: list[int]
) -> None:
    write_entry(store, team.owner, "not yet chained")
    written = len(_positions(database_url)) - len(chained)
    with connect(database_url) as conn:
        assert written > 0
        assert head(conn).unchained_events == written
        assert verify(conn, signer=SIGNER).ok


def test_conn_is_left_usable(database_url: str, chained: list[int]) -> None:
    with connect(database_url) as conn:
        verify(conn, max_events=3)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
