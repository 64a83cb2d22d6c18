from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from infra.db import PostgresTarget
from infra.migrations import MigrationError, available_migrations, migrate

# The schema an empty database must have after migrating: table -> columns.
EXPECTED_COLUMNS = {
    "chronik_events": {
        "originator_id": "uuid",
        "originator_version": "bigint",
        "topic": "text",
        "state": "bytea",
        "notification_id": "bigint",
    },
    # The library's snapshot table for the application "Chronik" (0005).
    "chronik_snapshots": {
        "originator_id": "uuid",
        "originator_version": "bigint",
        "topic": "text",
        "state": "bytea",
    },
    "idempotency_records": {
        "team_id": "uuid",
        "idempotency_key": "text",
        "request_fingerprint": "text",
        "status_code": "integer",
        "response": "jsonb",
        "created_at": "timestamp with time zone",
    },
    "api_key_index": {"key_id": "text", "team_id": "uuid"},
    "webhook_secrets": {
        "secret_id": "text",
        "endpoint_id": "uuid",
        "team_id": "uuid",
        "secret": "text",
        "created_at": "timestamp with time zone",
        "valid_until": "timestamp with time zone",
    },
    "relay_positions": {
        "name": "text",
        "position": "bigint",
        "published": "bigint",
        "last_error": "text",
        "last_error_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
    },
    "webhook_deliveries": {
        "id": "bigint",
        "team_id": "uuid",
        "endpoint_id": "uuid",
        "position": "bigint",
        "event_id": "text",
        "event_type": "text",
        "body": "text",
        "status": "text",
        "attempts": "integer",
        "round_start": "integer",
        "next_attempt_at": "timestamp with time zone",
        "last_status_code": "integer",
        "last_error": "text",
        "created_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
        "delivered_at": "timestamp with time zone",
    },
    "webhook_attempts": {
        "delivery_id": "bigint",
        "attempt": "integer",
        "started_at": "timestamp with time zone",
        "duration_ms": "integer",
        "status_code": "integer",
        "error": "text",
        "response_excerpt": "text",
    },
    "webhook_endpoint_health": {
        "endpoint_id": "uuid",
        "team_id": "uuid",
        "failing_since": "timestamp with time zone",
        "consecutive_failures": "integer",
        "last_success_at": "timestamp with time zone",
        "last_failure_at": "timestamp with time zone",
    },
    "projection_generations": {
        "id": "integer",
        "projection": "text",
        "version": "integer",
        "state": "text",
        "position": "bigint",
        "applied_events": "bigint",
        "stalled_position": "bigint",
        "stalled_error": "text",
        "stalled_at": "timestamp with time zone",
        "created_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
        "activated_at": "timestamp with time zone",
        "retired_at": "timestamp with time zone",
    },
    "projection_log": {
        "id": "bigint",
        "projection": "text",
        "generation": "integer",
        "action": "text",
        "position": "bigint",
        "detail": "text",
        "at": "timestamp with time zone",
    },
    "audit_checkpoints": {
        "count": "bigint",
        "position": "bigint",
        "chain_hash": "bytea",
        "every": "bigint",
        "key_id": "text",
        "signature": "bytea",
        "created_at": "timestamp with time zone",
    },
    "notifications": {
        "id": "bigint",
        "team_id": "uuid",
        "user_id": "uuid",
        "kind": "text",
        "position": "bigint",
        "event_id": "text",
        "title": "text",
        "body": "text",
        "data": "jsonb",
        "created_at": "timestamp with time zone",
        "read_at": "timestamp with time zone",
    },
    "email_outbox": {
        "id": "bigint",
        "team_id": "uuid",
        "user_id": "uuid",
        "notification_id": "bigint",
        "digest_day": "date",
        "to_address": "text",
        "subject": "text",
        "body": "text",
        "status": "text",
        "attempts": "integer",
        "next_attempt_at": "timestamp with time zone",
        "last_error": "text",
        "created_at": "timestamp with time zone",
        "sent_at": "timestamp with time zone",
    },
    "email_attempts": {
        "email_id": "bigint",
        "attempt": "integer",
        "started_at": "timestamp with time zone",
        "duration_ms": "integer",
        "outcome": "text",
        "error": "text",
    },
    "notification_start": {"position": "bigint"},
    "schema_migrations": {
        "version": "integer",
        "name": "text",
        "checksum": "text",
        "applied_at": "timestamp with time zone",
    },
}
EXPECTED_INDEXES = {
    "audit_checkpoints_pkey",
    "chronik_events_pkey",
    "chronik_events_notification_id_idx",
    "chronik_snapshots_pkey",
    "projection_generations_one_active_idx",
    "webhook_deliveries_due_idx",
    "webhook_deliveries_endpoint_idx",
    "webhook_deliveries_team_idx",
}


def _conninfo(url: str) -> str:
    return PostgresTarget.from_url(url).conninfo()


def _columns(conninfo: str) -> dict[str, dict[str, str]]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ).fetchall()
    tables: dict[str, dict[str, str]] = {}
    for table, column, data_type in rows:
        tables.setdefault(table, {})[column] = data_type
    return tables


def test_migrating_an_empty_database_gives_the_expected_schema(empty_database_url: str) -> None:
    conninfo = _conninfo(empty_database_url)
    applied = migrate(conninfo)
    assert [m.version for m in applied] == [m.version for m in available_migrations()]
    assert _columns(conninfo) == EXPECTED_COLUMNS
    with psycopg.connect(conninfo) as conn:
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes").fetchall()}
        types = {r[0] for r in conn.execute("SELECT typname FROM pg_type").fetchall()}
    assert indexes >= EXPECTED_INDEXES
    assert "stored_event_uuid" in types
    with psycopg.connect(conninfo) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
    assert "reads" in schemas


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in available_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_a_second_run_applies_nothing(empty_database_url: str) -> None:
    conninfo = _conninfo(empty_database_url)
    migrate(conninfo)
    assert migrate(conninfo) == []


def test_concurrent_runs_apply_each_migration_once(empty_database_url: str) -> None:
    conninfo = _conninfo(empty_database_url)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: migrate(conninfo), range(4)))
    assert sum(len(r) for r in results) == len(available_migrations())
    with psycopg.connect(conninfo) as conn:
        (count,) = conn.execute("SELECT count(*) FROM schema_migrations").fetchone() or (0,)
    assert count == len(available_migrations())


def test_an_applied_migration_that_changed_is_refused(empty_database_url: str) -> None:
    conninfo = _conninfo(empty_database_url)
    migrate(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(conninfo)
