"""Captured IB historical responses (tests/fixtures/ib, real answers IB gave) through the wire and
back: the fake TWS's encoders write them as TWS does at server version 157, the real ibapi 9.81.1
decoder reads them, and the backfill turns them into our events. Every value survives; a tick that
cannot be traded on is counted by reason, never written."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import struct
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from ibapi.decoder import Decoder
from ibapi.wrapper import EWrapper

from tradefleet.backfill import bar_events, tick_events
from tradefleet.faketws import (
    SERVER_VERSION,
    historical_data_frame,
    historical_ticks_bid_ask_frame,
    historical_ticks_last_frame,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ib"
NY = ZoneInfo("America/New_York")


def captured(name: str) -> list[dict[str, Any]]:
    with gzip.open(FIXTURES / name, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


class Recorder(EWrapper):  # ibapi names its callbacks in camelCase
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def historicalData(self, *args: Any) -> None:
        self.calls.append(("historicalData", args))

    def historicalDataEnd(self, *args: Any) -> None:
        self.calls.append(("historicalDataEnd", args))

    def historicalTicksBidAsk(self, *args: Any) -> None:
        self.calls.append(("historicalTicksBidAsk", args))

    def historicalTicksLast(self, *args: Any) -> None:
        self.calls.append(("historicalTicksLast", args))


def decode(message: bytes) -> Recorder:
    """One framed message through ibapi's own decoder, as its reader thread would pass it."""
    (size,) = struct.unpack("!I", message[:4])
    assert size == len(message) - 4
    recorder = Recorder()
    Decoder(recorder, SERVER_VERSION).interpret(tuple(message[4:].split(b"\0")[:-1]))
    return recorder


