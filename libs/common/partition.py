"""Per-symbol sharding: which replica of a stateful service (features, fastlane, qos) owns a symbol.

The function is NATS subject mapping's ``partition(n, token)`` (FNV-1a 32-bit of the subject token,
modulo n; tests/integration/test_partition.py checks it against a real nats-server), so moving the
filtering into the server with a mapping later assigns every symbol to the same replica.
"""

from __future__ import annotations

import functools

from proto.subjects import subject_token

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193


def fnv1a_32(data: bytes) -> int:
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return h


def nats_partition(token: str, count: int) -> int:
    return fnv1a_32(token.encode()) % count


class Partitioner:
    """``owns(symbol)`` for a replica owning ``owned`` of ``count`` partitions (cached per symbol:
    called on every message)."""

    def __init__(self, count: int = 1, owned: list[int] | None = None) -> None:
        self.count = count
        self.owned = frozenset(owned if owned else range(count))
        self.everything = self.owned == frozenset(range(count))
        self.owns = functools.lru_cache(maxsize=65536)(self._owns)

    def _owns(self, symbol: str) -> bool:
        return self.everything or nats_partition(subject_token(symbol), self.count) in self.owned
