"""A core NATS publish whose headers are encoded once, not once per message.

Why it is written here: every event the fleet publishes carries the same headers (the schema
version and, in a process group, its origin), and nats-py encodes a header dict again on every
``publish`` (a regex check, strip and translate per key and value): 5.2 us a message with one
header and 7.9 with two, against 1.9 without (this VM, warm). A decision crosses some twenty
publishes, each of them cold; so the bus encodes its header block once
(``encode_headers``) and hands nats-py the bytes it would have built.

``publish_encoded`` does what ``Client.publish`` with headers does in nats-py 2.16 (pinned in
constraints.txt): the same refusals (closed, draining, the reconnect buffer full, the payload too
large), the same HPUB command and statistics, the same flush. It reaches into the client's
internals, so ``supported`` checks they are there at connect, and the bus uses the plain
``publish`` where they are not; tests/integration/test_natspub.py compares the two on a real
server, the error paths included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import nats.errors
from nats.protocol.command import hpub_cmd

_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 tokens: what NATS header keys may be
_INTERNALS = ("_send_command", "_flush_pending", "_flush_queue", "_pending_data_size", "_max_pending_size")


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """The NATS/1.0 header block of ``headers``, as nats-py encodes it for HPUB."""
    block = bytearray(b"NATS/1.0\r\n")
    for key, value in headers.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a valid NATS header key: {key!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"a NATS header value cannot hold a line break: {key}={value!r}")
        block += f"{key}: {value.strip()}\r\n".encode()
    block += b"\r\n"
    return bytes(block)


def supported(nc: Any) -> bool:
    """Does this client have the internals ``publish_encoded`` drives (nats-py 2.x)?"""
    return all(hasattr(nc, name) for name in _INTERNALS) and hasattr(nc, "_max_payload")


async def publish_encoded(nc: Any, subject: str, payload: bytes, header_block: bytes) -> None:
    """``nc.publish(subject, payload, headers=...)`` with the header block already encoded."""
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise nats.errors.ConnectionDrainingError
    size = len(payload)
    if not nc.is_connected and (
        nc._max_pending_size <= 0 or size + nc._pending_data_size > nc._max_pending_size
    ):
        raise nats.errors.OutboundBufferLimitError  # reconnecting, and nowhere to keep it
    if size > nc._max_payload:
        raise nats.errors.MaxPayloadError
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += size
    await nc._send_command(hpub_cmd(subject, "", header_block, payload))
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()
