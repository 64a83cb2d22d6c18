"""The hash chain's pure parts: what each hash covers, and checkpoint signatures."""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

import pytest

from projections.audit_chain import GENESIS, Checkpoint, CheckpointSigner, event_hash, link

ID = UUID("0b6c2f6e-8d1e-4c55-9d39-3c1b2a7f0e11")
BASE = event_hash(ID, 1, "aggregates.team:Team.Created", b'{"name":"Acme"}')


@pytest.mark.parametrize(
    "changed",
    [
        event_hash(UUID(int=ID.int + 1), 1, "aggregates.team:Team.Created", b'{"name":"Acme"}'),
        event_hash(ID, 2, "aggregates.team:Team.Created", b'{"name":"Acme"}'),
        event_hash(ID, 1, "aggregates.team:Team.Renamed", b'{"name":"Acme"}'),
        event_hash(ID, 1, "aggregates.team:Team.Created", b'{"name":"Acmf"}'),
    ],
    ids=["id", "version", "topic", "state"],
)
def test_every_field_of_a_stored_event_changes_its_hash(changed: bytes) -> None:
    assert changed != BASE
    assert len(changed) == 32


def test_the_topic_and_the_state_cannot_trade_bytes() -> None:
    # Without a length prefix these two would hash the same bytes.
    assert event_hash(ID, 1, "a.b", b"cd") != event_hash(ID, 1, "a.bc", b"d")


def test_a_link_covers_the_previous_link_the_position_and_the_event() -> None:
    first = link(GENESIS, 1, BASE)
    assert first != link(GENESIS, 2, BASE)
    assert first != link(bytes(31) + b"\x01", 1, BASE)
    assert first != link(GENESIS, 1, bytes(32))
    assert link(GENESIS, 1, BASE) == first


def test_a_signed_checkpoint_verifies_and_any_change_does_not() -> None:
    signer = CheckpointSigner({"k1": b"k" * 32})
    signed = signer.sign(Checkpoint(1000, 1042, link(GENESIS, 1042, BASE), 1000))
    assert signed.key_id == "k1"
    assert signer.verifies(signed)
    for forged in (
        replace(signed, count=1001),
        replace(signed, position=1043),
        replace(signed, chain_hash=GENESIS),
        replace(signed, every=5000),
        replace(signed, signature=None),
        replace(signed, key_id="k2"),
    ):
        assert not signer.verifies(forged)


def test_the_first_key_signs_and_every_listed_key_verifies() -> None:
    old = CheckpointSigner({"k1": b"o" * 32})
    rotated = CheckpointSigner({"k2": b"n" * 32, "k1": b"o" * 32})
    by_old = old.sign(Checkpoint(5, 9, GENESIS, 5))
    by_new = rotated.sign(Checkpoint(10, 19, GENESIS, 5))
    assert by_new.key_id == "k2"
    assert rotated.verifies(by_old)
    assert rotated.verifies(by_new)
    assert not old.verifies(by_new)  # an unknown key id never verifies


def test_a_signer_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        CheckpointSigner({})
