"""Recorder core: batches by size and age, offsets, redelivery detection, bounded memory."""

from __future__ import annotations

import json
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from libs.common.clock import SimClock
from libs.common.storage.schema import PG_EPOCH_OFFSET_US, TABLES_BY_NAME, pg_time
from proto.alerts import DeadLetter
from proto.control import Control
from proto.execution import Fill
from proto.market import Quote
from proto.news import NewsItem, SentimentScore
from proto.orders import RiskState
from services.recorder.core import (
    AUDIT_CORE_SUBJECTS,
    AUDIT_DURABLE_SUBJECTS,
    DESCRIBE,
    SINGLE_ROW,
    RecorderCore,
    build_rows,
    core_patterns,
    durable_patterns,
    rows_of,
)
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
        "risk_states",
        "audit_events",
    }
    assert set(core.ignored) == {
        "DepthUpdate",
        "FeedStatus",
        "Prediction",
        "QosScore",
        "Heartbeat",  # liveness, watched live by the alerts service
        "TcaAggregate",  # derived, and rebuilt from the tca table
        "TcaFeedback",  # kept 30 days in the TCA stream, its audit trail
        "MarginCheck",  # request/reply, not a record
        "MarginReply",
        "SyncProbe",  # lockstep replay's request/reply
        "SyncReply",
        "BrokerStatus",  # audited by what it causes: the mode change (with its reason) and the alert
        "GapRequest",  # the recorder's own asks; what they fill is stored, their count in /status
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


def _json(value: Jsonb) -> Any:
    """What the writer sends for a jsonb column, parsed back."""
    assert value.dumps is not None
    return json.loads(value.dumps(value.obj))


def test_audited_events_say_who_did_what() -> None:
    audited = {type(e).__name__: build_rows(e)[0] for e in sample_events() if type(e) in DESCRIBE}
    # (kind, subject, who, what, ref): columns 1-5 of audit_events
    assert {name: row[1:6] for name, row in audited.items()} == {
        "Control": ("ctl", "ctl.kill", "test", "kill", "k-1"),
        "ControlAck": ("ack", "ack.risk", "risk", "accepted kill: mode LIVE -> EMERGENCY", "k-1"),
        "Alert": ("alert", "alert.warning", "md-gateway", "warning: feed stale", "a-1"),
        "DeadLetter": ("dlq", "dlq.recorder", "recorder", "refused md.quote.IBM: malformed: x", "d"),
        "NewsItem": ("news", "news.raw", "ib:BRFG", "IBM beats [IBM]", "ib:BRFG:1"),
        "SentimentScore": (
            "sentiment",
            "news.sentiment.IBM",
            "sentiment:20261129T000000-abc",
            "IBM positive +0.80: ",
            "ib:BRFG:1",
        ),
        "PolicySignal": (
            "policy",
            "sig.policy.IBM",
            "policy:p1",
            "IBM enter at scale 0.60 (QOS proposed +1)",
            f"IBM:{T0}",
        ),
        "ConfigChange": (
            "param",
            "ctl.config.risk",
            "token:alice",
            "risk: max_position_shares 2000 -> 500",
            "c-1",
        ),
        "ExternalSignal": (
            "signal",
            "sig.ext.IBM",
            "token:bob",
            "IBM -0.40 15m from desk-model (confidence 1.00)",
            f"desk-model:IBM:{T0}",
        ),
    }
    row = audited["DeadLetter"]
    assert len(row) == len(TABLES_BY_NAME["audit_events"].columns)
    assert row[0] == pg_time(T0) and row[-1] == pg_time(T0 + 1000)
    # The whole event as an object with its type; a dead letter's payload kept (base64).
    assert _json(row[6]) | {"ts_event": 0} == {
        "type": "DeadLetter",
        "ts_event": 0,
        "ts_init": T0 + 1000,
        "service": "recorder",
        "subject": "md.quote.IBM",
        "reason": "malformed",
        "error": "x",
        "payload": "wQ==",
        "digest": "d",
    }


def test_one_builder_serves_every_audited_type_so_rows_are_built_in_one_map() -> None:
    assert {SINGLE_ROW[kind] for kind in DESCRIBE} == {SINGLE_ROW[Control]}
    mixed = [e for e in sample_events() if type(e) in DESCRIBE]
    assert [row[1] for row in rows_of(mixed)] == [DESCRIBE[type(e)](e)[0] for e in mixed]


def test_risk_states_keep_the_mode_and_the_whole_state() -> None:
    state = next(e for e in sample_events() if isinstance(e, RiskState))
    (row,) = build_rows(state)
    assert len(row) == len(TABLES_BY_NAME["risk_states"].columns)
    assert row[1:6] == ("", "r-1", 3, "DEGRADED", "feed stale")
    assert _json(row[13])["positions"] == {"IBM": 100.0}


def test_audit_rows_survive_nul_nan_and_drop_embeddings() -> None:
    """A NUL (which PostgreSQL text and jsonb refuse) or a NaN in one event must not fail its
    batch forever; an embedding is not audit material."""
    t = {"ts_event": T0, "ts_init": T0}
    news = NewsItem(**t, news_id="n\x00", source="webhook", headline="bad\x00byte")
    (row,) = build_rows(news)
    assert row[4] == "bad\ufffdbyte" and row[5] == "n\ufffd"
    assert _json(row[6])["headline"] == "bad\ufffdbyte"
    score = SentimentScore(
        **t,
        news_id="n",
        symbol="IBM",
        polarity=float("nan"),
        label="neutral",
        probabilities=[0.3, 0.4, 0.3],
        embedding=[0.1] * 8,
    )
    stored = _json(build_rows(score)[0][6])
    assert stored["polarity"] is None and "embedding" not in stored
    letter = DeadLetter(**t, service="x", subject="y", reason="r", error="e\x00", payload=b"\x00", digest="d")
    assert _json(build_rows(letter)[0][6])["error"] == "e\ufffd"


def test_the_audit_trail_is_subscribed_whatever_the_configuration() -> None:
    defaults = ["order.>", "exec.>", "tca.>"]
    assert durable_patterns(defaults) == defaults + list(AUDIT_DURABLE_SUBJECTS)
    assert core_patterns(["md.quote.>"]) == ["md.quote.>", *AUDIT_CORE_SUBJECTS]
    # A configured pattern covering an audit one stands for it (one consumer per stream)...
    assert "risk.state" not in durable_patterns(["risk.>"])
    assert core_patterns(["sig.>"]) == ["sig.>"]  # ...and a core one is not subscribed twice
    with pytest.raises(ValueError, match="NEWS"):
        durable_patterns(["news.raw"])  # would leave sentiment scores unrecorded
