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

from tests.route_support import api_routes, offline_app


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def test_no_route_dependency_costs_a_thread_hand_over() -> None:
    routes = [route for _, route in api_routes(offline_app().routes)]
    assert len(routes) > 40, "the walk must reach the routers' routes"
    sync = {
        f"{call.__module__}.{call.__qualname__} (used by {route.path})"
        for route in routes
        for dependency in _dependencies(route.dependant)
        if (call := dependency.call) is not None and not inspect.iscoroutinefunction(call)
    }
    assert sync == set()
