"""The hash chain over the global log, as pure functions.

Each stored event is hashed over its canonical bytes: the aggregate id, its
version, its topic and its stored state (the state carries the metadata: who,
which key, which command, which request). Each link hashes the previous link,
the event's position and the event's hash, so changing, removing, inserting or
moving any event changes every link from there on. A checkpoint is a link at a
known count of events, signed with HMAC-SHA256 under a named key so keys can
rotate and old checkpoints still verify.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final
from uuid import UUID

__all__ = [
    "EVENT_TAG",
    "GENESIS",
    "Checkpoint",
    "CheckpointSigner",
    "event_hash",
    "link",
]

# The link before the first event: no history.
GENESIS: Final = bytes(32)
# Version tags keep a future change of the canonical form from colliding with this one.
EVENT_TAG: Final = b"chronik.event.v1\x00"
_LINK_TAG: Final = b"chronik.link.v1\x00"
_CHECKPOINT_TAG: Final = b"chronik.checkpoint.v1\x00"
_INT: Final = struct.Struct(">Q")


def event_hash(originator_id: UUID, version: int, topic: str, state: bytes) -> bytes:
    """SHA-256 of the stored event's canonical bytes. Every field but the last
    has a fixed length or a length prefix, so two different events can never
    share their bytes."""
    topic_bytes = topic.encode()
    return hashlib.sha256(
        b"".join(
            (
                EVENT_TAG,
                originator_id.bytes,
                _INT.pack(version),
                _INT.pack(len(topic_bytes)),
                topic_bytes,
                state,
            )
        )
    ).digest()


def link(previous: bytes, position: int, hashed_event: bytes) -> bytes:
    """The chain hash of the event at ``position``, given the link before it."""
    return hashlib.sha256(_LINK_TAG + previous + _INT.pack(position) + hashed_event).digest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The chain after ``count`` events, the last of them at ``position``.
    ``every`` is the interval in force: the next checkpoint is due within that
    many events, so a deleted checkpoint leaves a gap verification sees."""

    count: int
    position: int
    chain_hash: bytes
    every: int
    key_id: str | None = None
    signature: bytes | None = None

    def message(self) -> bytes:
        return b"".join(
            (
                _CHECKPOINT_TAG,
                _INT.pack(self.count),
                _INT.pack(self.position),
                self.chain_hash,
                _INT.pack(self.every),
            )
        )


class CheckpointSigner:
    """Signs checkpoints with the first of ``keys`` and verifies with any of them
    (list the new key first when rotating; keep old ones while their
    checkpoints should still verify)."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._keys = dict(keys)
        self.key_id = next(iter(self._keys))

    def sign(self, checkpoint: Checkpoint) -> Checkpoint:
        signature = hmac.new(self._keys[self.key_id], checkpoint.message(), "sha256").digest()
        return replace(checkpoint, key_id=self.key_id, signature=signature)

    def verifies(self, checkpoint: Checkpoint) -> bool:
        key = self._keys.get(checkpoint.key_id or "")
        if key is None or checkpoint.signature is None:
            return False
        expected = hmac.new(key, checkpoint.message(), "sha256").digest()
        return hmac.compare_digest(expected, checkpoint.signature)
