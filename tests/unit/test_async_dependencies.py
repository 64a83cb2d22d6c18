"""Every dependency of every route runs on the event loop (no server, no database).

FastAPI runs a plain ``def`` dependency in its thread pool: a hand-over to a
worker thread and back for each request, which under load cost more CPU than
most of these dependencies' own work. Blocking work belongs in the endpoint
(or an explicit ``run_in_threadpool``), not in a dependency.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from api.app import create_app
from infra.settings import Settings


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _api_routes(routes: list[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # FastAPI keeps an included router behind a wrapper of its own.
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


def _sync_dependencies() -> set[str]:
    app = create_app(Settings(database_url="postgresql://unused@127.0.0.1:1/unused"))
    found = set()
    routes = list(_api_routes(app.routes))
    assert len(routes) > 40, "the walk must reach the routers' routes"
    for route in routes:
        for dependency in _dependencies(route.dependant):
            call = dependency.call
            if call is not None and not inspect.iscoroutinefunction(call):
                found.add(f"{call.__module__}.{call.__qualname__} (used by {route.path})")
    return found


def test_no_route_dependency_costs_a_thread_hand_over() -> None:
    assert _sync_dependencies() == set()
