"""Baseline (b) of B1: Chronik's own JournalEntry aggregate saved by a plain
``eventsourcing`` Application over HTTP: the library's default append, one
transaction (and one table lock) per command, no group commit, no auth, no
quota, no idempotency. What the library gives before Chronik's work.

    PLAIN_DATABASE_URL=... uvicorn --factory bench.baselines.eventsourcing_app:create_app
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Mapper, Transcoder
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from aggregates.base import Actor, Role
from aggregates.journal_entry import JournalEntry
from infra.db import PostgresTarget
from infra.serialization import OrjsonTranscoder, PydanticMapper

ACTOR = Actor(uuid.UUID(int=1), Role.OWNER, uuid.UUID(int=2))


class NewEntry(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(default="", max_length=100_000)
    tags: list[str] = Field(default_factory=list, max_length=20)


class PlainJournal(Application[UUID]):
    name = "PlainJournal"

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    def construct_mapper(self) -> Mapper[UUID]:
        # Our events are pydantic models: the library's default mapper cannot store them.
        return PydanticMapper(transcoder=self.construct_transcoder())


def _env(url: str) -> dict[str, str]:
    target = PostgresTarget.from_url(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_HOST": target.host,
        "POSTGRES_PORT": str(target.port),
        "POSTGRES_USER": target.user,
        "POSTGRES_PASSWORD": target.password,
        "POSTGRES_DBNAME": target.dbname,
        "POSTGRES_POOL_SIZE": "10",
        "CREATE_TABLE": "n",
    }


def prepare(url: str) -> None:
    """Creates the tables before the server's processes start (they would race)."""
    PlainJournal(_env(url) | {"CREATE_TABLE": "y"}).close()


def create_app() -> FastAPI:
    journal: dict[str, PlainJournal] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        journal["app"] = await run_in_threadpool(
            PlainJournal, _env(os.environ["PLAIN_DATABASE_URL"])
        )
        yield
        journal["app"].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/entries", status_code=201)
    def create_entry(entry: NewEntry) -> dict[str, object]:
        created = JournalEntry.create(
            ACTOR, id=uuid.uuid4(), title=entry.title, body=entry.body, tags=entry.tags
        )
        recordings = journal["app"].save(created)
        return {"data": {"id": str(created.id)}, "position": recordings[-1].notification.id}

    return app
