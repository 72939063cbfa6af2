"""The risk gate's signature on an approval: HMAC-SHA256, so that the execution gateway takes only
approvals the gate made, even on a bus whose permissions are wrong (settings.signing, the key).

What is signed: every field of ``OrderApproved`` except ``signature`` itself, ``ts_event`` and
``ts_init`` included, in the struct's field order, with the type's tag, as msgpack (the wire
format). The bytes are canonical: the approval is first normalized through the codec (encoded
with an empty signature and decoded as an ``OrderApproved``), so a quantity built as the int 100
and the float 100.0 it becomes on the wire sign the same, and what the gateway decodes verifies
against what the gate encoded. A field added to ``OrderApproved`` later is covered as soon as it
exists (both sides must run the same schema: a mismatch refuses, it never passes).

The MAC is over a domain prefix and those bytes (``tradefleet/OrderApproved/v1\\0`` + msgpack),
hex-encoded. Without a key nothing is signed and nothing verifies: the gateway refuses every
approval (fail closed)."""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from proto.orders import OrderApproved

DOMAIN = b"tradefleet/OrderApproved/v1\0"
MISSING = "approval signature missing"
INVALID = "approval signature invalid: not signed by the risk gate"
NO_KEY = (
    "approval signature not checked: no approval key configured (signing.approval_key), "
    "every approval refused"
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(OrderApproved)


def canonical(approval: OrderApproved) -> bytes:
    """The bytes the signature covers: the approval with ``signature=""``, as it travels."""
    unsigned = msgspec.structs.replace(approval, signature="")
    raw = _encoder.encode(unsigned)
    try:  # through the codec and back: the types the wire gives every field (int -> float, ...)
        return _encoder.encode(_decoder.decode(raw))
    except msgspec.ValidationError:  # built in-process, never valid on the wire: as it is
        return raw


def sign(approval: OrderApproved, key: bytes) -> str:
    """The hex HMAC-SHA256 of ``approval``'s fields under ``key`` (which must not be empty)."""
    if not key:
        raise ValueError("no approval key: an approval cannot be signed without one")
    return hmac.new(key, DOMAIN + canonical(approval), hashlib.sha256).hexdigest()


def signed(approval: OrderApproved, key: bytes) -> OrderApproved:
    """``approval`` carrying its signature; as it is (unsigned) when ``key`` is empty."""
    if not key:
        return approval
    return msgspec.structs.replace(approval, signature=sign(approval, key))


def verify(approval: OrderApproved, key: bytes) -> bool:
    """True only for a signature made with ``key`` over these very fields (constant time). An
    empty key or an empty signature never verifies."""
    if not key or not approval.signature:
        return False
    return hmac.compare_digest(approval.signature, sign(approval, key))


def refusal(approval: OrderApproved, key: bytes) -> str:
    """Why the gateway must refuse ``approval`` ('' when its signature verifies)."""
    if not key:
        return NO_KEY
    if not approval.signature:
        return MISSING
    return "" if verify(approval, key) else INVALID
