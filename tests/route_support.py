"""The API's routes as FastAPI holds them, for tests that walk every route."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from api.app import create_app
from infra.settings import Settings


def offline_app() -> FastAPI:
    """The app as built, never started: nothing connects to the database."""
    return create_app(Settings(database_url="postgresql://unused@127.0.0.1:1/unused"))


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[tuple[int, APIRoute]]:
    """Every APIRoute, with the index of the top-level entry that holds it
    (FastAPI keeps an included router behind a wrapper of its own)."""
    for index, route in enumerate(routes):
        for found in _within(route):
            yield index, found


def _within(route: BaseRoute) -> Iterator[APIRoute]:
    if isinstance(route, APIRoute):
        yield route
    included = getattr(route, "original_router", None)
    if included is not None:
        for inner in included.routes:
            yield from _within(inner)
