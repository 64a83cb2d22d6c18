"""Rate limits over HTTP: per key by role, and failed authentications per
client address, with the envelope, Retry-After and the metrics."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.devstack.processes import wait_until
from infra.settings import Settings
from tests.e2e.conftest import OPERATOR_TOKEN, Api
from tests.e2e.test_reads import add_member

# A member may make 3 requests at once, then one each 5 s; owners keep the
# generous default, auditors have no limit.
MEMBER_RATE = 0.2
MEMBER_BURST = 3
# An address may fail 3 times, then once a second.
FAILURES = 3
WELL_FORMED_BUT_WRONG = "chk_0123456789abcdef_" + "x" * 43


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    return api_settings.model_copy(
        update={
            "rate_limit_member": MEMBER_RATE,
            "rate_limit_burst_seconds": MEMBER_BURST / MEMBER_RATE,
            "rate_limit_auditor": 0,
            "auth_failure_limit": FAILURES,
            "auth_failure_window": FAILURES * 1.0,
        }
    )


def _metric(api: Api, name: str, **labels: str) -> float:
    text = httpx.get(f"{api.base_url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"{name} {labels} is not in /metrics")


def _assert_rate_limited(response: httpx.Response, *, most: int) -> int:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"]["code"] == "RATE_LIMITED"
    assert body["request_id"] == response.headers["x-request-id"]
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= most
    assert body["error"]["details"] == {"retry_after": int(retry_after)}
    return int(retry_after)


def test_a_member_key_over_its_rate_gets_429_and_others_do_not(api: Api) -> None:
    team = api.create_team()
    _, member_key = add_member(api, team, "member")
    _, other_member_key = add_member(api, team, "member")
    _, auditor_key = add_member(api, team, "auditor")
    limited_before = _metric(api, "chronik_rate_limited_total", limit="key")

    member = api.client(member_key, session=False)
    answers = [member.get("/v1/me").status_code for _ in range(MEMBER_BURST)]
    assert answers == [200] * MEMBER_BURST
    _assert_rate_limited(member.get("/v1/me"), most=round(1 / MEMBER_RATE))
    # Writes pay from the same bucket.
    refused = member.post(f"/v1/teams/{team['id']}/entries", json={"title": "t"})
    _assert_rate_limited(refused, most=round(1 / MEMBER_RATE))
    assert _metric(api, "chronik_rate_limited_total", limit="key") == limited_before + 2

    # Per key: another member's key has a bucket of its own.
    assert api.client(other_member_key).get("/v1/me").status_code == 200
    # Per role: the owner has the default rate, the auditor (0) no limit.
    owner = api.client(team["owner_key"])
    auditor = api.client(auditor_key)
    for _ in range(3 * MEMBER_BURST):
        assert owner.get("/v1/me").status_code == 200
        assert auditor.get("/v1/me").status_code == 200


def test_failed_authentications_lock_the_address_for_a_while_only(api: Api) -> None:
    team = api.create_team()
    invalid_before = _metric(api, "chronik_auth_failures_total", reason="invalid_key")
    limited_before = _metric(api, "chronik_rate_limited_total", limit="address")
    guesser = api.client(WELL_FORMED_BUT_WRONG, session=False)

    for _ in range(FAILURES):
        refused = guesser.get("/v1/me")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "UNAUTHENTICATED"
    # The next guess is not even checked.
    _assert_rate_limited(guesser.get("/v1/me"), most=1)
    assert _metric(api, "chronik_auth_failures_total", reason="invalid_key") == invalid_before + 3
    assert _metric(api, "chronik_rate_limited_total", limit="address") == limited_before + 1

    # A good key from the same address waits too (an attacker's valid key must
    # not buy guesses)...
    good = api.client(team["owner_key"], session=False)
    _assert_rate_limited(good.get("/v1/me"), most=1)
    # ...but only until a failure's worth has refilled: waiting costs nothing.
    wait_until(
        lambda: good.get("/v1/me").status_code == 200, timeout=30, what="the address to recover"
    )
    # Recovered by one failure's worth only: the next guess is allowed, then refused.
    assert guesser.get("/v1/me").status_code == 401
    assert guesser.get("/v1/me").status_code == 429


def test_failure_reasons_are_counted_and_only_guesses_lock(api: Api) -> None:
    def failures(reason: str) -> float:
        return _metric(api, "chronik_auth_failures_total", reason=reason)

    before = {r: failures(r) for r in ("missing", "malformed", "operator_token")}
    anonymous = api.client(session=False)
    # No credentials guess nothing: never locked, however many.
    for _ in range(3 * FAILURES):
        assert anonymous.get("/v1/me").status_code == 401
    assert failures("missing") == before["missing"] + 3 * FAILURES

    # Three guesses back to back (the address earns one back each second, so
    # nothing slow, such as a scrape, goes between them and the lock's check).
    team_body = {"name": "x", "owner_email": "a@example.com"}
    malformed = api.client("not-a-key", session=False)
    wrong_operator = api.client("wrong-operator-token", session=False)
    operator = api.client(OPERATOR_TOKEN, session=False)
    assert malformed.get("/v1/me").status_code == 401
    assert wrong_operator.post("/v1/teams", json=team_body).status_code == 401
    assert wrong_operator.post("/v1/teams", json=team_body).status_code == 401
    # Third guess from this address: the operator route is locked too.
    _assert_rate_limited(operator.post("/v1/teams", json=team_body), most=1)
    assert failures("malformed") == before["malformed"] + 1
    assert failures("operator_token") == before["operator_token"] + 2
