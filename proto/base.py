"""Base event type and the constrained scalar types shared by every domain module."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

# Prices are strictly positive and finite: the `gt` constraint rejects NaN too (NaN > 0 is False).
Price = Annotated[float, msgspec.Meta(gt=0.0, lt=1e9)]
Size = Annotated[int, msgspec.Meta(ge=0)]
Quantity = Annotated[float, msgspec.Meta(gt=0.0, lt=1e9)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0.0)]
TimestampNs = Annotated[int, msgspec.Meta(ge=0)]
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
SignedUnit = Annotated[float, msgspec.Meta(ge=-1.0, le=1.0)]  # a signal in [-1, 1]
Side = Literal["BUY", "SELL"]


class Event(msgspec.Struct, frozen=True, tag=True, kw_only=True, array_like=True, gc=False):
    """Every message on the bus. ``array_like`` halves the wire size and encode cost (measured in
    shared/reference/machine-baselines.md); field order is part of the schema, so new fields are
    only ever appended with a default, and the schema version header says which layout is sent."""

    ts_event: TimestampNs
    ts_init: TimestampNs


class DurableEvent(Event, frozen=True, kw_only=True):
    """An event that must not be lost: it travels on JetStream with a ``Nats-Msg-Id`` header built
    from ``dedupe_key()``, so a republish after a crash is dropped by the stream."""

    def dedupe_key(self) -> str:
        raise NotImplementedError
