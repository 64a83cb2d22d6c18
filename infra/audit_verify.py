"""Verifying the audit ledger against the event store, and its published head.

Verification recomputes every link from the stored events themselves and
compares it with what the ledger recorded when the event was new, and with
the signed checkpoints. It reports the first position where they disagree:
an event changed, removed or inserted since it was chained, a ledger row
altered, or a checkpoint that does not match or is not signed by a known key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row, tuple_row

from projections.audit_chain import EVENT_TAG, GENESIS, Checkpoint, CheckpointSigner, link
from projections.audit_ledger import DEFAULT_CHECKPOINT_EVERY

__all__ = ["Head", "Verification", "head", "verify"]

Conn = psycopg.Connection[Any]
# position, the stored event's hash now, and the ledger's seq, event hash and link
Row = tuple[int, bytes | None, int | None, bytes | None, bytes | None]

SELECT_LEDGER_POSITION: Final = """
SELECT position FROM projection_generations
WHERE projection = 'audit_ledger' AND state = 'active'
"""
SELECT_HEAD: Final = """
SELECT position, seq, chain_hash FROM reads.audit_ledger ORDER BY position DESC LIMIT 1
"""
SELECT_LINK_BEFORE: Final = """
SELECT seq, chain_hash FROM reads.audit_ledger WHERE position < %(first)s
ORDER BY position DESC LIMIT 1
"""
# The log and the ledger side by side: a position missing from either side
# is exactly what an insert or a delete leaves behind. The server hashes each
# stored event's canonical bytes (projections.audit_chain.event_hash, byte for
# byte: tag, id, version, topic length, topic, state), so only 32 bytes an
# event travel, and the hashing runs on the database's core, not ours.
SELECT_SIDE_BY_SIDE: Final = """
SELECT coalesce(e.notification_id, l.position) AS position, e.hashed, l.seq, l.event_hash,
       l.chain_hash
FROM (SELECT notification_id,
             sha256(%(tag)s::bytea || uuid_send(originator_id)
                    || int8send(originator_version) || int8send(octet_length(topic)::bigint)
                    || convert_to(topic, 'UTF8') || state) AS hashed
      FROM chronik_events
      WHERE notification_id >= %(first)s AND notification_id <= %(last)s) e
FULL JOIN (SELECT position, seq, event_hash, chain_hash FROM reads.audit_ledger
           WHERE position >= %(first)s AND position <= %(last)s) l
  ON l.position = e.notification_id
ORDER BY 1
"""
# The newest checkpoint at or before the range's start, and every one after it.
SELECT_CHECKPOINTS: Final = """
SELECT count, position, chain_hash, every, key_id, signature FROM audit_checkpoints
WHERE count >= coalesce(
    (SELECT max(count) FROM audit_checkpoints WHERE count <= %(after)s), 0)
