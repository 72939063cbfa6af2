"""The codec refuses bad input with a reason: malformed, unknown type, invalid value."""

from __future__ import annotations

import msgspec
import pytest

from libs.common import codec
from proto.events import Batch
from proto.market import Quote
from tests.kit.samples import T0


def _quote_fields(**over: object) -> list[object]:
    fields = {"bid": 182.05, "ask": 182.07}
    fields.update(over)  # type: ignore[arg-type]
    return ["Quote", T0, T0, "IBM", fields["bid"], fields["ask"], 100, 100, "P", 0]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1\xff\x00", codec.MALFORMED),
        (msgspec.msgpack.encode({"not": "an event"}), codec.MALFORMED),
        (msgspec.msgpack.encode(["Teleport", T0, T0]), codec.UNKNOWN_TYPE),
        (msgspec.msgpack.encode(_quote_fields(bid=float("nan"))), codec.INVALID_VALUE),
        (msgspec.msgpack.encode(_quote_fields(bid=-1.0)), codec.INVALID_VALUE),
        (msgspec.msgpack.encode(_quote_fields(bid=0.0)), codec.INVALID_VALUE),
        (msgspec.msgpack.encode(_quote_fields(bid=182.09)), codec.INVALID_VALUE),  # crossed
        (msgspec.msgpack.encode(["Batch", [["Teleport", T0, T0]]]), codec.UNKNOWN_TYPE),
    ],
)
def test_refused_payloads_name_their_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(codec.DecodeFailure) as info:
        codec.decode(payload)
    assert info.value.reason == reason


def test_batch_round_trip_keeps_order() -> None:
    quotes = [
        Quote(
            ts_event=T0 + i,
            ts_init=T0 + i,
            symbol="IBM",
            bid=100.0 + i / 100,
            ask=100.02 + i / 100,
            bid_size=1,
            ask_size=1,
        )
        for i in range(50)
    ]
    decoded = codec.decode(codec.encode_batch(quotes))
    assert isinstance(decoded, Batch)
    assert decoded.events == quotes


def test_to_builtins_is_json_ready() -> None:
    q = Quote(ts_event=T0, ts_init=T0, symbol="IBM", bid=1.0, ask=1.01, bid_size=1, ask_size=2)
    out = codec.to_builtins(q)
    assert out["type"] == "Quote" and out["bid"] == 1.0 and out["symbol"] == "IBM"
    msgspec.json.encode(out)
