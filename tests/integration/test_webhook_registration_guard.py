"""The registration-time SSRF check: static rules plus the addresses a host name
resolves to here (this machine's host name resolves to loopback via /etc/hosts),
directly and through the HTTP API."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from aggregates.errors import InvalidValue
from api.app import create_app
from commands.url_policy import Network, is_public_address
from infra.event_store import EventStore
from infra.outbound import check_webhook_target
from infra.settings import Settings
from tests.projection_support import create_team

HOSTNAME = socket.gethostname()
LOOPBACK: list[Network] = [ipaddress.ip_network("127.0.0.0/8")]
REFUSED = [
    "https://127.0.0.1/hook",
    "https://10.0.0.1/hook",
    "https://169.254.169.254/latest",
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://127.1/hook",  # a name to the parser, 127.0.0.1 to the resolver
    f"https://{HOSTNAME}/hook",
    f"http://{HOSTNAME}:9/hook",
    "http://hooks.example.com/hook",
]


def _does_not_resolve(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return True
    return False


def test_the_host_name_resolves_to_loopback_here() -> None:
    addresses = {ipaddress.ip_address(i[4][0]) for i in socket.getaddrinfo(HOSTNAME, 443)}
    assert addresses
    assert not any(is_public_address(a) for a in addresses)
    assert all(any(a in n for n in LOOPBACK) for a in addresses), addresses


@pytest.mark.parametrize("url", REFUSED)
def test_private_targets_are_refused(url: str) -> None:
    with pytest.raises(InvalidValue) as refused:
        check_webhook_target(url, ())
    assert refused.value.details["field"] == "url"


def test_the_reason_names_the_resolved_address() -> None:
    with pytest.raises(
        InvalidValue, match=r"resolves to a private .*127\.\d+\.\d+\.\d+ is a loopback"
    ):
        check_webhook_target(f"https://{HOSTNAME}/hook", ())


def test_a_name_that_does_not_resolve_is_accepted() -> None:
    # .invalid never resolves (RFC 6761); DNS can change, so the connect-time
    # guard decides when a delivery is sent.
    assert _does_not_resolve("hooks.invalid")
    url = "https://hooks.invalid/x"
    assert check_webhook_target(url, ()) == url


def test_the_allow_list_admits_plain_http_to_loopback() -> None:
    for url in ("http://127.0.0.1:9/", f"http://{HOSTNAME}:9/", f"https://{HOSTNAME}/x"):
        assert check_webhook_target(url, LOOPBACK) == url
    with pytest.raises(InvalidValue):
        check_webhook_target("http://10.0.0.1:9/", LOOPBACK)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_api_answers_422_for_each_refused_url(client: TestClient, store: EventStore) -> None:
    team = create_team(store)
    headers = {"Authorization": f"Bearer {team.owner_key}"}
    hooks = f"/v1/teams/{team.team_id}/webhooks"
    for url in REFUSED:
        response = client.post(hooks, json={"url": url}, headers=headers)
        assert response.status_code == 422, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"]["field"] == "url"

    created = client.post(hooks, json={"url": "https://hooks.example.com/in"}, headers=headers)
    assert created.status_code == 201, created.text
    patched = client.patch(
        f"{hooks}/{created.json()['data']['id']}",
        json={"url": f"https://{HOSTNAME}/in"},
        headers=headers,
    )
    assert patched.status_code == 422, patched.text
    assert patched.json()["error"]["code"] == "VALIDATION_ERROR"