ORDER BY count
"""
SELECT_LATEST_CHECKPOINT: Final = """
SELECT count, position, chain_hash, every, key_id, signature, created_at FROM audit_checkpoints
ORDER BY count DESC LIMIT 1
"""
# Every read of one verification (or head) sees the same moment, while the
# worker goes on chaining: without it a batch committed between two reads
# would look like tampering.
SNAPSHOT: Final = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
COUNT_UNCHAINED: Final = "SELECT count(*) AS n FROM chronik_events WHERE notification_id > %s"
_FETCH: Final = 5000


class LedgerMissing(Exception):
    """No audit ledger has been built yet (no worker has run)."""


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    checked: int
    first_position: int
    last_position: int | None  # the last position checked
    last_hash: str | None  # the chain hash there, recomputed from the store
    first_bad_position: int | None
    problem: str | None
    checkpoints_checked: int
    signatures_checked: bool
    truncated: bool  # stopped at the event cap before ``to``
    head_position: int  # the newest chained position
    head_hash: str | None


@dataclass(frozen=True, slots=True)
class Head:
    position: int
    count: int
    chain_hash: str | None
    unchained_events: int  # in the log, not yet chained (the ledger's lag)
    checkpoint: dict[str, Any] | None


def _ledger_position(conn: Conn) -> int:
    row = conn.execute(SELECT_LEDGER_POSITION).fetchone()
    if row is None:
        raise LedgerMissing("the audit ledger has not been built: run `chronik worker`")
    return int(row[0])


def _checkpoint(row: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        row["count"],
        row["position"],
        bytes(row["chain_hash"]),
        row["every"],
        row["key_id"],
        bytes(row["signature"]),
    )


def checkpoint_document(checkpoint: Checkpoint, created_at: datetime | None) -> dict[str, Any]:
    return {
        "count": checkpoint.count,
        "position": checkpoint.position,
        "chain_hash": checkpoint.chain_hash.hex(),
        "every": checkpoint.every,
        "key_id": checkpoint.key_id,
        "signature": None if checkpoint.signature is None else checkpoint.signature.hex(),
        "created_at": created_at,
    }


@contextlib.contextmanager
def _one_moment(conn: Conn) -> Iterator[None]:
    with conn.transaction():
        conn.execute(SNAPSHOT)
        yield


def head(conn: Conn) -> Head:
    """The newest link, how far behind the log it is, and the newest checkpoint:
    what an auditor copies out of the system to compare later."""
    with _one_moment(conn), conn.cursor(row_factory=dict_row) as cur:
        chained_to = _ledger_position(conn)
        last = cur.execute(SELECT_HEAD).fetchone()
        latest = cur.execute(SELECT_LATEST_CHECKPOINT).fetchone()
        unchained = cur.execute(COUNT_UNCHAINED, (chained_to,)).fetchone()
    return Head(
        position=last["position"] if last else 0,
        count=last["seq"] if last else 0,
        chain_hash=bytes(last["chain_hash"]).hex() if last else None,
        unchained_events=unchained["n"] if unchained else 0,
        checkpoint=None if latest is None else checkpoint_document(
            _checkpoint(latest), latest["created_at"]
        ),
    )  # fmt: skip


@dataclass
class _Walk:
    """The chain recomputed so far, one stored event at a time."""

    seq: int
    previous: bytes
    checkpoints: dict[int, Checkpoint]
    signer: CheckpointSigner | None
    configured_every: int
    # With keys, the next checkpoint is due within this many events of the
    # newest one passed (its count), so a deleted checkpoint is a gap. The
    # interval is the larger of the one in force then and the configured one:
    # a changed setting is not a gap.
    last_checkpoint: int
    every: int
    checkpoints_checked: int = 0

    def step(self, row: Row) -> str | None:
        """The problem at this row's position, if any."""
        position, hashed, seq, recorded, chained = row
        if hashed is None:
            return "removed"
        if seq is None or recorded is None:
            return "inserted"
        if hashed != recorded:
            # Which side moved: a link that still follows from the recorded hash
            # means the event changed; otherwise the ledger row was edited.
            if link(self.previous, position, recorded) == chained:
                return "changed"
            return "chain_broken"
        self.previous, self.seq = link(self.previous, position, hashed), self.seq + 1
        if seq != self.seq or chained != self.previous:
            # The ledger's own row was altered, or an event was removed together
            # with its ledger row just before this position.
            return "chain_broken"
        return self._check_checkpoint(position)

    def _check_checkpoint(self, position: int) -> str | None:
        checkpoint = self.checkpoints.get(self.seq)
        if checkpoint is None:
            if self.signer is not None and self.seq >= self.last_checkpoint + self.every:
                return "checkpoint_missing"
            return None
        self.checkpoints_checked += 1
        if checkpoint.position != position or checkpoint.chain_hash != self.previous:
            return "checkpoint_mismatch"
        if self.signer is not None and not self.signer.verifies(checkpoint):
            return "bad_signature"
        self.last_checkpoint = checkpoint.count
        self.allow(checkpoint.every)
        return None

    def allow(self, every: int) -> None:
        self.every = max(every, self.configured_every)

    def lost_checkpoint(self) -> int | None:
        """The position of the first checkpoint past the chain's end, if any:
        events that were chained and signed are gone from both tables."""
        lost = [c.position for c in self.checkpoints.values() if c.count > self.seq]
        return min(lost) if lost else None


