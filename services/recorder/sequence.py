"""Which market-data ticks the database holds, by their source's numbering (proto.market.make_seq).

Pure: no I/O. The recorder passes every quote, trade and bar of a batch through ``keep_new_ticks``
before writing it, and stores the resulting state in the same transaction as the rows, so the
state is exactly what the database holds:
- a tick whose number is held already is not written again (a resumed replay sends its last half
  second again; a spill file written again after a crash between its commit and its deletion);
- numbers below the highest held that never came (a NATS restart, the recorder down meanwhile)
  are holes: the recorder asks the source for them (gap.request.SYMBOL) until they come or it
  gives up, and counts them either way.

Per symbol and session the numbers held are kept as sorted, disjoint ranges (a handful: one
while nothing is missing). Sets rather than "the last one": ticks of a batch come grouped by
table, a gap's fill comes late, and a restarted live feed starts a new session beside the old;
none of these may be mistaken for a duplicate or a hole.
"""

from __future__ import annotations

import bisect
import collections
import operator
from typing import Any

from proto.base import Event
from proto.market import SEQ_BITS, SEQ_MASK

SESSIONS_KEPT = 4  # per symbol: older sessions (and their holes) are forgotten, counted lost
TICK_TABLES = ("quotes", "trades", "bars")  # what the md-gateway numbers
_by_seq = operator.attrgetter("seq")


def _start(r: list[int]) -> int:
    return r[0]


class Numbers:
    """The numbers of one symbol's session held: sorted disjoint ranges [first, last], plus the
    last number the source said it sent (``expected``), which makes a missing tail a hole too."""

    __slots__ = ("expected", "ranges")

    def __init__(self, ranges: list[list[int]] | None = None, expected: int = 0) -> None:
        self.ranges = ranges or []
        self.expected = expected

    @property
    def last(self) -> int:
        return self.ranges[-1][1] if self.ranges else 0

    def add(self, n: int) -> int:
        """Hold ``n``: -1 if it was held already, else how many numbers it leaves missing right
        below it that were not missing before (0 in order or when it fills a hole)."""
        r = self.ranges
        if r:
            top = r[-1]
            if n == top[1] + 1:  # the common case: the next number
                top[1] = n
                return 0
            if n > top[1]:
                r.append([n, n])
                return n - top[1] - 1 - max(0, min(self.expected, n - 1) - top[1])
        else:
            r.append([n, n])
            return n - 1 - min(self.expected, n - 1)
        i = bisect.bisect_right(r, n, key=_start)  # the first range starting after n
        if i and r[i - 1][1] >= n:
            return -1
        joins_below = i > 0 and r[i - 1][1] == n - 1
        joins_above = i < len(r) and r[i][0] == n + 1
        if joins_below and joins_above:
            r[i - 1][1] = r[i][1]
            del r[i]
        elif joins_below:
            r[i - 1][1] = n
        elif joins_above:
            r[i][0] = n
        else:
            r.insert(i, [n, n])
        return 0

    def holes(self) -> list[tuple[int, int]]:
        out = []
        below = 0
        for first, last in self.ranges:
            if first > below + 1:
                out.append((below + 1, first - 1))
            below = last
        if self.expected > below:
            out.append((below + 1, self.expected))
        return out

    def missing(self) -> int:
        return sum(b - a + 1 for a, b in self.holes())

    def to_json(self) -> dict[str, Any]:
        return {"ranges": self.ranges, "expected": self.expected}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Numbers:
        return cls([[int(a), int(b)] for a, b in obj.get("ranges", [])], int(obj.get("expected", 0)))

    def copy(self) -> Numbers:
        return Numbers([list(r) for r in self.ranges], self.expected)


