"""Standard Webhooks signatures, checked with the reference library receivers use."""

from __future__ import annotations

import base64
import secrets
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from commands.webhooks import _new_secret
from infra.signing import USER_AGENT, sign, webhook_headers

NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"x" * 32).decode()
BODY = b'{"id":"evt_42","type":"entry.created","data":{"title":"Day one"}}'


def test_headers_follow_the_standard() -> None:
    now = int(time.time())
    headers = webhook_headers([NEW], "evt_42", now, BODY)
    assert headers == {
        "webhook-id": "evt_42",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(NEW, "evt_42", now, BODY),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(NEW).verify(BODY, headers) == {
        "id": "evt_42",
        "type": "entry.created",
        "data": {"title": "Day one"},
    }


def test_sign_matches_the_reference_implementation() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ours = sign(NEW, "msg_1", int(at.timestamp()), BODY)
    assert ours == Webhook(NEW).sign("msg_1", at, BODY.decode())


def test_during_a_rotation_either_secret_verifies() -> None:
    now = int(time.time())
    headers = webhook_headers([NEW, OLD], "evt_7", now, BODY)
    signatures = headers["webhook-signature"].split(" ")
    assert signatures == [sign(NEW, "evt_7", now, BODY), sign(OLD, "evt_7", now, BODY)]
    Webhook(NEW).verify(BODY, headers)
    Webhook(OLD).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER).verify(BODY, headers)


def test_a_tampered_delivery_fails() -> None:
    now = int(time.time())
    headers = webhook_headers([NEW], "evt_1", now, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY.replace(b"Day one", b"Day two"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY, {**headers, "webhook-id": "evt_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY, {**headers, "webhook-timestamp": str(now + 1)})


def test_a_stale_timestamp_is_rejected_by_receivers() -> None:
    stale = int(time.time()) - 10 * 60
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(NEW).verify(BODY, webhook_headers([NEW], "evt_1", stale, BODY))


def test_no_secret_no_headers() -> None:
    with pytest.raises(ValueError, match="signing secret"):
        webhook_headers([], "evt_1", int(time.time()), BODY)


def test_fresh_secrets_are_standard_base64_that_receivers_decode() -> None:
    for _ in range(50):  # url-safe base64 differs only when '+' or '/' occurs
        secret_id, secret, fingerprint = _new_secret()
        assert secret.startswith("whsec_")
        assert secret_id.startswith("sec_")
        assert len(fingerprint) == 16
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
        now = int(time.time())
        Webhook(secret).verify(BODY, webhook_headers([secret], "evt_1", now, BODY))


@given(
    body=st.text(max_size=2000).map(str.encode),
    msg_id=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
    keys=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=3),
)
def test_every_signing_secret_verifies_any_body(
    body: bytes, msg_id: str, keys: list[bytes]
) -> None:
    signers = ["whsec_" + base64.b64encode(k).decode() for k in keys]
    now = int(time.time())
    headers = webhook_headers(signers, msg_id, now, body)
    for signer in signers:
        assert Webhook(signer).verify(body, headers, json_parse=False) is None
    with pytest.raises(WebhookVerificationError):
        Webhook(signers[0]).verify(body + b"!", headers, json_parse=False)
    stranger = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers, json_parse=False)
