"""msgpack codec for events (via msgspec), and classification of what could not be decoded."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from proto.base import Event
from proto.events import EVENT_TAGS, AnyEvent, Batch

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[AnyEvent | Batch] = msgspec.msgpack.Decoder(AnyEvent | Batch)

# Reasons a message is refused; they label the drop counters and the dead letters.
MALFORMED = "malformed"
UNKNOWN_TYPE = "unknown_type"
INVALID_VALUE = "invalid_value"
WRONG_SUBJECT = "wrong_subject"
FAR_TIMESTAMP = "far_timestamp"


class DecodeFailure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def encode_batch(events: Sequence[Event]) -> bytes:
    return _encoder.encode(Batch(list(events)))  # type: ignore[arg-type]


def decode(data: bytes) -> Event | Batch:
    """One event or a micro-batch; raises DecodeFailure saying why not, whatever the bytes: msgspec
    raises more than its own errors on hostile input (UnicodeDecodeError for a string that is not
    UTF-8, RecursionError for arrays nested thousands deep), and one of those escaping would end
    the subscription that received it (a durable consumer's pull loop)."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeFailure(_classify(data), str(exc)) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # UnicodeDecodeError is a ValueError
        raise DecodeFailure(MALFORMED, f"{type(exc).__name__}: {exc}") from None


def _classify(data: bytes) -> str:
    """Only on the error path: tell apart garbage, an event type we do not know, and bad values."""
    try:
        raw = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError, MemoryError):
        return MALFORMED
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        return MALFORMED
    if raw[0] == "Batch":
        inner = raw[1] if len(raw) > 1 and isinstance(raw[1], list) else []
        tags = {e[0] for e in inner if isinstance(e, list) and e and isinstance(e[0], str)}
        return UNKNOWN_TYPE if tags - EVENT_TAGS else INVALID_VALUE
    return INVALID_VALUE if raw[0] in EVENT_TAGS else UNKNOWN_TYPE


def to_builtins(event: Event) -> dict[str, object]:
    """A JSON-ready dict with the event type under "type" (taps, summaries, logs)."""
    out: dict[str, object] = {"type": type(event).__name__}
    for name in event.__struct_fields__:
        out[name] = msgspec.to_builtins(getattr(event, name))
    return out
