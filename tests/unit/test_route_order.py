"""The routers' order is free to follow traffic (api.app.ROUTERS): no request
can be answered by routes of two routers, so whichever FastAPI tries first,
the same route answers (no server, no database)."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute
from starlette.routing import Match

from api.app import DOCUMENTED_TAGS
from tests.route_support import api_routes, offline_app


def _request_for(route: APIRoute, method: str) -> dict[str, object]:
    """A request only ``route`` was written for: its literal segments as they
    are, each parameter a value no route spells out."""
    path = re.sub(r"\{[^}]+\}", "p4r4m", route.path)
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def test_no_request_matches_routes_of_two_routers() -> None:
    routes = list(api_routes(offline_app().routes))
    assert len(routes) > 40
    both = []
    for owner, route in routes:
        for method in route.methods or ():
            request = _request_for(route, method)
            for other_owner, other in routes:
                if other_owner != owner and other.matches(request)[0] is Match.FULL:
                    both.append(f"{method} {route.path} also matches {other.path}")
    assert both == []


def test_the_reference_lists_every_tag_in_its_order() -> None:
    app = offline_app()
    used = {tag for _, route in api_routes(app.routes) for tag in route.tags}
    assert used == set(DOCUMENTED_TAGS)
    assert [tag["name"] for tag in app.openapi()["tags"]] == list(DOCUMENTED_TAGS)
