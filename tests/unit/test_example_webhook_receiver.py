"""examples/webhook_receiver.py's verify(), the docs' verification example,
accepts what Chronik signs and nothing else."""

from __future__ import annotations

import base64

from examples.webhook_receiver import TOLERANCE_SECONDS, verify
from infra.signing import webhook_headers

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
BODY = b'{"id": "evt_7", "type": "entry.created"}'
NOW = 1_800_000_000


def test_accepts_a_signed_delivery_and_either_signature_of_a_rotation() -> None:
    assert verify(SECRET, webhook_headers([SECRET], "evt_7", NOW, BODY), BODY, now=NOW)
    rotating = webhook_headers([OTHER, SECRET], "evt_7", NOW, BODY)
    assert verify(SECRET, rotating, BODY, now=NOW)
    assert verify(OTHER, rotating, BODY, now=NOW)


def test_refuses_other_bodies_ids_secrets_and_stale_timestamps() -> None:
    headers = webhook_headers([SECRET], "evt_7", NOW, BODY)
    assert not verify(SECRET, headers, BODY + b" ", now=NOW)
    assert not verify(SECRET, headers | {"webhook-id": "evt_8"}, BODY, now=NOW)
    assert not verify(OTHER, headers, BODY, now=NOW)
    assert not verify(SECRET, headers, BODY, now=NOW + TOLERANCE_SECONDS + 1)
    assert verify(SECRET, headers, BODY, now=NOW + TOLERANCE_SECONDS)
    assert not verify(SECRET, {k: v for k, v in headers.items() if k != "webhook-signature"}, BODY)
