"""IB's historical-data pacing, as a pure scheduler (the clock is passed in).

IB's rules (historical_limitations, ../shared/reference/ib-api.md section 4): a pacing violation
is an identical request within 15 s, 6 or more requests for the same contract and data type within
2 s, or more than 60 requests in 10 minutes; at most 50 requests may be open at once. A violation
is answered with 162 and, repeated, a disconnect. ``delay`` says how long a request must wait so
none of them is ever broken; ``backoff`` how long to wait after IB said 162 anyway.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from libs.common.config import IbHistoricalSettings

PACING_TEXT = "pacing violation"
NO_DATA_TEXT = "returned no data"


class HistoricalPacer:
    """The rules' numbers are the ``ib.historical`` settings (IB's published limits by default)."""

    def __init__(self, clock: Callable[[], float], rules: IbHistoricalSettings | None = None) -> None:
        self.clock = clock
        self.rules = rules or IbHistoricalSettings()
        self.sent: collections.deque[float] = collections.deque()
        self.by_key: dict[tuple[str, ...], float] = {}
        self.by_contract: dict[tuple[str, ...], collections.deque[float]] = {}
        self.open = 0

    def delay(self, key: tuple[str, ...], contract: tuple[str, ...]) -> float:
        """Seconds until a request with this exact ``key`` for this ``contract`` may go (0: now)."""
        now = self.clock()
        self._forget(now)
        waits = [0.0]
        if self.open >= self.rules.max_open:
            waits.append(0.1)  # a slot frees when an answer comes: look again shortly
        if len(self.sent) >= self.rules.max_per_window:
            waits.append(self.sent[0] + self.rules.window_s - now)
        last = self.by_key.get(key)
        if last is not None:
            waits.append(last + self.rules.identical_gap_s - now)
        recent = self.by_contract.get(contract)
        if recent is not None and len(recent) >= self.rules.per_contract:
            waits.append(recent[-self.rules.per_contract] + self.rules.per_contract_window_s - now)
        return max(waits)

    def record(self, key: tuple[str, ...], contract: tuple[str, ...]) -> None:
        now = self.clock()
        self.sent.append(now)
        self.by_key[key] = now
        self.by_contract.setdefault(contract, collections.deque()).append(now)
        self.open += 1

    def answered(self) -> None:
        self.open = max(self.open - 1, 0)

    def backoff(self, attempt: int) -> float:
        return min(self.rules.backoff_max_s, self.rules.backoff_initial_s * 2 ** max(attempt - 1, 0))

    def _forget(self, now: float) -> None:
        while self.sent and now - self.sent[0] >= self.rules.window_s:
            self.sent.popleft()
        for recent in self.by_contract.values():
            while recent and now - recent[0] >= self.rules.per_contract_window_s:
                recent.popleft()
