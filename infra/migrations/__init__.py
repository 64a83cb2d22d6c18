"""Numbered SQL migrations, applied in order and recorded.

Rules: files are ``NNNN_name.sql``; a released file never changes (its checksum
is recorded and checked); migrations only add (backward compatible), so an
old process keeps working against a newer schema during a rolling deploy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import psycopg

__all__ = ["Migration", "MigrationError", "available_migrations", "migrate"]

# Any fixed number works; it only has to be the same in every process.
_ADVISORY_LOCK_KEY = 0x636872_6F6E_6D67


class MigrationError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files(__package__).iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number: {versions}")
    return found


_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
_SELECT_APPLIED = "SELECT version, checksum FROM schema_migrations"
_RECORD_APPLIED = "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"


def migrate(conninfo: str) -> list[Migration]:
    """Apply pending migrations; returns those applied by this call.

    A session advisory lock serialises concurrent callers: the second waits,
    then finds nothing left to do.
    """
    applied_now: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
        try:
            conn.execute(_CREATE_LEDGER)
            applied: dict[int, str] = dict(conn.execute(_SELECT_APPLIED).fetchall())
            for migration in available_migrations():
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version} ({migration.name}) was changed after "
                            "it was applied; add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        _RECORD_APPLIED, (migration.version, migration.name, migration.checksum)
                    )
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
    return applied_now
