"""Tracing is off unless configured, and then costs nothing; the helpers that
carry a trace through stored events and message headers round-trip it.

No test here installs the global provider (the API allows one per process and
it would leak into every later test): providers are built and used locally."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, ProxyTracerProvider

from aggregates.base import Actor, DomainEvent, EventMetadata, Role
from commands.context import CommandContext
from commands.unit_of_work import _command_span
from infra import tracing
from infra.relay import ENVELOPE, messages_of
from infra.serialization import OrjsonTranscoder, PydanticMapper
from infra.settings import SettingsError, load_settings
from infra.tracing import CORRELATION_HEADER
from projections.runner import _event_spans, _traceparent_of, _tracing_on

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Noted(DomainEvent):
    text: str


def test_tracing_is_off_by_default_and_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHRONIK_TRACING", raising=False)
    settings = load_settings()
    assert settings.tracing == "off"
    assert tracing.setup_tracing(settings, role="api") is False
    assert not tracing.enabled()
    # Every tracer in the code base is the API's no-op: spans record nothing
    # and there is no context to store or send.
    assert isinstance(trace.get_tracer_provider(), ProxyTracerProvider)
    with tracing.tracer().start_as_current_span("work") as span:
        assert not span.is_recording()
        assert tracing.traceparent_of() is None
        headers: dict[str, str] = {}
        tracing.inject(headers)
        assert headers == {}


def test_untraced_events_are_stored_exactly_as_before_the_field_existed() -> None:
    mapper = PydanticMapper(transcoder=OrjsonTranscoder())
    now = datetime.now(UTC)
    event = Noted(
        originator_id=uuid4(),
        originator_version=2,
        timestamp=now,
        text="hello",
        metadata=EventMetadata(command="Note", correlation_id="c-1"),
    )
    stored = mapper.to_stored_event(event)
    # No key at all: bytes, hashes in the audit chain and feeds are unchanged.
    assert b"traceparent" not in stored.state
    assert _traceparent_of(stored.state) is None
    assert mapper.to_domain_event(stored) == event

    traced = event.model_copy(
        update={"metadata": EventMetadata(command="Note", traceparent=TRACEPARENT)}
    )
    stored = mapper.to_stored_event(traced)
    assert _traceparent_of(stored.state) == TRACEPARENT
    decoded = mapper.to_domain_event(stored)
    assert decoded == traced
    assert isinstance(decoded, Noted)
    assert decoded.metadata is not None
    assert decoded.metadata.traceparent == TRACEPARENT


def test_a_stored_traceparent_is_continued_and_bad_ones_are_ignored() -> None:
    context = tracing.context_of(TRACEPARENT)
    assert context is not None
    parent = trace.get_current_span(context).get_span_context()
    assert (f"{parent.trace_id:032x}", f"{parent.span_id:016x}") == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    )
    assert parent.trace_flags.sampled
    # Header names come in any case (NATS, HTTP/1, our own dicts).
    assert tracing.context_of({"Traceparent": TRACEPARENT}) is not None
    for bad in (None, "", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", {"x": "y"}):
        assert tracing.context_of(bad) is None


def test_a_provider_names_its_role_and_keeps_a_parents_sampling_decision() -> None:
    exporter = InMemorySpanExporter()
    settings = load_settings(tracing="otlp", tracing_sample_ratio=0.0)
    provider = tracing.build_provider(settings, role="worker", exporter=exporter)
    tracer = provider.get_tracer("test")
    # Ratio 0: a new trace is not recorded, but a sampled parent's trace is.
    with tracer.start_as_current_span("new trace") as dropped:
        assert not dropped.is_recording()
    with tracer.start_as_current_span("continued", context=tracing.context_of(TRACEPARENT)) as span:
        assert span.is_recording()
        assert tracing.traceparent_of() == (
            f"00-4bf92f3577b34da6a3ce929d0e0e4736-{span.get_span_context().span_id:016x}-01"
        )
        headers: dict[str, str] = {}
        tracing.inject(headers, span)
        assert headers == {"traceparent": tracing.traceparent_of(span)}
    provider.force_flush()
    (finished,) = exporter.get_finished_spans()
    assert finished.name == "continued"
    assert finished.resource.attributes["service.name"] == "chronik-worker"
    assert finished.parent is not None
    assert finished.parent.span_id == 0x00F067AA0BA902B7
    provider.shutdown()


def test_commands_open_no_span_while_tracing_is_off() -> None:
    actor = Actor(user_id=uuid4(), role=Role.OWNER, team_id=uuid4())
    # Not even the API's no-op span: a command pays one isinstance check.
    assert isinstance(_command_span("CreateEntry", CommandContext(actor)), nullcontext)


def test_projection_runners_read_no_trace_while_tracing_is_off() -> None:
    assert not _tracing_on()

    class Stored:
        id = 7
        state = b'{"metadata":{"traceparent":"' + TRACEPARENT.encode() + b'"}}'

    # With no provider the runner never calls this; called anyway, its spans
    # are the API's no-op ones.
    spans = _event_spans("entries", [Stored()])  # type: ignore[list-item]
    assert [type(s) for s in spans] == [NonRecordingSpan]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHRONIK_TRACING", "jaeger"),
        ("CHRONIK_OTLP_ENDPOINT", "collector:4318"),
        ("CHRONIK_TRACING_SAMPLE_RATIO", "1.5"),
    ],
)
def test_bad_tracing_settings_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def _feed_row(**extra: object) -> dict[str, object]:
    doc = {key: None for key in ENVELOPE} | {"id": "evt_7", "type": "entry.created"}
    team = uuid4()
    return {"position": 7, "team_id": team, "type": "entry.created", "visible_to": None,
            "doc": doc, **extra}  # fmt: skip


def test_relayed_messages_carry_the_correlation_id_and_stored_trace() -> None:
    settings = load_settings()
    (message,) = messages_of(
        settings, [_feed_row(correlation_id="corr-1", traceparent=TRACEPARENT)]
    )
    assert message.headers[CORRELATION_HEADER] == "corr-1"
    # Passed on as stored; a traced relay puts its publish span's context instead.
    assert message.headers["traceparent"] == TRACEPARENT
    # An untraced event, or a version-1 feed row with no metadata columns at all.
    for row in (_feed_row(correlation_id=None, traceparent=None), _feed_row()):
        (plain,) = messages_of(settings, [row])
        assert CORRELATION_HEADER not in plain.headers
        assert "traceparent" not in plain.headers
