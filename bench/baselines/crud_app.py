"""Baseline (a) of B1: a plain FastAPI + psycopg CRUD app that inserts one row
per request, served the same way as Chronik's API. The floor a plain database
write over HTTP costs on this machine.

    CRUD_DATABASE_URL=... uvicorn --factory bench.baselines.crud_app:create_app
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS crud_entries (
    id uuid PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL,
    tags jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
INSERT_ENTRY = "INSERT INTO crud_entries (id, title, body, tags) VALUES (%s, %s, %s, %s)"


class NewEntry(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(default="", max_length=100_000)
    tags: list[str] = Field(default_factory=list, max_length=20)


def prepare(url: str) -> None:
    """Creates the table before the server's processes start (they would race)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CREATE_TABLE)


def create_app() -> FastAPI:
    pool = ConnectionPool(os.environ["CRUD_DATABASE_URL"], min_size=10, max_size=10, open=False)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(pool.open, True)
        yield
        pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/entries", status_code=201)
    def create_entry(entry: NewEntry) -> dict[str, object]:
        entry_id = uuid.uuid4()
        with pool.connection() as conn:
            conn.execute(INSERT_ENTRY, (entry_id, entry.title, entry.body, Jsonb(entry.tags)))
        return {"data": {"id": str(entry_id)}}

    return app