def _rows(conn: Conn, first: int, last: int) -> Generator[Row]:
    # A server-side cursor: memory stays at one fetch whatever the range.
    with conn.cursor(name="audit_verify", row_factory=tuple_row) as cur:
        cur.itersize = _FETCH
        cur.execute(SELECT_SIDE_BY_SIDE, {"first": first, "last": last, "tag": EVENT_TAG})
        yield from cur


def verify(
    conn: Conn,
    *,
    first: int = 0,
    last: int | None = None,
    signer: CheckpointSigner | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    max_events: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> Verification:
    """Check positions ``first``..``last`` (inclusive; default: everything
    chained). Links before ``first`` are taken from the ledger as recorded: a
    check from 0 trusts nothing but the signing keys. ``checkpoint_every`` is
    the interval the worker is configured with (with ``signer``, a stretch
    longer than the interval without a checkpoint is a deleted checkpoint)."""
    with _one_moment(conn):
        return _verify(
            conn, first=first, last=last, signer=signer, checkpoint_every=checkpoint_every,
            max_events=max_events, progress=progress,
        )  # fmt: skip


def _verify(
    conn: Conn,
    *,
    first: int,
    last: int | None,
    signer: CheckpointSigner | None,
    checkpoint_every: int,
    max_events: int | None,
    progress: Callable[[int], object] | None,
) -> Verification:
    chained_to = _ledger_position(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        head_row = cur.execute(SELECT_HEAD).fetchone()
        before = cur.execute(SELECT_LINK_BEFORE, {"first": first}).fetchone()
        seq, previous = (before["seq"], bytes(before["chain_hash"])) if before else (0, GENESIS)
        found = [_checkpoint(row) for row in cur.execute(SELECT_CHECKPOINTS, {"after": seq})]
    # The checkpoint the range starts after, or the log's start (whose interval
    # the first checkpoint states).
    start = next((c for c in found if c.count <= seq), None)
    walk = _Walk(
        seq, previous, {c.count: c for c in found if c.count > seq}, signer, checkpoint_every,
        last_checkpoint=start.count if start else 0, every=checkpoint_every,
    )  # fmt: skip
    walk.allow(found[0].every if found else checkpoint_every)
    upto = chained_to if last is None else min(last, chained_to)
    checked = 0
    last_position: int | None = None
    bad: tuple[int, str] | None = None
    truncated = False
    with contextlib.closing(_rows(conn, first, upto)) as rows:
        for row in rows:
            if max_events is not None and checked >= max_events:
                truncated = True
                break
            problem = walk.step(row)
            if problem is not None:
                bad = (row[0], problem)
                break
            checked += 1
            last_position = row[0]
            if progress is not None and checked % _FETCH == 0:
                progress(_FETCH)
    if progress is not None:
        progress(checked % _FETCH)
    head_position = head_row["position"] if head_row else 0
    if bad is None and not truncated and upto == chained_to:
        # Events chained (and maybe signed) that are gone from both tables: the
        # earliest position known to have held one.
        gone = [walk.lost_checkpoint()]
        if head_position != chained_to:
            gone.append(chained_to)
        if known := [position for position in gone if position is not None]:
            bad = (min(known), "removed")
    return Verification(
        ok=bad is None,
        checked=checked,
        first_position=first,
        last_position=last_position,
        last_hash=walk.previous.hex() if last_position is not None else None,
        first_bad_position=None if bad is None else bad[0],
        problem=None if bad is None else bad[1],
        checkpoints_checked=walk.checkpoints_checked,
        signatures_checked=signer is not None,
        truncated=truncated,
        head_position=head_position,
        head_hash=bytes(head_row["chain_hash"]).hex() if head_row else None,
    )
