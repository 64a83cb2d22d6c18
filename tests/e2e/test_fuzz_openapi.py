"""Schemathesis against the running API's own OpenAPI document, with a valid
owner key of a fresh team: no 5xx, every status and body as documented, and
every error the envelope.

Each operation gets valid (positive) and invalid (negative) cases. The quick
tier runs a few examples of each, derandomized so a failure in CI reproduces;
``CHRONIK_FUZZ_EXAMPLES=200`` runs a deeper search (docs/operations.md).

The operations are looped over here rather than with ``schema.parametrize``:
its fixture-backed form does not run under pytest 9, and one server for all
operations is what keeps this tier cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from infra.devstack.processes import wait_until
from tests.e2e.conftest import OPERATOR_TOKEN, Api

Operation = APIOperation[Any, Any, Any, Any]
EXAMPLES: Final = int(os.environ.get("CHRONIK_FUZZ_EXAMPLES", "6"))
# Endless by design (an SSE stream): its refusals are in test_malformed_input.
STREAM: Final = "/v1/teams/{team_id}/sync/stream"
# Routes the operator token calls; every other one gets the team owner's key.
OPERATOR_ROUTES: Final = {("POST", "/v1/teams")}


def refused_by_the_server(response: Response) -> bool:
    """uvicorn's own answer to a request it cannot parse (e.g. a request line
    over 64 KiB): a plain-text 400 before the app sees the request, which no
    route can give the envelope (docs/api.md says so)."""
    return (
        response.status_code == 400
        and "x-request-id" not in response.headers
        and response.text == "Invalid HTTP request received."
    )


def error_envelope(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every response carries X-Request-Id; every error is the envelope that names it."""
    request_id = response.headers.get("x-request-id", [""])[0]
    assert request_id, "no X-Request-Id header"
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error", "request_id"}, body
    assert body["request_id"] == request_id, body
    error = body["error"]
    assert isinstance(error.get("code"), str), body
    assert error["code"].isupper(), body
    assert isinstance(error.get("message"), str), body
    assert error["message"], body
    assert set(error) <= {"code", "message", "details"}, body
    return True


def no_server_error(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """No 5xx but the documented 503, which a saturated shared database may
    cause (schemathesis' not_a_server_error would count it a bug)."""
    if response.status_code == 503:
        assert response.headers.get("retry-after"), "503 without Retry-After"
        assert response.json()["error"]["code"] in {"UNAVAILABLE", "STALE_READ"}
        return True
    return not_a_server_error(ctx, response, case)


CHECKS: Final = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    error_envelope,
]


@pytest.fixture
def fuzz_schema(api: Api) -> OpenApiSchema:
    config = schemathesis.Config.from_dict(
        {
            "base-url": api.base_url,
            # An invalid request may be refused for its size before its shape.
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 404, 409, 413, 422, 429]
                }
            },
        }
    )
    return schemathesis.openapi.from_url(f"{api.base_url}/openapi.json", config=config)


def _declared(parameters: Iterable[Any]) -> set[str]:
    return {p.name.lower() for p in parameters}


@dataclass(frozen=True)
class Fixed:
    path: dict[str, Any]
    query: dict[str, Any]
    headers: dict[str, Any]


def fixed_values(operation: Operation, team_id: str) -> Fixed:
    """Values every case of the operation gets, where it has the parameter: the
    fresh team (another team's id is a plain 404; the tenant-isolation tests
    cover that), and no waiting for positions that will never come (503
    STALE_READ by design) or for long-polls."""
    path = {"team_id": team_id} if "team_id" in _declared(operation.path_parameters) else {}
    query: dict[str, Any] = {
        k: 0 for k in ("min_position", "wait") if k in _declared(operation.query)
    }
    headers = (
        {"chronik-min-position": "0"}
        if "chronik-min-position" in _declared(operation.headers)
        else {}
    )
    return Fixed(path, query, headers)


def fuzz(operation: Operation, mode: GenerationMode, team_id: str, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    fixed = fixed_values(operation, team_id)
    strategy = operation.as_strategy(
        mode, path_parameters=fixed.path, query=fixed.query, headers=fixed.headers
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Case[Any]) -> None:
        response = case.call(headers=auth, timeout=30)
        if refused_by_the_server(response):
            return
        case.validate_response(
            response, checks=CHECKS, headers=auth, transport_kwargs={"timeout": 30}
        )

    run()


def test_every_operation_answers_as_documented(fuzz_schema: OpenApiSchema, api: Api) -> None:
    team = api.create_team(name="Fuzz")
    failures: dict[str, str] = {}
    fuzzed = 0
    for result in fuzz_schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        if operation.path == STREAM:
            continue
        operator = (operation.method.upper(), operation.path) in OPERATOR_ROUTES
        token = OPERATOR_TOKEN if operator else team["owner_key"]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, team["id"], token)
            except Unsatisfiable:
                # Nothing of it can be invalid (no parameters but fixed ones).
                assert mode is GenerationMode.NEGATIVE, operation.label
            # Schemathesis reports a BaseExceptionGroup; every operation is
            # reported, not only the first that fails.
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001
                failures[f"{mode.value} {operation.label}"] = f"{type(exc).__name__}: {exc}"
        fuzzed += 1
    assert fuzzed >= 50, f"only {fuzzed} operations in the OpenAPI document"
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    assert_no_projection_stalled(api)


def assert_no_projection_stalled(api: Api) -> None:
    """What was accepted must also be storable: an event a projection cannot
    apply (say, text PostgreSQL refuses) stalls it for every team."""
    seen: dict[str, Any] = {}

    def caught_up() -> bool:
        ready = httpx.get(f"{api.base_url}/readyz", timeout=10).json()
        seen.update(ready["projections"])
        return all(p["lag"] == 0 or p["stalled"] for p in seen.values())

    wait_until(caught_up, timeout=60, what="the projections to catch up")
    stalled = {name: p["stalled"] for name, p in seen.items() if p["stalled"]}
    assert not stalled, stalled
