"""The risk gate's signature on an approval (libs/common/signing.py): every field is covered, only
the right key verifies, nothing verifies without a key, and what travels the wire still verifies."""

from __future__ import annotations

import msgspec
import pytest

from libs.common import codec, signing
from proto.orders import OrderApproved
from tests.kit import stubs

KEY = stubs.TEST_APPROVAL_KEY.encode()


def _approval(**kw: object) -> OrderApproved:
    return stubs.approved("c-1", quantity=100, signed=False, order_type="LMT", limit_price=100.5, **kw)  # type: ignore[arg-type]


def test_a_signed_approval_verifies_with_its_key_only() -> None:
    a = signing.signed(_approval(), KEY)
    assert len(a.signature) == 64 and int(a.signature, 16) >= 0  # hex SHA-256
    assert signing.verify(a, KEY)
    assert signing.refusal(a, KEY) == ""
    assert not signing.verify(a, b"another-key")
    assert signing.refusal(a, b"another-key") == signing.INVALID


# A different value for every field of an approval (the stub's is LMT @ 100.5, BUY 100 IBM).
CHANGES: dict[str, object] = {
    "ts_event": 1,
    "ts_init": 1,
    "intent_id": "i-2",
    "client_order_id": "c-2",
    "symbol": "MSFT",
    "side": "SELL",
    "quantity": 1000.0,
    "order_type": "MKT",
    "limit_price": 99.0,
    "stop_price": 1.0,
    "tif": "GTC",
    "valid_until_ns": 2**62,
    "take_profit_price": 1.0,
    "stop_loss_price": 1.0,
    "trail_amount": 1.0,
    "trail_percent": 1.0,
}


@pytest.mark.parametrize(("name", "value"), sorted(CHANGES.items()))
def test_changing_any_field_breaks_the_signature(name: str, value: object) -> None:
    a = signing.signed(_approval(), KEY)
    tampered = msgspec.structs.replace(a, **{name: value})
    assert not signing.verify(tampered, KEY)
    assert signing.refusal(tampered, KEY) == signing.INVALID


def test_every_field_but_the_signature_is_tried() -> None:
    """A field added to OrderApproved is covered by the signature as it is; this says to add it
    to CHANGES too."""
    assert set(CHANGES) == set(OrderApproved.__struct_fields__) - {"signature"}


def test_the_canonical_bytes_ignore_the_signature_and_the_python_types() -> None:
    a = _approval()
    assert signing.canonical(a) == signing.canonical(msgspec.structs.replace(a, signature="anything"))
    # 100 (int) in a struct built in Python is 100.0 on the wire: the same signature
    as_int = stubs.approved("c-1", quantity=100, signed=False)
    as_float = stubs.approved("c-1", quantity=100.0, signed=False)
    assert signing.sign(as_int, KEY) == signing.sign(as_float, KEY)


def test_a_signed_approval_still_verifies_after_the_wire() -> None:
    a = signing.signed(stubs.approved("c-1", quantity=100, signed=False), KEY)
    decoded = codec.decode(codec.encode(a))
    assert isinstance(decoded, OrderApproved) and decoded == a
    assert signing.verify(decoded, KEY)


def test_without_a_key_nothing_is_signed_and_nothing_verifies() -> None:
    a = _approval()
    assert signing.signed(a, b"") is a and a.signature == ""
    with pytest.raises(ValueError):
        signing.sign(a, b"")
    signed = signing.signed(a, KEY)
    assert not signing.verify(signed, b"")
    assert signing.refusal(signed, b"") == signing.NO_KEY
    # an empty signature never verifies, whatever the key
    assert not signing.verify(a, KEY)
    assert signing.refusal(a, KEY) == signing.MISSING


def test_the_signature_is_deterministic_and_the_stubs_sign_with_the_test_key() -> None:
    a = _approval()
    assert signing.sign(a, KEY) == signing.sign(a, KEY)
    assert signing.verify(stubs.approved("c-9"), KEY)
    assert not signing.verify(stubs.approved("c-9", signed=False), KEY)
    assert signing.verify(stubs.sign(a), KEY)
