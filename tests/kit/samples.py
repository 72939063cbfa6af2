"""One valid instance of every event type (values of the kind real traffic carries)."""

from __future__ import annotations

from proto.alerts import Alert, DeadLetter
from proto.base import Event
from proto.control import ConfigChange, Control, ControlAck, Heartbeat, Progress, SyncProbe, SyncReply
from proto.execution import BrokerStatus, Fill, OrderEvent, Position, PositionSnapshot
from proto.features import FeatureVector
from proto.market import Bar, DepthUpdate, FeedStatus, GapRequest, Quote, Trade, make_seq
from proto.news import NewsItem, SentimentScore
from proto.orders import MarginCheck, MarginReply, OrderApproved, OrderDenied, OrderIntent, RiskState
from proto.signals import ExternalSignal, PolicySignal, Prediction, QosScore
from proto.tca import TcaAggregate, TcaFeedback, TcaReport
from tests.kit.clocks import OPEN

T0 = OPEN  # the sample day's open


def sample_events() -> list[Event]:
    t = {"ts_event": T0, "ts_init": T0 + 1000}
    return [
        Quote(
            **t,
            symbol="IBM",
            bid=182.05,
            ask=182.07,
            bid_size=300,
            ask_size=200,
            venue="P",
            seq=make_seq(7, 119),
        ),
        Trade(**t, symbol="IBM", price=182.06, size=100, venue="D", conditions=1),
        DepthUpdate(**t, symbol="AAPL", side="BID", position=0, operation="INSERT", price=585.33, size=18),
        Bar(**t, symbol="IBM", timeframe="1m", open=182.0, high=182.2, low=181.9, close=182.1, volume=9000),
        FeedStatus(**t, source="lean", state="replay_started", seq=1, counters={"records": 0}),
        FeatureVector(**t, symbol="IBM", timeframe="1m", feature_set="fs-1", values=[0.1, -0.2]),
        Prediction(
            **t, symbol="IBM", horizon="5m", model_version="m1", probability=0.61, expected_return=0.0004
        ),
        QosScore(**t, symbol="IBM", score=0.41, peak=0.44, regime="trend", components={"1m": 0.2}),
        PolicySignal(
            **t, symbol="IBM", score_ts=T0, scale=0.6, timing="enter", policy_version="p1", proposal=1
        ),
        OrderIntent(
            **t, intent_id="i-1", symbol="IBM", side="BUY", quantity=100, order_type="LMT", limit_price=182.07
        ),
        OrderApproved(
            **t,
            intent_id="i-1",
            client_order_id="c-1",
            symbol="IBM",
            side="BUY",
            quantity=100,
            signature="5f0c1a2e9b7d4c3a8e6f1b2d0c9a8e7f6d5c4b3a29180f7e6d5c4b3a2918f0e1",
        ),
        OrderDenied(**t, intent_id="i-2", symbol="IBM", code="POSITION_LIMIT", context={"max": "500"}),
        RiskState(
            **t, instance="r-1", seq=3, mode="DEGRADED", mode_reason="feed stale", positions={"IBM": 100.0}
        ),
        OrderEvent(**t, client_order_id="c-1", symbol="IBM", status="SUBMITTED", seq=1, quantity=100),
        Fill(
            **t,
            exec_id="e-1",
            client_order_id="c-1",
            symbol="IBM",
            side="BUY",
            quantity=100,
            price=182.07,
            commission=0.35,
        ),
        PositionSnapshot(
            **t,
            account="DU1",
            seq=1,
            realized_pnl=0.0,
            unrealized_pnl=1.0,
            positions=[
                Position(
                    symbol="IBM",
                    quantity=100,
                    avg_price=182.07,
                    mark=182.08,
                    realized_pnl=0.0,
                    unrealized_pnl=1.0,
                )
            ],
        ),
        TcaReport(
            **t,
            client_order_id="c-1",
            symbol="IBM",
            side="BUY",
            quantity=100,
            arrival_price=182.06,
            avg_fill_price=182.07,
            slippage_bps=0.55,
        ),
        TcaAggregate(
            **t,
            symbol="IBM",
            order_type="MKT",
            time_of_day="open",
            count=12,
            mean_cost_bps=2.1,
            std_cost_bps=1.3,
            mean_fill_ratio=1.0,
            mean_passive_ratio=0.0,
        ),
        TcaFeedback(**t, feedback_id="fb-1", symbol="IBM", style="LMT", limit_offset_bps=0.5),
        MarginCheck(**t, request_id="i-1", symbol="IBM", side="BUY", quantity=100),
        MarginReply(**t, request_id="i-1", known=True, init_margin_after=5000.0, equity_with_loan_after=1e5),
        SyncProbe(**t, round=1),
        GapRequest(**t, symbol="IBM", session=7, first=120, last=131, requester="recorder"),
        SyncReply(**t, service="features", quiet=True, handled=10, sent=3),
        NewsItem(**t, news_id="ib:BRFG:1", source="ib:BRFG", headline="IBM beats", symbols=["IBM"]),
        SentimentScore(
            **t,
            news_id="ib:BRFG:1",
            symbol="IBM",
            polarity=0.8,
            label="positive",
            probabilities=[0.05, 0.1, 0.85],
            events=["earnings"],
            model_version="20261129T000000-abc",
            latency_us=900,
        ),
        Control(**t, command_id="k-1", command="kill", issued_by="test"),
        ConfigChange(
            **t,
            change_id="c-1",
            section="risk",
            values={"max_position_shares": 500, "deny_symbols": ["GME"]},
            changed={"max_position_shares": [2000, 500]},
            issued_by="token:alice",
        ),
        ExternalSignal(
            **t, symbol="IBM", source="desk-model", signal=-0.4, horizon="15m", issued_by="token:bob"
        ),
        Heartbeat(
            **t,
            service="md-gateway",
            instance=1,
            seq=3,
            progress=Progress(market_ns=T0, last_record_ns={"IBM": T0 - 1, "BAC": 0}),
        ),
        BrokerStatus(**t, broker="ib:1", state="disconnected", seq=1, detail="1100"),
        ControlAck(
            **t,
            command_id="k-1",
            command="kill",
            service="risk",
            accepted=True,
            summary="mode LIVE -> EMERGENCY",
        ),
        Alert(**t, alert_id="a-1", severity="warning", source="md-gateway", title="feed stale"),
        DeadLetter(
            **t,
            service="recorder",
            subject="md.quote.IBM",
            reason="malformed",
            error="x",
            payload=b"\xc1",
            digest="d",
        ),
    ]
