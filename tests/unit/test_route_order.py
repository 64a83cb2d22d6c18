"""The routers' order is free to follow traffic (api.app.ROUTERS): no path can
be answered by routes of two routers, whatever the method, so whichever router
FastAPI tries first, the same route answers and a 405 names the same methods
(no server, no database)."""

from __future__ import annotations

from fastapi.routing import APIRoute

from api.app import DOCUMENTED_TAGS
from tests.route_support import api_routes, offline_app


def _segments(route: APIRoute) -> list[str]:
    return route.path.strip("/").split("/")


def _is_parameter(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def _overlap(one: APIRoute, other: APIRoute) -> bool:
    """Some path matches both: segment by segment, equal or a parameter on
    either side (a plain parameter matches any one segment)."""
    a, b = _segments(one), _segments(other)
    return len(a) == len(b) and all(
        x == y or _is_parameter(x) or _is_parameter(y) for x, y in zip(a, b, strict=True)
    )


def test_no_path_matches_routes_of_two_routers() -> None:
    routes = list(api_routes(offline_app().routes))
    assert len(routes) > 40
    # Converters ({n:int}, {p:path}) would match other than one segment each.
    assert [r.path for _, r in routes if ":" in r.path] == []
    both = [
        f"{route.path} and {other.path}"
        for owner, route in routes
        for other_owner, other in routes
        if other_owner > owner and _overlap(route, other)
    ]
    assert both == []


def test_overlapping_paths_are_found() -> None:
    """The check above can fail: parameters against literals, either way round."""
    a = APIRoute("/v1/teams/{team_id}/entries", lambda: None)
    b = APIRoute("/v1/teams/mine/{kind}", lambda: None)
    c = APIRoute("/v1/teams/{team_id}/entries/{entry_id}", lambda: None)
    assert _overlap(a, b)
    assert _overlap(b, a)
    assert not _overlap(a, c)


def test_the_reference_lists_every_tag_in_its_order() -> None:
    app = offline_app()
    used = {tag for _, route in api_routes(app.routes) for tag in route.tags}
    assert used == set(DOCUMENTED_TAGS)
    assert [tag["name"] for tag in app.openapi()["tags"]] == list(DOCUMENTED_TAGS)
