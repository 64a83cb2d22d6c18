"""Real servers for the whole run, a fresh database and NATS namespace per test.

With CHRONIK_DATABASE_URL / CHRONIK_NATS_URL unset, the controlling pytest
process starts embedded PostgreSQL and NATS once (pytest_configure runs before
xdist starts its workers, which inherit the variables) and stops them at the
end. It migrates one template database; each test clones it, which is much
faster than migrating per test and keeps tests independent of each other.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from infra.db import PostgresTarget
from infra.devstack import DevStack
from infra.migrations import migrate
from infra.settings import Settings, load_settings

_TEMPLATE_ENV = "CHRONIK_TEST_TEMPLATE_DB"
_stack: DevStack | None = None


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _drop_database(target: PostgresTarget, name: str) -> None:
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def pytest_configure(config: pytest.Config) -> None:
    global _stack  # noqa: PLW0603 - one stack per run, owned by the controller
    if _is_xdist_worker(config):
        return
    settings = load_settings()
    if settings.database_url is None or settings.nats_url is None:
        # Not created here: the stack creates it with the modes it needs.
        data_dir = Path(tempfile.gettempdir()) / f"chronik-test-{uuid.uuid4().hex[:12]}"
        _stack = DevStack(settings.model_copy(update={"data_dir": data_dir}))
        settings = _stack.start()
        assert settings.database_url is not None
        assert settings.nats_url is not None
        os.environ["CHRONIK_DATABASE_URL"] = settings.database_url.get_secret_value()
        os.environ["CHRONIK_NATS_URL"] = settings.nats_url
    target = PostgresTarget.from_url(settings.database_url_value())
    template = f"chronik_tpl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
    migrate(target.conninfo(template))
    os.environ[_TEMPLATE_ENV] = template


def pytest_unconfigure(config: pytest.Config) -> None:
    if _is_xdist_worker(config):
        return
    template = os.environ.pop(_TEMPLATE_ENV, None)
    if template:
        _drop_database(PostgresTarget.from_url(os.environ["CHRONIK_DATABASE_URL"]), template)
    if _stack is not None:
        _stack.stop()
        shutil.rmtree(_stack.data_dir, ignore_errors=True)


@pytest.fixture
def base_settings() -> Settings:
    return load_settings()


@pytest.fixture
def database_url(base_settings: Settings) -> Iterator[str]:
    """A migrated database of this test's own, dropped afterwards."""
    target = PostgresTarget.from_url(base_settings.database_url_value())
    name = f"chronik_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(os.environ[_TEMPLATE_ENV])
            )
        )
    yield target.with_dbname(name).url()
    _drop_database(target, name)


@pytest.fixture
def empty_database_url(base_settings: Settings) -> Iterator[str]:
    """A database with no schema at all, for migration tests."""
    target = PostgresTarget.from_url(base_settings.database_url_value())
    name = f"chronik_e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield target.with_dbname(name).url()
    _drop_database(target, name)


@pytest.fixture
def nats_namespace() -> str:
    """Stream and subject names of this test's own."""
    return f"t{uuid.uuid4().hex[:16]}"


@pytest.fixture
def settings(base_settings: Settings, database_url: str, nats_namespace: str) -> Iterator[Settings]:
    yield base_settings.model_copy(
        update={"database_url": SecretStr(database_url), "nats_namespace": nats_namespace}
    )
    asyncio.run(_delete_streams(base_settings, nats_namespace))


async def _delete_streams(settings: Settings, namespace: str) -> None:
    """The test's streams go with it: a shared NATS server must not fill up
    with one stream per test run."""
    assert settings.nats_url is not None
    client = await nats.connect(settings.nats_url, connect_timeout=2, allow_reconnect=False)
    try:
        js = client.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(namespace.upper() + "_"):
                await js.delete_stream(info.config.name)
    finally:
        await client.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