def epoch(text: str, tz: dt.tzinfo = dt.UTC) -> int:
    moment = dt.datetime.fromisoformat(text)
    return int((moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp())


def integral(x: float) -> int:
    assert x == int(x), f"IB 9.81 sizes are integers on the wire: {x}"
    return int(x)


def test_captured_bars_decode_and_become_bars_stamped_at_their_close() -> None:
    rows = captured("bars.json.gz")
    assert len(rows) == 405
    # Our requests ask formatDate=2: the bar's start in epoch seconds (the capture is New York time).
    wire = [
        (
            epoch(r["date"], NY),
            r["open"],
            r["high"],
            r["low"],
            r["close"],
            integral(r["volume"]),
            r["average"],
            r["barCount"],
        )
        for r in rows
    ]
    got = decode(historical_data_frame(7, wire, str(wire[0][0]), str(wire[-1][0]))).calls
    assert [name for name, _ in got] == ["historicalData"] * 405 + ["historicalDataEnd"]
    decoded = [args[1] for _, args in got[:-1]]
    for row, bar in zip(rows, decoded, strict=True):
        assert (bar.open, bar.high, bar.low, bar.close, bar.average) == (
            row["open"],
            row["high"],
            row["low"],
            row["close"],
            row["average"],
        )
        assert (bar.volume, bar.barCount) == (row["volume"], row["barCount"])
    bars = bar_events("XYZ", "1m", decoded)
    assert [b.ts_event // 10**9 for b in bars] == [w[0] + 60 for w in wire]
    assert [(b.close, b.volume, b.trade_count, b.vwap) for b in bars] == [
        (r["close"], r["volume"], r["barCount"], r["average"]) for r in rows
    ]
    first = dt.datetime.fromtimestamp(bars[0].ts_event // 10**9, NY)
    assert first.isoformat() == "2021-01-05T09:29:00-05:00"  # the 09:28 bar closes at 09:29


def bid_ask_mask(attrib: dict[str, bool]) -> int:
    # In HISTORICAL_TICKS_BID_ASK bit 0 is askPastHigh and bit 1 bidPastLow.
    return int(attrib["askPastHigh"]) | int(attrib["bidPastLow"]) << 1


@pytest.mark.parametrize("page", [1003, 500, 1])  # one message, or several before the done flag
def test_captured_bid_ask_ticks_decode_and_become_quotes(page: int) -> None:
    rows = captured("bid_ask_ticks.json.gz")
    wire = [
        (
            epoch(r["time"]),
            bid_ask_mask(r["tickAttribBidAsk"]),
            r["priceBid"],
            r["priceAsk"],
            integral(r["sizeBid"]),
            integral(r["sizeAsk"]),
        )
        for r in rows
    ]
    decoded: list[Any] = []
    dones = []
    for i in range(0, len(wire), page):
        for name, (req_id, ticks, done) in decode(
            historical_ticks_bid_ask_frame(9, wire[i : i + page], i + page >= len(wire))
        ).calls:
            assert (name, req_id) == ("historicalTicksBidAsk", 9)
            decoded += ticks
            dones.append(done)
    assert dones[-1] is True and not any(dones[:-1])
    assert len(decoded) == len(rows) == 1003
    for row, tick in zip(rows, decoded, strict=True):
        assert tick.time == epoch(row["time"])
        assert (tick.priceBid, tick.priceAsk, tick.sizeBid, tick.sizeAsk) == (
            row["priceBid"],
            row["priceAsk"],
            row["sizeBid"],
            row["sizeAsk"],
        )
        assert tick.tickAttribBidAsk.askPastHigh == row["tickAttribBidAsk"]["askPastHigh"]
        assert tick.tickAttribBidAsk.bidPastLow == row["tickAttribBidAsk"]["bidPastLow"]

    dropped: dict[str, int] = {}
    quotes = tick_events("XYZ", "BID_ASK", decoded, dropped)
    one_sided = sum(1 for r in rows if r["priceBid"] <= 0 or r["priceAsk"] <= 0)
    crossed = sum(1 for r in rows if 0 < r["priceAsk"] < r["priceBid"])
    assert len(quotes) == len(rows) - one_sided - crossed
    assert dropped == {k: v for k, v in (("one_sided_quote", one_sided), ("crossed_quote", crossed)) if v}
    stamps = [q.ts_event for q in quotes]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # ordered inside a second
    assert all(q.bid <= q.ask for q in quotes)


def test_captured_trade_ticks_decode_and_become_trades() -> None:
    rows = captured("trade_ticks.json.gz")
    wire = [
        (
            epoch(r["time"]),
            int(r["tickAttribLast"]["pastLimit"]) | int(r["tickAttribLast"]["unreported"]) << 1,
            r["price"],
            integral(r["size"]),
            r["exchange"],
            r["specialConditions"],
        )
        for r in rows
    ]
    # One more, unreported: IB marks it with bit 1; it is not on the tape and is not written.
    wire.append((wire[-1][0] + 1, 2, 6.1, 10, "FINRA", ""))
    ((name, (req_id, decoded, done)),) = decode(historical_ticks_last_frame(4, wire, True)).calls
    assert (name, req_id, done) == ("historicalTicksLast", 4, True)
    assert [(t.time, t.price, t.size, t.exchange) for t in decoded] == [
        (w[0], w[2], w[3], w[4]) for w in wire
    ]
    assert decoded[-1].tickAttribLast.unreported and not decoded[0].tickAttribLast.unreported
    dropped: dict[str, int] = {}
    trades = tick_events("XYZ", "TRADES", decoded, dropped)
    assert dropped == {"unreported_trade": 1}
    assert [(t.price, t.size) for t in trades] == [(r["price"], r["size"]) for r in rows]


def test_non_finite_and_negative_values_are_counted_not_written() -> None:
    class Tick:
        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)

    dropped: dict[str, int] = {}
    bad = [
        Tick(time=1, priceBid=float("nan"), priceAsk=1.0, sizeBid=1, sizeAsk=1),
        Tick(time=1, priceBid=1.0, priceAsk=float("inf"), sizeBid=1, sizeAsk=1),
        Tick(time=2, priceBid=1.0, priceAsk=1.1, sizeBid=-5, sizeAsk=1),
        Tick(time=3, priceBid=1.0, priceAsk=1.1, sizeBid=5, sizeAsk=1),
    ]
    assert len(tick_events("XYZ", "BID_ASK", bad, dropped)) == 1
    assert dropped == {"non_finite_price": 2, "negative_size": 1}
