"""Events: frozen, tagged, timestamped, round-trip on the wire; the catalog covers them all."""

from __future__ import annotations

import typing

import msgspec
import pytest

from libs.common import codec
from proto.base import DurableEvent
from proto.events import EVENT_TYPES, AnyEvent
from proto.subjects import CATALOG, SERVICES, STREAMS, Transport, resolve, spec, subject_token
from tests.kit.samples import sample_events


def test_every_event_type_has_a_sample_and_round_trips() -> None:
    samples = sample_events()
    assert {type(e) for e in samples} == set(EVENT_TYPES)
    for event in samples:
        assert codec.decode(codec.encode(event)) == event


def test_events_are_frozen_and_carry_both_timestamps() -> None:
    for event in sample_events():
        assert isinstance(event.ts_event, int) and isinstance(event.ts_init, int)
        with pytest.raises(AttributeError):
            event.ts_event = 1  # type: ignore[misc]


def test_the_decoder_union_lists_every_event_type() -> None:
    assert set(typing.get_args(AnyEvent)) == set(EVENT_TYPES)


def test_tags_are_unique_class_names() -> None:
    tags = [t.__struct_config__.tag for t in EVENT_TYPES]
    assert tags == [t.__name__ for t in EVENT_TYPES]
    assert len(set(tags)) == len(tags)


def test_catalog_covers_every_event_and_durable_events_ride_jetstream() -> None:
    covered = {t for s in CATALOG for t in s.event_types}
    assert covered == set(EVENT_TYPES)
    stream_names = {st.name for st in STREAMS}
    for entry in CATALOG:
        durable = all(issubclass(t, DurableEvent) for t in entry.event_types)
        assert (entry.transport is Transport.JETSTREAM) == durable, entry.template
        if entry.transport is Transport.JETSTREAM:
            assert entry.stream in stream_names
        producers = {s.name for s in SERVICES} | {"*"}
        assert entry.producer in producers


def test_dedupe_keys_are_stable_for_the_same_event() -> None:
    for event in sample_events():
        if isinstance(event, DurableEvent):
            again = msgspec.structs.replace(event, ts_init=event.ts_init + 999)
            assert event.dedupe_key() == again.dedupe_key()


def test_subject_resolution_and_tokens() -> None:
    assert resolve("md.quote.IBM") is spec("md.quote.{symbol}")
    assert resolve("md.bar.1m.IBM") is spec("md.bar.{timeframe}.{symbol}")
    assert resolve("md.quote") is None
    assert spec("md.quote.{symbol}").subject(symbol="BRK.B") == "md.quote.BRK_B"
    assert subject_token("BF B") == "BF_B"
    assert spec("exec.fill.{symbol}").wildcard == "exec.fill.*"
