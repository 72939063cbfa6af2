"""Recorder core: batches by size and age, offsets, redelivery detection, bounded memory."""

from __future__ import annotations

from libs.common.clock import SimClock
from libs.common.storage.schema import PG_EPOCH_OFFSET_US, pg_time
from proto.execution import Fill
from proto.market import Quote
from services.recorder.core import RecorderCore
from tests.kit import stubs
from tests.kit.samples import T0, sample_events


def _quote(i: int) -> Quote:
    return stubs.quote(ts=T0 + i, bid=100.0, ask=100.01, bid_size=1, ask_size=1)


def _fill(i: int) -> Fill:
    return stubs.fill(ts=T0 + i, exec_id=f"e{i}", quantity=1, price=100.0)


def _core(clock: SimClock, **kw: int) -> RecorderCore:
    args = {"batch_rows": 3, "flush_interval_ns": 1_000, "buffer_max_rows": 5, "max_durable_pending": 2}
    args.update(kw)
    return RecorderCore(clock, **args)


def test_pg_time_is_microseconds_since_2000() -> None:
    assert pg_time(946_684_800_000_000_000) == 0
    assert pg_time(T0) == T0 // 1000 - PG_EPOCH_OFFSET_US


def test_every_recordable_event_maps_to_rows() -> None:
    core = _core(SimClock(), batch_rows=1000)
    for event in sample_events():
        core.add(event)
    rows = core.pending.core_rows
    assert set(rows) == {
        "quotes",
        "trades",
        "bars",
        "feature_vectors",
        "order_intents",
        "orders",
        "order_denials",
        "order_events",
        "fills",
        "positions",
        "tca",
    }
    assert set(core.ignored) == {
        "DepthUpdate",
        "FeedStatus",
        "Prediction",
        "QosScore",
        "PolicySignal",  # derived from recorded inputs by a versioned policy
        "RiskState",
        "Control",
        "ControlAck",  # kept 30 days in the ACKS stream (the audit trail is the alerts issue's)
        "Heartbeat",  # liveness, watched live by the alerts service
        "Alert",
        "DeadLetter",
        "TcaAggregate",  # derived, and rebuilt from the tca table
        "TcaFeedback",  # kept 30 days in the TCA stream, its audit trail
        "MarginCheck",  # request/reply, not a record
        "MarginReply",
        "SyncProbe",  # lockstep replay's request/reply
        "SyncReply",
        "NewsItem",  # kept 30 days in the NEWS stream
        "SentimentScore",  # kept 30 days in the NEWS stream beside its headline
    }


def test_batches_close_on_size_or_age() -> None:
    clock = SimClock(0)
    core = _core(clock)
    core.add(_quote(1))
    assert not core.due()
    clock.advance(1_000)
    assert core.due()
    core.cut()
    for i in range(3):
        core.add(_quote(i))
    assert core.due()


def test_offsets_and_redelivery() -> None:
    core = _core(SimClock())
    core.add(_fill(1), delivery="d1", stream="EXEC", seq=7)
    core.add(_fill(2), delivery="d2", stream="EXEC", seq=9)
    core.cut()
    batch = core.backlog.popleft()
    assert batch.offsets == {"EXEC": 9} and batch.acks == ["d1", "d2"]
    assert not core.already_committed("EXEC", 9)
    core.committed(batch)
    assert core.already_committed("EXEC", 9) and not core.already_committed("EXEC", 10)
    assert core.committed_rows["fills"] == 2


def test_durable_backpressure_and_core_overflow() -> None:
    core = _core(SimClock())
    core.add(_fill(1), delivery="d1", stream="EXEC", seq=1)
    assert core.room_for_durable()
    core.add(_fill(2), delivery="d2", stream="EXEC", seq=2)
    assert not core.room_for_durable()
    for i in range(4):
        core.add(_quote(i))
    core.cut()
    for i in range(4):
        core.add(_quote(10 + i))
    core.cut()
    assert core.memory_core_rows() == 8
    spilled = core.overflow()
    # Oldest first, only core rows; the durable rows stay in memory (JetStream keeps them too).
    assert [len(s["quotes"]) for s in spilled] == [4]
    assert core.memory_core_rows() == 4
    assert core.backlog[0].durable_rows["fills"] and core.backlog[0].n_core == 0
