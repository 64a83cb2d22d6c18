"""SQL for the records commands write beside their events (named queries)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Cursor
from psycopg.types.json import Jsonb

from commands.records import (
    ApiKeyIndexed,
    CommandRecord,
    IdempotencyRecorded,
    WebhookSecretRetiring,
    WebhookSecretStored,
)

__all__ = ["write_records"]

# The response's position is the command's last event's: the last value the
# position sequence gave this session, since the record follows the insert.
INSERT_IDEMPOTENCY = """
INSERT INTO idempotency_records
    (team_id, idempotency_key, request_fingerprint, status_code, response)
VALUES (%s, %s, %s, %s, %s || jsonb_build_object('position',
    currval(pg_get_serial_sequence('chronik_events', 'notification_id'))))
"""
INSERT_KEY_INDEX = "INSERT INTO api_key_index (key_id, team_id) VALUES (%s, %s)"
INSERT_WEBHOOK_SIGNER = """
INSERT INTO webhook_secrets (secret_id, endpoint_id, team_id, secret) VALUES (%s, %s, %s, %s)
"""
RETIRE_WEBHOOK_SIGNER = "UPDATE webhook_secrets SET valid_until = %s WHERE secret_id = %s"


def write_records(curs: Cursor[Any], records: Sequence[CommandRecord]) -> None:
    """Runs inside the events' transaction, right after their insert (so a
    unique violation here, a second use of an idempotency key, undoes the
    events too). Sends without reading back, so it can be pipelined."""
    for record in records:
        match record:
            case IdempotencyRecorded():
                curs.execute(
                    INSERT_IDEMPOTENCY,
                    (
                        record.team_id,
                        record.idempotency_key,
                        record.request_fingerprint,
                        record.status_code,
                        Jsonb(record.response),
                    ),
                )
            case ApiKeyIndexed():
                curs.execute(INSERT_KEY_INDEX, (record.key_id, record.team_id))
            case WebhookSecretStored():
                curs.execute(
                    INSERT_WEBHOOK_SIGNER,
                    (record.secret_id, record.endpoint_id, record.team_id, record.secret),
                )
            case WebhookSecretRetiring():
                curs.execute(RETIRE_WEBHOOK_SIGNER, (record.valid_until, record.secret_id))
