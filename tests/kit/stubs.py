"""Event stubs: every field a sensible default (IBM at 100.00/100.02 on the sample day at 10:00
New York), so a test names only what it is about: ``stubs.quote(bid=99.5)``,
``stubs.fill(side="SELL", quantity=50)``. Ids that must be unique are numbered per process."""

from __future__ import annotations

import itertools
from typing import Any

from libs.common import signing
from proto.control import Control
from proto.execution import Fill, OrderEvent, OrderStatus
from proto.features import FeatureVector
from proto.market import Quote, Trade
from proto.news import NewsItem
from proto.orders import OrderApproved, OrderIntent
from proto.signals import Prediction
from tests.kit.clocks import MS, T0

_ids = itertools.count(1)

#: The approval key every test shares: service processes get it from tests.helpers.service_env,
#: in-process cores and apps from tests.kit.cores / test settings, and ``approved`` signs with it.
TEST_APPROVAL_KEY = "test-approval-key"


def next_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def quote(
    symbol: str = "IBM",
    ts: int = T0,
    bid: float = 100.00,
    ask: float = 100.02,
    bid_size: int = 100,
    ask_size: int = 100,
    **kw: Any,
) -> Quote:
    kw.setdefault("ts_init", ts)
    return Quote(ts_event=ts, symbol=symbol, bid=bid, ask=ask, bid_size=bid_size, ask_size=ask_size, **kw)


def trade(symbol: str = "IBM", ts: int = T0, price: float = 100.01, size: int = 100, **kw: Any) -> Trade:
    kw.setdefault("ts_init", ts)
    return Trade(ts_event=ts, symbol=symbol, price=price, size=size, **kw)


def intent(
    symbol: str = "IBM",
    side: str = "BUY",
    quantity: float = 100,
    ts: int = T0,
    intent_id: str | None = None,
    **kw: Any,
) -> OrderIntent:
    kw.setdefault("ts_init", ts)
    return OrderIntent(
        ts_event=ts,
        intent_id=intent_id or next_id("i"),
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=quantity,
        **kw,
    )


def approved(
    client_order_id: str | None = None,
    symbol: str = "IBM",
    side: str = "BUY",
    quantity: float = 100,
    ts: int = T0,
    valid_ms: float | None = 2_000,
    signed: bool = True,
    **kw: Any,
) -> OrderApproved:
    """An approval valid for ``valid_ms`` from ``ts`` (None: none set, which execution refuses),
    signed as the risk gate signs it with the tests' key (``signed=False``: a forged one, without
    a signature)."""
    cid = client_order_id or next_id("c")
    kw.setdefault("intent_id", f"i-{cid}")
    kw.setdefault("ts_init", ts)
    approval = OrderApproved(
        ts_event=ts,
        client_order_id=cid,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=quantity,
        valid_until_ns=0 if valid_ms is None else ts + int(valid_ms * MS),
        **kw,
    )
    return sign(approval) if signed else approval


def sign(approval: OrderApproved, key: str = TEST_APPROVAL_KEY) -> OrderApproved:
    """``approval`` signed as the risk gate signs it (with the tests' key unless told)."""
    return signing.signed(approval, key.encode())


def fill(
    symbol: str = "IBM",
    side: str = "BUY",
    quantity: float = 100,
    price: float = 100.01,
    ts: int = T0,
    exec_id: str | None = None,
    client_order_id: str = "c",
    **kw: Any,
) -> Fill:
    kw.setdefault("ts_init", ts)
    return Fill(
        ts_event=ts,
        exec_id=exec_id or next_id("e"),
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=quantity,
        price=price,
        **kw,
    )


def order_event(
    client_order_id: str = "c",
    status: OrderStatus = "SUBMITTED",
    seq: int = 1,
    symbol: str = "IBM",
    ts: int = T0,
    **kw: Any,
) -> OrderEvent:
    kw.setdefault("ts_init", ts)
    return OrderEvent(
        ts_event=ts, client_order_id=client_order_id, symbol=symbol, status=status, seq=seq, **kw
    )


def vector(
    values: list[float] | None = None,
    symbol: str = "IBM",
    timeframe: str = "1m",
    feature_set: str = "fs-test",
    ts: int = T0,
    price: float = 100.01,
    **kw: Any,
) -> FeatureVector:
    kw.setdefault("ts_init", ts)
    return FeatureVector(
        ts_event=ts,
        symbol=symbol,
        timeframe=timeframe,
        feature_set=feature_set,
        values=[0.0] if values is None else values,
        price=price,
        **kw,
    )


def prediction(
    symbol: str = "IBM", horizon: str = "5m", probability: float = 0.6, ts: int = T0, **kw: Any
) -> Prediction:
    kw.setdefault("model_version", "m-test")
    kw.setdefault("expected_return", 0.0)
    kw.setdefault("signal", (probability - 0.5) * 2)
    kw.setdefault("ts_init", ts)
    return Prediction(ts_event=ts, symbol=symbol, horizon=horizon, probability=probability, **kw)


def news(
    headline: str = "IBM beats estimates",
    ts: int = T0,
    news_id: str | None = None,
    source: str = "test",
    **kw: Any,
) -> NewsItem:
    kw.setdefault("ts_init", ts)
    return NewsItem(ts_event=ts, news_id=news_id or next_id(source), source=source, headline=headline, **kw)


def control(command: str, ts: int = T0, issued_by: str = "test", **args: str) -> Control:
    return Control(
        ts_event=ts,
        ts_init=ts,
        command_id=next_id("k"),
        command=command,  # type: ignore[arg-type]
        issued_by=issued_by,
        args=args,
    )
