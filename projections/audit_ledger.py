"""The audit ledger: a hash chain over every stored event, in position order.

It reads the stored bytes, not decoded events, so it chains exactly what the
store holds, whatever the event's class (even one no code can load any more).
Every ``checkpoint_every`` events it also records a signed checkpoint in
``audit_checkpoints`` (none without a signing key: an unsigned checkpoint
proves nothing and anyone could write one): that table lives outside the generation schemas, so
rebuilding the ledger from a changed log cannot replace what was signed
before, and a checkpoint once written is never overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from uuid import UUID

from projections.audit_chain import GENESIS, Checkpoint, CheckpointSigner, event_hash, link
from projections.base import Cursor, Decode, Fact, LoggedEvent, Projection

__all__ = ["DEFAULT_CHECKPOINT_EVERY", "LedgerProjection", "chain"]

DEFAULT_CHECKPOINT_EVERY: Final = 1000

DDL: Final = """
CREATE TABLE audit_ledger (
    position bigint PRIMARY KEY,
    seq bigint NOT NULL UNIQUE,
    event_hash bytea NOT NULL,
    chain_hash bytea NOT NULL
);
"""
LAST_LINK: Final = "SELECT seq, chain_hash FROM audit_ledger ORDER BY position DESC LIMIT 1"
COPY_LINKS: Final = "COPY audit_ledger (position, seq, event_hash, chain_hash) FROM STDIN"
# A rebuilt generation reaches the same counts: the first checkpoint written stays.
INSERT_CHECKPOINT: Final = """
INSERT INTO public.audit_checkpoints (count, position, chain_hash, every, key_id, signature)
VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (count) DO NOTHING
"""

Link = tuple[int, int, bytes, bytes]  # position, seq, event hash, chain hash


def chain(
    notifications: Sequence[LoggedEvent], seq: int, previous: bytes
) -> tuple[list[Link], bytes]:
    """The links of ``notifications`` after the ``seq``-th event, whose link is
    ``previous``; and the last link."""
    links: list[Link] = []
    for n in notifications:
        aggregate_id = (
            n.originator_id if isinstance(n.originator_id, UUID) else UUID(n.originator_id)
        )
        hashed = event_hash(aggregate_id, n.originator_version, n.topic, n.state)
        previous = link(previous, n.id, hashed)
        seq += 1
        links.append((n.id, seq, hashed, previous))
    return links, previous


class LedgerProjection(Projection):
    name = "audit_ledger"
    version = 1
    tables = ("audit_ledger",)
    ddl = DDL
    replayable = False
    # Links and signed checkpoints are shown to auditors as they are written.
    durable_commits = True

    def __init__(
        self,
        signer: CheckpointSigner | None = None,
        *,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.signer = signer
        self.checkpoint_every = checkpoint_every

    @property
    def topics(self) -> frozenset[str]:
        # Every event is chained; apply_batch reads them all without decoding.
        return frozenset()

    def apply(self, cur: Cursor, facts: Sequence[Fact]) -> None:
        raise TypeError("the audit ledger chains stored bytes; it is fed by apply_batch")

    def apply_batch(self, cur: Cursor, batch: Sequence[LoggedEvent], decode: Decode) -> int:
        if not batch:
            return 0
        last = cur.execute(LAST_LINK).fetchone()
        seq, previous = (last["seq"], bytes(last["chain_hash"])) if last else (0, GENESIS)
        links, _ = chain(batch, seq, previous)
        with cur.copy(COPY_LINKS) as copy:
            for row in links:
                copy.write_row(row)
        if self.signer is not None:
            every = self.checkpoint_every
            for position, count, _hashed, chained in links:
                if count % every == 0:
                    self._checkpoint(cur, self.signer, Checkpoint(count, position, chained, every))
        return len(links)

    @staticmethod
    def _checkpoint(cur: Cursor, signer: CheckpointSigner, checkpoint: Checkpoint) -> None:
        signed = signer.sign(checkpoint)
        cur.execute(
            INSERT_CHECKPOINT,
            (
                signed.count,
                signed.position,
                signed.chain_hash,
                signed.every,
                signed.key_id,
                signed.signature,
            ),
        )
