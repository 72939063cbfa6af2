"""The sequence family's input: the one-second microstructure vectors (feat.1s.SYM, MICRO_VECTOR)
of the last ``seconds`` seconds before a bar vector, as a [seconds, width + 1] window.

Slot k holds the second ending ``seconds - 1 - k`` seconds before the bar's time (the bar's own
last second is the last slot); its last column is 1 when that second had a vector and 0 when
nothing happened in it (features emits a second only when a quote or trade touched it), whose
values are then missing (NaN, imputed inside the network). Training (``SequenceWindows``, fed the
replay's vectors in the order features emits them: a second's vector before the bar it closes)
and serving (fastlane keeps each symbol's last seconds) build the window with the same function.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from proto.features import MICRO_TIMEFRAME, MICRO_VECTOR, FeatureVector

SECONDS = 60
WIDTH = len(MICRO_VECTOR)
NS_PER_S = 1_000_000_000


def window(seconds_seen: Iterable[tuple[int, Sequence[float]]], t: int, seconds: int = SECONDS) -> np.ndarray:
    """The window of the ``seconds`` seconds ending at ``t`` from (time, values) pairs; seconds
    outside it are ignored, missing ones are NaN with presence 0."""
    out = np.full((seconds, WIDTH + 1), np.nan, dtype=np.float32)
    out[:, WIDTH] = 0.0
    for ts, values in seconds_seen:
        k = seconds - 1 - (t - ts) // NS_PER_S
        if 0 <= k < seconds and len(values) == WIDTH:
            out[k, :WIDTH] = values
            out[k, WIDTH] = 1.0
    return out


def empty_window(seconds: int = SECONDS) -> np.ndarray:
    return window((), 0, seconds)


class SecondsBuffer:
    """Each symbol's last ``seconds`` one-second vectors in a ring (slot = second % seconds), so
    that a window is a few array operations on the serving path rather than a loop over the
    seconds in Python (bench/zoo.py). The same window as ``window()`` for vectors stamped on
    whole seconds, which features' are; a vector of another width is left out."""

    def __init__(self, seconds: int = SECONDS) -> None:
        self.seconds = seconds
        self.by_symbol: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._offsets = np.arange(seconds, dtype=np.int64) - (seconds - 1)

    def add(self, v: FeatureVector) -> None:
        if len(v.values) != WIDTH:
            return
        ring = self.by_symbol.get(v.symbol)
        if ring is None:
            ring = self.by_symbol[v.symbol] = (
                np.full(self.seconds, -1, dtype=np.int64),
                np.zeros((self.seconds, WIDTH + 1), dtype=np.float32),
            )
        second = v.ts_event // NS_PER_S
        slot = second % self.seconds
        ring[0][slot] = second
        ring[1][slot, :WIDTH] = v.values
        ring[1][slot, WIDTH] = 1.0

    def window(self, symbol: str, t: int) -> np.ndarray:
        ring = self.by_symbol.get(symbol)
        if ring is None:
            return empty_window(self.seconds)
        wanted = t // NS_PER_S + self._offsets
        slots = wanted % self.seconds
        out = ring[1][slots]  # a copy (fancy indexing)
        out[ring[0][slots] != wanted] = _MISSING
        return out

    def __len__(self) -> int:
        return sum(int((ring[0] >= 0).sum()) for ring in self.by_symbol.values())


_MISSING = np.array([*([np.nan] * WIDTH), 0.0], dtype=np.float32)


class SequenceWindows:
    """Training: fed every vector of a replay in order, it keeps the window each bar vector of
    ``source_timeframe`` would have been served with, keyed by (symbol, time)."""

    def __init__(self, source_timeframe: str = "1m", seconds: int = SECONDS) -> None:
        self.source_timeframe = source_timeframe
        self.buffer = SecondsBuffer(seconds)
        self.windows: dict[tuple[str, int], np.ndarray] = {}

    def see(self, v: FeatureVector) -> None:
        if v.timeframe == MICRO_TIMEFRAME:
            self.buffer.add(v)
        elif v.timeframe == self.source_timeframe:
            self.windows[(v.symbol, v.ts_event)] = self.buffer.window(v.symbol, v.ts_event)

    def of(self, symbol: str, t: int) -> np.ndarray:
        found = self.windows.get((symbol, t))
        return found if found is not None else empty_window(self.buffer.seconds)