class TickSequencer:
    """The numbers held per symbol and session (newest session last)."""

    def __init__(self, state: dict[str, dict[str, Any]] | None = None) -> None:
        self.symbols: dict[str, dict[int, Numbers]] = {}
        for symbol, obj in (state or {}).items():
            self.symbols[symbol] = {
                int(session): Numbers.from_json(numbers) for session, numbers in obj["sessions"]
            }
        self.changed: set[str] = set()  # symbols whose state moved since the last take_changed
        self.stats: collections.Counter[str] = collections.Counter()
        # Sessions heard from by this process: only their holes are asked for and count as
        # missing (an earlier run's source is gone; its holes stay in the state, reported apart).
        self.live: set[int] = set()

    def _numbers(self, symbol: str, session: int) -> Numbers:
        sessions = self.symbols.get(symbol)
        if sessions is None:
            sessions = self.symbols[symbol] = {}
        numbers = sessions.get(session)
        if numbers is None:
            numbers = sessions[session] = Numbers()
            while len(sessions) > SESSIONS_KEPT:
                oldest = next(iter(sessions))
                self.stats["gap_ticks_forgotten"] += sessions.pop(oldest).missing()
        return numbers

    def admit(self, symbol: str, seq: int) -> bool:
        """Write this tick? False when its number is held already. Unsequenced ticks (seq 0)
        are always written."""
        if not seq:
            return True
        self.changed.add(symbol)
        session = seq >> SEQ_BITS
        self.live.add(session)
        opened = self._numbers(symbol, session).add(seq & SEQ_MASK)
        if opened < 0:
            self.stats["duplicates"] += 1
            return False
        if opened:
            self.stats["gaps"] += 1
            self.stats["gap_ticks"] += opened
        return True

    def expect(self, symbol: str, seq: int) -> None:
        """The source says ``seq`` is its last tick of ``symbol``: a missing tail is a hole."""
        self.live.add(seq >> SEQ_BITS)
        numbers = self._numbers(symbol, seq >> SEQ_BITS)
        n = seq & SEQ_MASK
        if n > max(numbers.last, numbers.expected):
            self.stats["gaps"] += 1
            self.stats["gap_ticks"] += n - max(numbers.last, numbers.expected)
            self.changed.add(symbol)
        numbers.expected = max(numbers.expected, n)

    def holes(self, live_only: bool = True) -> list[tuple[str, int, int, int]]:
        """(symbol, session, first, last) of every range of numbers not held (of live sessions)."""
        return [
            (symbol, session, first, last)
            for symbol, sessions in self.symbols.items()
            for session, numbers in sessions.items()
            if session in self.live or not live_only
            for first, last in numbers.holes()
        ]

    def missing(self, live_only: bool = True) -> int:
        return sum(
            n.missing()
            for sessions in self.symbols.values()
            for session, n in sessions.items()
            if session in self.live or not live_only
        )

    def state_of(self, symbol: str) -> dict[str, Any]:
        return {"sessions": [[s, n.to_json()] for s, n in self.symbols[symbol].items()]}

    def take_changed(self) -> dict[str, dict[str, Any]]:
        """The state of every symbol that moved, to store; then nothing has moved."""
        out = {symbol: self.state_of(symbol) for symbol in self.changed}
        self.changed = set()
        return out

    def copy(self) -> TickSequencer:
        twin = TickSequencer()
        twin.symbols = {s: {k: n.copy() for k, n in v.items()} for s, v in self.symbols.items()}
        twin.changed = set(self.changed)
        twin.stats = self.stats.copy()  # a write that fails counts nothing
        twin.live = set(self.live)
        return twin


def keep_new_ticks(
    sequencer: TickSequencer, events_by_table: dict[str, list[Event]]
) -> tuple[dict[str, list[Event]], collections.Counter[str]]:
    """The batch without the ticks whose numbers are held already, and how many were left out
    per table. Ticks are taken in number order (a batch holds its quotes and trades apart), so a
    hole opens only where a number really is missing."""
    ticks: list[Any] = [e for table in TICK_TABLES for e in events_by_table.get(table, ())]
    if not ticks:
        return events_by_table, collections.Counter()
    ticks.sort(key=_by_seq)
    admit = sequencer.admit
    held: set[int] = set()
    # The hot path inlined (this runs for every tick the recorder writes): a symbol's next number
    # in the session it last took extends the top range in place. Anything else goes to admit,
    # after which the symbol's top is looked up again.
    tops: dict[str, tuple[int, list[int]]] = {}  # symbol -> (session, the range holding its last)
    for e in ticks:
        seq, symbol = e.seq, e.symbol
        top = tops.get(symbol)
        if top is not None and seq >> SEQ_BITS == top[0] and (seq & SEQ_MASK) == top[1][1] + 1:
            top[1][1] += 1
            continue
        if not admit(symbol, seq):
            held.add(id(e))
        if seq:  # admit may have merged ranges: the session's last one, looked up again
            tops[symbol] = (seq >> SEQ_BITS, sequencer.symbols[symbol][seq >> SEQ_BITS].ranges[-1])
    if not held:
        return events_by_table, collections.Counter()
    out = dict(events_by_table)
    left_out: collections.Counter[str] = collections.Counter()
    for table in TICK_TABLES:
        if table in out:
            kept = [e for e in out[table] if id(e) not in held]
            left_out[table] = len(out[table]) - len(kept)
            out[table] = kept
    return out, left_out
