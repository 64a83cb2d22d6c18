"""The delivery worker: sends due webhook deliveries and records every attempt.

Several workers (in one or many processes) share the load: each claims due
deliveries with ``FOR UPDATE SKIP LOCKED`` (see ``infra.deliveries``), sends
them concurrently over the SSRF-guarded client, and records the outcome. The
same delivery always goes out with the same ``webhook-id`` and body, so a
receiver sees a repeat only as a redelivery of what it already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

import psycopg
import structlog
from opentelemetry.trace import SpanKind, StatusCode
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from yarl import URL

from infra import deliveries, tracing
from infra.deliveries import Attempt, Claim, Endpoint
from infra.delivery_policy import Outcome, Verdict, judge, parse_retry_after
from infra.delivery_successes import SuccessRecorder
from infra.due_listener import listen_for_due
from infra.outbound import RefusedAddress, SendFailed, WebhookClient
from infra.settings import Settings
from infra.signing import webhook_headers
from infra.waiting import first_of

__all__ = ["DeliveryWorker", "DisableEndpoint"]

log = structlog.get_logger(__name__)

EXCERPT_CHARS: Final = 1024
_DATABASE_ERRORS: Final = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
# Disables an endpoint through its aggregate (so webhook.disabled is recorded).
DisableEndpoint = Callable[[UUID, UUID, str], Awaitable[None]]


class DeliveryWorker:
    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        conninfo: str,
        disable_endpoint: DisableEndpoint,
        *,
        poll_interval: float = 1.0,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._conninfo = conninfo
        self._disable_endpoint = disable_endpoint
        self._poll_interval = poll_interval
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._successes = SuccessRecorder(pool, on_written=self._wake.set)

    async def run(self, stopping: asyncio.Event) -> None:
        client = WebhookClient(
            self._settings.webhook_allowed_networks,
            timeout=self._settings.webhook_timeout,
            max_connections=self._settings.webhook_concurrency,
        )
        listener = asyncio.create_task(
            listen_for_due(
                self._conninfo,
                deliveries.DUE_CHANNEL,
                wake=self._wake,
                stopping=stopping,
                application_name="chronik-deliveries",
            ),
            name="delivery-listener",
        )
        # Stopped only once the last send is recorded.
        sent_all = asyncio.Event()
        recorder = asyncio.create_task(self._successes.run(sent_all), name="delivery-successes")
        try:
            async with client:
                await self._claim_and_send(client, stopping)
                await self._finish_sends()
        finally:
            sent_all.set()
            await recorder
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _finish_sends(self) -> None:
        """Waits for what was started (its claims are ours), then cancels what
        is still running, before the client closes under it."""
        if not self._inflight:
            return
        _, late = await asyncio.wait(self._inflight, timeout=self._settings.webhook_timeout + 1)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _claim_and_send(self, client: WebhookClient, stopping: asyncio.Event) -> None:
        delay = 0.5
        while not stopping.is_set():
            self._wake.clear()
            free = self._free_slots()
            claimed: list[Claim] = []
            try:
                if free > 0:
                    claimed, endpoints, traces = await self._claim(free)
                    for claim in claimed:
                        endpoint = endpoints.get(claim.endpoint_id)
                        self._start(client, claim, endpoint, traces.get(claim.position))
                wait = await self._seconds_to_wait(claimed, free)
                delay = 0.5
            except (OSError, *_DATABASE_ERRORS) as exc:
                log.warning("delivery worker lost the database", error=str(exc))
                wait, delay = delay, min(delay * 2, 5.0)
            if wait > 0:
                await first_of(stopping, self._wake, within=wait)

    def _free_slots(self) -> int:
        """Sends in flight take a slot each; successes waiting to be recorded
        take none until there are more of them than slots (so a stalled
        recorder stops the claiming instead of piling up sent deliveries)."""
        concurrency = self._settings.webhook_concurrency
        backlog = max(0, self._successes.unrecorded - concurrency)
        return concurrency - len(self._inflight) - backlog

    async def _claim(self, limit: int) -> tuple[list[Claim], dict[UUID, Endpoint], dict[int, str]]:
        """Due deliveries, their endpoints and (tracing on) their events' traces."""
        async with self._pool.connection() as conn:
            claimed = await deliveries.claim_due(
                conn, limit=limit, lease=self._settings.webhook_claim_lease
            )
            if not claimed:
                return [], {}, {}
            ids = list({c.endpoint_id for c in claimed})
            endpoints = await deliveries.endpoints_of(conn, ids)
            traces: dict[int, str] = {}
            if tracing.enabled():
                traces = await deliveries.trace_contexts(conn, [c.position for c in claimed])
            return claimed, endpoints, traces

    async def _seconds_to_wait(self, claimed: list[Claim], free: int) -> float:
        if free <= 0 or len(claimed) == free:
            return self._poll_interval  # slots full: a finished send or a recorded batch wakes us
        if claimed:
            return 0.0  # there may be more due
        async with self._pool.connection() as conn:
            due_in = await deliveries.seconds_until_due(conn)
        if due_in is None:
            return self._poll_interval
        return max(0.0, min(due_in, self._poll_interval))

    def _start(
        self,
        client: WebhookClient,
        claim: Claim,
        endpoint: Endpoint | None,
        traceparent: str | None,
    ) -> None:
        task = asyncio.create_task(self._deliver(client, claim, endpoint, traceparent))
        self._inflight.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._inflight.discard(finished)
            self._wake.set()

        task.add_done_callback(done)

    async def _deliver(
        self,
        client: WebhookClient,
        claim: Claim,
        endpoint: Endpoint | None,
        traceparent: str | None = None,
    ) -> None:
        log_ = log.bind(delivery=claim.id, endpoint=str(claim.endpoint_id), attempt=claim.attempts)
        try:
            if endpoint is None or not endpoint.enabled:
                reason = "endpoint deleted" if endpoint is None else "endpoint disabled"
                async with self._pool.connection() as conn:
                    await deliveries.cancel(conn, claim, reason)
                return
            attempt, outcome = await self._send_traced(client, claim, endpoint, traceparent)
            verdict = await self._record(claim, attempt, outcome)
            if verdict is not None and verdict.disable_reason is not None:
                log_.warning("disabling webhook endpoint", reason=verdict.disable_reason)
                await self._disable_endpoint(
                    claim.team_id, claim.endpoint_id, verdict.disable_reason
                )
        except Exception:
            # The claim's lease runs out and the delivery comes due again.
            log_.exception("delivery could not be recorded; it will be retried")

    async def _send_traced(
        self, client: WebhookClient, claim: Claim, endpoint: Endpoint, traceparent: str | None
    ) -> tuple[Attempt, Outcome]:
        """``_send`` in a client span continuing the event's trace, if it has one.
        The span names the receiver's host only: a webhook URL's path or query
        often holds a token. No traceparent is sent to the receiver (a third
        party): our trace ids stay ours."""
        parent = tracing.context_of(traceparent)
        if parent is None:
            return await self._send(client, claim, endpoint)
        host, port = _server_of(endpoint.url)
        attributes: dict[str, str | int] = {
            "http.request.method": "POST",
            "server.address": host,
            "server.port": port,
            "chronik.webhook.endpoint_id": str(claim.endpoint_id),
            "chronik.webhook.delivery_id": claim.id,
            "chronik.webhook.attempt": claim.attempts,
            "chronik.position": claim.position,
        }
        with tracing.tracer().start_as_current_span(
            "webhook POST", context=parent, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            attempt, outcome = await self._send(client, claim, endpoint)
            if attempt.status_code is not None:
                span.set_attribute("http.response.status_code", attempt.status_code)
            if not outcome.succeeded:
                span.set_status(StatusCode.ERROR, attempt.error or f"HTTP {attempt.status_code}")
        return attempt, outcome

    async def _send(
        self, client: WebhookClient, claim: Claim, endpoint: Endpoint
    ) -> tuple[Attempt, Outcome]:
        body = claim.body.encode()
        headers = webhook_headers(endpoint.secrets, claim.event_id, int(time.time()), body)
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        excerpt: bytes = b""
        retry_after: float | None = None
        try:
            async with asyncio.timeout(self._settings.webhook_timeout):
                answer = await client.post(
                    endpoint.url, body, headers, read_at_most=self._settings.webhook_response_cap
                )
            status_code, excerpt = answer.status_code, answer.body
            retry_after = parse_retry_after(answer.retry_after)
        except RefusedAddress as exc:
            error = f"refused: {exc}"
        except TimeoutError:
            error = f"no answer within {self._settings.webhook_timeout:g} s"
        except SendFailed as exc:
            error = str(exc)
        duration_ms = round((time.perf_counter() - started) * 1000)
        text = excerpt[:EXCERPT_CHARS].decode("utf-8", errors="replace") if excerpt else None
        attempt = Attempt(started_at, duration_ms, status_code, error, text)
        return attempt, Outcome(status_code, error, retry_after)

    async def _record(self, claim: Claim, attempt: Attempt, outcome: Outcome) -> Verdict | None:
        if outcome.succeeded:  # decides nothing more: written in the background
            self._successes.put(claim, attempt)
            return None
        settings = self._settings

        def decide(failing_for: float | None) -> Verdict:
            return judge(
                outcome,
                attempt=claim.attempt_in_round,
                schedule=settings.webhook_retry_schedule,
                failing_for=failing_for,
                disable_after=settings.webhook_disable_after,
            )

        async with self._pool.connection() as conn:
            return await deliveries.record_attempt(conn, claim, attempt, decide)


def _server_of(url: str) -> tuple[str, int]:
    """The host and port a URL names; ("", 0) for one that does not parse
    (its send fails and is recorded; the span must not fail first)."""
    try:
        parsed = URL(url)
        return parsed.host or "", parsed.port or 0
    except ValueError:
        return "", 0
