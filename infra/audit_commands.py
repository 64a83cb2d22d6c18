"""What ``chronik audit verify`` and ``chronik audit head`` do."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Final

import orjson
from tqdm import tqdm

from infra.audit_verify import LedgerMissing, Verification, head, verify
from infra.db import PostgresTarget
from infra.operations import OperationError
from infra.projection_wiring import checkpoint_signer, connector
from infra.settings import Settings

__all__ = ["PROBLEMS", "head_document", "verify_log"]

# What each problem means, for people reading a report.
PROBLEMS: Final = {
    "changed": "the stored event changed after it was chained",
    "removed": "an event that was chained is no longer in the log",
    "inserted": "the log holds an event that was never chained",
    "chain_broken": "the ledger's link does not follow from the one before it "
    "(a ledger row was altered, or an event was removed with its ledger row)",
    "checkpoint_mismatch": "a signed checkpoint disagrees with the chain recomputed from the log",
    "checkpoint_missing": "a signed checkpoint is due here and there is none (deleted, or "
    "chained while no signing key was configured)",
    "bad_signature": "a checkpoint's signature does not verify with any configured key",
}
COUNT_RANGE: Final = (
    "SELECT count(*) FROM reads.audit_ledger WHERE position >= %s AND position <= %s"
)


def _connect(settings: Settings) -> Any:
    target = PostgresTarget.from_url(settings.database_url_value())
    return connector(target, name="chronik-audit")()


def verify_log(
    settings: Settings, first: int, last: int | None, *, show_progress: bool = True
) -> tuple[Verification, list[str]]:
    """The report, and the lines to print: every event in the range is
    recomputed from the store, however many there are."""
    if last is not None and last < first:
        raise OperationError(f"--to {last} is before --from {first}")
    with _connect(settings) as conn:
        total_row = conn.execute(COUNT_RANGE, (first, last if last is not None else 2**62))
        total = int(total_row.fetchone()[0])
        bar = tqdm(
            total=total, unit="ev", unit_scale=True, desc="verify", disable=not show_progress
        )
        started = time.monotonic()
        try:
            with bar:
                report = verify(
                    conn, first=first, last=last, signer=checkpoint_signer(settings),
                    checkpoint_every=settings.audit_checkpoint_every, progress=bar.update,
                )  # fmt: skip
        except LedgerMissing as exc:
            raise OperationError(str(exc)) from None
        elapsed = time.monotonic() - started
    rate = report.checked / elapsed if elapsed else 0.0
    signed = "signatures checked" if report.signatures_checked else "signatures NOT checked"
    lines = [
        f"checked {report.checked} events from position {first} to {report.last_position} "
        f"in {elapsed:.1f} s ({rate:,.0f} events/s); {report.checkpoints_checked} checkpoints, "
        f"{signed}",
        f"head: position {report.head_position} hash {report.head_hash}",
    ]
    if report.ok:
        lines.insert(0, "ok")
    else:
        problem = report.problem or ""
        lines.insert(
            0,
            f"FAILED at position {report.first_bad_position}: {PROBLEMS.get(problem, problem)}",
        )
    return report, lines


def head_document(settings: Settings) -> bytes:
    """The head as JSON: what an auditor copies out of the system."""
    with _connect(settings) as conn:
        try:
            found = head(conn)
        except LedgerMissing as exc:
            raise OperationError(str(exc)) from None
    return orjson.dumps(asdict(found), option=orjson.OPT_INDENT_2)
