"""PostgreSQL connection settings and the pool used for reads and projections."""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote, unquote, urlsplit

from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool
from psycopg_pool.base import AttemptWithBackoff

__all__ = ["PostgresTarget", "open_pool", "reconnect_steadily"]


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """The parts of a postgresql:// URL, as the eventsourcing library wants them."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    @classmethod
    def from_url(cls, url: str) -> PostgresTarget:
        parts = urlsplit(url)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            dbname=unquote(parts.path.lstrip("/")),
        )

    def conninfo(self, dbname: str | None = None) -> str:
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password or None,
            dbname=dbname or self.dbname,
            connect_timeout=5,
        )

    def url(self) -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(self.dbname, safe='')}"

    def with_dbname(self, dbname: str) -> PostgresTarget:
        return replace(self, dbname=dbname)

    def redacted(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"


def reconnect_steadily() -> None:
    """Every pool of this process retries a lost database about once a second.

    psycopg_pool doubles the delay between reconnection attempts (1, 2, 4, ...
    s, for up to 5 minutes), so after an outage of a minute commands kept
    failing for another 10-30 s after the database was back. A reconnect
    attempt costs the database next to nothing; a constant delay brings a
    process back within about a second (tests/e2e/test_database_outage.py).
    """
    AttemptWithBackoff.DELAY_BACKOFF = 1.0


def open_pool(target: PostgresTarget, *, size: int, name: str) -> ConnectionPool:
    reconnect_steadily()
    pool = ConnectionPool(
        target.conninfo(),
        min_size=1,
        max_size=size,
        name=name,
        open=False,
        timeout=5.0,
        kwargs={"autocommit": True},
    )
    pool.open(wait=False)
    return pool
