"""Security headers on every answer, and CORS only for configured origins."""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import Settings
from tests.e2e.conftest import Api

ORIGIN = "https://app.example.com"
SECURED: dict[str, Any] = {"cors_origins": [ORIGIN], "hsts_max_age": 31_536_000}
DEFAULTS: dict[str, Any] = {}
ALWAYS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@pytest.fixture
def overrides() -> dict[str, Any]:
    return SECURED


@pytest.fixture
def api_settings(api_settings: Settings, overrides: dict[str, Any]) -> Settings:
    return api_settings.model_copy(update={**overrides, "max_body_bytes": 4096})


def test_every_answer_carries_the_security_headers(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    anonymous = api.client()
    answers = {
        "health": anonymous.get("/healthz"),
        "read": owner.get("/v1/me"),
        "write": owner.post(f"/v1/teams/{team['id']}/entries", json={"title": "t"}),
        "401": api.client("chk_0123456789abcdef_" + "x" * 43).get("/v1/me"),
        "404": owner.get("/v1/nowhere"),
        "413": owner.post(f"/v1/teams/{team['id']}/entries", content=b"x" * 8192),
    }
    assert [name for name, r in answers.items() if str(r.status_code) == name] == [
        "401", "404", "413",
    ]  # fmt: skip
    for name, response in answers.items():
        for header, value in ALWAYS.items():
            assert response.headers.get(header) == value, (name, header)
        assert response.headers.get("strict-transport-security") == "max-age=31536000", name
    # Answers to requests with credentials must not be cached; others may be.
    for name in ("read", "write", "401", "404", "413"):
        assert answers[name].headers["cache-control"] == "no-store", name
    assert "cache-control" not in answers["health"].headers


def test_a_preflight_is_allowed_for_a_configured_origin_only(api: Api) -> None:
    client = api.client()
    asked = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    allowed = client.options("/v1/me", headers={"Origin": ORIGIN, **asked})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    sent = {h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key"} <= sent
    assert allowed.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in allowed.headers

    refused = client.options("/v1/me", headers={"Origin": "https://evil.example.net", **asked})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


def test_a_cross_origin_client_may_read_the_headers_it_needs(api: Api) -> None:
    team = api.create_team()
    owner = api.client(team["owner_key"])
    created = owner.post(
        f"/v1/teams/{team['id']}/entries", json={"title": "t"}, headers={"Origin": ORIGIN}
    )
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == ORIGIN
    exposed = {
        h.strip().lower() for h in created.headers["access-control-expose-headers"].split(",")
    }
    assert {
        "etag",
        "chronik-position",
        "retry-after",
        "x-request-id",
        "idempotent-replayed",
    } <= exposed
    other = owner.get("/v1/me", headers={"Origin": "https://evil.example.net"})
    assert other.status_code == 200  # not a browser: CORS only withholds the headers
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("overrides", [DEFAULTS])
def test_without_configured_origins_there_is_no_cors_and_no_hsts(api: Api) -> None:
    client = api.client()
    preflight = client.options(
        "/v1/me", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 405
    assert not any(h.startswith("access-control-") for h in preflight.headers)
    plain = client.get("/healthz", headers={"Origin": ORIGIN})
    assert not any(h.startswith("access-control-") for h in plain.headers)
    assert "strict-transport-security" not in plain.headers
    assert plain.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "origins", ["app.example.com", "https://app.example.com/", "ftp://x.example.com"]
)
def test_an_origin_must_be_scheme_and_host(origins: str) -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        Settings(cors_origins=origins)
