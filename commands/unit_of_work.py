"""Running one command: load, decide, save — atomically, idempotently, and
retried when it loses a race it can safely re-run."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from uuid import UUID

import orjson
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    get_tracer,
    get_tracer_provider,
)

from aggregates.base import Aggregate, NotFound
from commands.context import CommandContext
from commands.errors import AlreadyExists, IdempotencyMismatch, VersionConflict
from commands.locks import KeyedLocks
from commands.observers import command_finished
from commands.ports import Conflict, EventStorePort
from commands.records import CommandRecord, IdempotencyRecorded

__all__ = ["CommandResult", "Session", "fingerprint", "load_in_team", "run_command"]

A = TypeVar("A", bound=Aggregate)
MAX_ATTEMPTS = 60
_TURNS = KeyedLocks()
# The OpenTelemetry API only: a no-op until a process installs a provider
# (infra.tracing), so commands depend on no exporter.
_TRACER = get_tracer("chronik.commands")
_UNTRACED = (ProxyTracerProvider, NoOpTracerProvider)


@dataclass(frozen=True, slots=True)
class CommandResult:
    data: dict[str, Any]
    position: int
    version: int | None
    status_code: int = 200
    replayed: bool = False

    def body(self) -> dict[str, Any]:
        return {"data": self.data, "position": self.position}


@dataclass(frozen=True, slots=True)
class Decision:
    """What a handler decided: the response data and the aggregate whose
    version is the ETag."""

    data: dict[str, Any]
    subject: Aggregate | None
    status_code: int = 200
    # Fields shown once (API keys, webhook secrets): kept out of the stored
    # idempotency response, so a replay answers them as null. API keys are
    # otherwise stored only as scrypt hashes; a plain copy would undo that.
    shown_once: tuple[str, ...] = ()

    def replayable_data(self) -> dict[str, Any]:
        return {k: None if k in self.shown_once else v for k, v in self.data.items()}


@dataclass
class Session:
    """The aggregates one attempt of a command loaded, and records to write."""

    store: EventStorePort
    context: CommandContext
    loaded: list[Aggregate] = field(default_factory=list)
    records: list[CommandRecord] = field(default_factory=list)

    def read(self, aggregate_id: UUID, cls: type[A], *, what: str) -> A:
        """Load an aggregate to consult, not to change: it is not saved."""
        known = self.context.team
        if isinstance(known, cls) and known.id == aggregate_id:
            return known
        aggregate = load_in_team(self.store, aggregate_id, cls, self.context.actor.team_id)
        if aggregate is None:
            raise NotFound(f"{what} not found", id=str(aggregate_id))
        return aggregate

    def get(self, aggregate_id: UUID, cls: type[A], *, what: str, precondition: bool = False) -> A:
        """Load an aggregate to change; ``precondition``: check it against If-Match."""
        aggregate = self.read(aggregate_id, cls, what=what)
        expected = self.context.expected_version
        if precondition and expected is not None and aggregate.version != expected:
            raise VersionConflict(
                f"{what} is at version {aggregate.version}, not {expected}",
                current_version=aggregate.version,
            )
        self.loaded.append(aggregate)
        return aggregate

    def find(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        aggregate = self.store.get(aggregate_id, cls)
        if aggregate is not None:
            self.loaded.append(aggregate)
        return aggregate

    def add(self, aggregate: A, *, id_from_client: bool) -> A:
        """A new aggregate. A client-chosen id that is taken is refused; a
        random id of our own cannot be taken, so it costs no lookup."""
        if id_from_client and self.store.get(aggregate.id, Aggregate) is not None:
            raise AlreadyExists("that id is already taken", id=str(aggregate.id))
        self.loaded.append(aggregate)
        return aggregate

    def start(self, aggregate: A) -> A:
        """A new aggregate under an id anyone can compute (e.g. a month's quota):
        if a racer starts it first, the save conflicts and the command retries."""
        self.loaded.append(aggregate)
        return aggregate

    def record(self, record: CommandRecord) -> None:
        self.records.append(record)


def load_in_team(
    store: EventStorePort, aggregate_id: UUID, cls: type[A], team_id: UUID
) -> A | None:
    """The aggregate if it exists and belongs to ``team_id``: another team's ids
    are indistinguishable from ids that do not exist."""
    aggregate = store.get(aggregate_id, cls)
    if aggregate is None or getattr(aggregate, "team_id", aggregate.id) != team_id:
        return None
    return aggregate


def fingerprint(name: str, payload: Any) -> str:
    """Identifies a request's meaning, for Idempotency-Key comparisons."""
    canonical = orjson.dumps([name, payload], option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()


def run_command(
    store: EventStorePort,
    context: CommandContext,
    name: str,
    payload: Any,
    decide: Callable[[Session], Decision],
    *,
    serialize_on: UUID | None = None,
) -> CommandResult:
    """Decides and saves, again on fresh state after a lost race.

    ``serialize_on``: an aggregate every such command changes (a team's monthly
    quota, for each new entry). Commands of one process that share it take
    turns instead of racing: racers would all decide on the same version, and
    all but one would lose and decide again, over and over under load.
    """
    try:
        with _command_span(name, context):
            result = _run(store, context, name, payload, decide, serialize_on=serialize_on)
    except Exception as exc:
        command_finished(name, exc)
        raise
    command_finished(name, None)
    return result


def _command_span(name: str, context: CommandContext) -> AbstractContextManager[object]:
    """The command's span; nothing at all (not even a no-op span, ~5 us) until
    a process installs a tracer provider."""
    if isinstance(get_tracer_provider(), _UNTRACED):
        return nullcontext()
    attributes = {"chronik.team_id": str(context.actor.team_id)}
    correlation_id = context.correlation_id or context.request_id
    if correlation_id is not None:
        attributes["chronik.correlation_id"] = correlation_id
    return _TRACER.start_as_current_span(f"command {name}", attributes=attributes)


def _run(
    store: EventStorePort,
    context: CommandContext,
    name: str,
    payload: Any,
    decide: Callable[[Session], Decision],
    *,
    serialize_on: UUID | None,
) -> CommandResult:
    team_id = context.actor.team_id
    request_fingerprint = fingerprint(name, payload)
    if context.idempotency_key is not None:
        replay = _replay(store, team_id, context.idempotency_key, request_fingerprint)
        if replay is not None:
            return replay
    with _TURNS.held(serialize_on):
        return _decide_and_save(store, context, name, request_fingerprint, decide)


def _decide_and_save(
    store: EventStorePort,
    context: CommandContext,
    name: str,
    request_fingerprint: str,
    decide: Callable[[Session], Decision],
) -> CommandResult:
    team_id = context.actor.team_id
    for attempt in range(MAX_ATTEMPTS):
        session = Session(store, context)
        decision = decide(session)
        version = decision.subject.version if decision.subject is not None else None
        records = list(session.records)
        if context.idempotency_key is not None:
            records.append(
                IdempotencyRecorded(
                    team_id=team_id,
                    idempotency_key=context.idempotency_key,
                    request_fingerprint=request_fingerprint,
                    status_code=decision.status_code,
                    response={"data": decision.replayable_data(), "version": version},
                )
            )
        try:
            positions = store.save(session.loaded, metadata=context.metadata(name), records=records)
        except Conflict:
            if context.idempotency_key is not None:
                replay = _replay(store, team_id, context.idempotency_key, request_fingerprint)
                if replay is not None:
                    return replay
            if context.expected_version is not None:
                raise VersionConflict("the resource changed; reload it and retry") from None
            # Lost a race with nothing promised to the client: decide again on
            # fresh state, after a short random pause so racers spread out.
            context = replace(context, team=None)
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 - jitter, not crypto
            continue
        position = positions[-1] if positions else store.head_position()
        return CommandResult(decision.data, position, version, decision.status_code)
    raise VersionConflict("too many concurrent changes; retry")


def _replay(
    store: EventStorePort, team_id: UUID, key: str, request_fingerprint: str
) -> CommandResult | None:
    stored = store.find_idempotent_response(team_id, key)
    if stored is None:
        return None
    if stored.request_fingerprint != request_fingerprint:
        raise IdempotencyMismatch(
            "this Idempotency-Key was used with a different request", idempotency_key=key
        )
    return CommandResult(
        data=stored.response["data"],
        position=stored.response["position"],
        version=stored.response.get("version"),
        status_code=stored.status_code,
        replayed=True,
    )
