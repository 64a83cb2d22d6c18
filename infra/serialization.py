"""orjson on the wire, pydantic for types: how events become stored bytes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, ProgrammingError, StoredEvent, Transcoder, Transcoding
from eventsourcing.utils import get_topic, resolve_topic
from pydantic import BaseModel

__all__ = ["OrjsonTranscoder", "PydanticMapper", "dumps"]


def _default(value: object) -> object:
    # Decimal as a string keeps every digit; pydantic parses it back exactly.
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: object) -> bytes:
    return orjson.dumps(value, default=_default)


class OrjsonTranscoder(Transcoder):
    def encode(self, obj: Any) -> bytes:
        return dumps(obj)

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)

    def register(self, transcoding: Transcoding) -> None:
        raise ProgrammingError("events are pydantic models; transcodings are not used")


class PydanticMapper(Mapper[Any]):
    """Maps pydantic events to stored events and back, with no type tags."""

    def to_stored_event(self, domain_event: DomainEventProtocol[Any]) -> StoredEvent:
        state = cast(BaseModel, domain_event).model_dump()
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(type(domain_event)),
            state=self.transcoder.encode(state),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[Any]:
        cls = resolve_topic(stored_event.topic)
        state = self.transcoder.decode(stored_event.state)
        return cast(DomainEventProtocol[Any], cls(**state))
