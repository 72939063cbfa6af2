"""The recorder core: events in, batches of rows out; the outage buffer's bookkeeping.

Pure: no I/O, the clock is passed in. Rules it keeps:
- a durable event (JetStream) is acked only after the batch holding its row is committed; its
  stream sequence is committed with the rows, and the recorder resumes its consumer from there,
  so every stream message is written exactly once: committed ones are never taken again and a
  redelivery of one still held in memory is recognised (no duplicates, no gaps);
- durable rows are never spilled to disk: JetStream already holds them durably, so at the bound
  the recorder stops pulling (backpressure) and they wait in the stream;
- core-NATS market data, which nobody else keeps, is buffered in memory up to a bound and then
  spilled to disk, oldest first, and written once the database is back.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from psycopg.types.json import Jsonb

from libs.common.clock import Clock
from libs.common.storage.schema import PG_EPOCH_OFFSET_US
from libs.common.storage.writer import jsonb
from proto.alerts import Alert, DeadLetter
from proto.base import Event
from proto.control import ConfigChange, Control, ControlAck
from proto.execution import Fill, OrderEvent, PositionSnapshot
from proto.features import FeatureVector
from proto.market import Bar, Quote, Trade
from proto.news import NewsItem, SentimentScore
from proto.orders import OrderApproved, OrderDenied, OrderIntent, RiskState
from proto.signals import ExternalSignal, PolicySignal
from proto.subjects import covers, stream_of_pattern, subject_of
from proto.tca import TcaReport
from proto.units import DAY_NS

Row = tuple[Any, ...]


def _quote(e: Quote) -> Row:
    return (
        e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
        e.symbol,
        e.bid,
        e.ask,
        e.bid_size,
        e.ask_size,
        e.venue,
        e.flags,
        e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
    )


def _trade(e: Trade) -> Row:
    return (
        e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
        e.symbol,
        e.price,
        e.size,
        e.venue,
        e.conditions,
        e.aggressor,
        e.flags,
        e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
    )


def _bar(e: Bar) -> Row:
    return (
        e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
        e.symbol,
        e.timeframe,
        e.open,
        e.high,
        e.low,
        e.close,
        e.volume,
        e.trade_count,
        e.vwap,
        e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
    )


def _vector(e: FeatureVector) -> Row:
    return (
        e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
        e.symbol,
        e.timeframe,
        e.feature_set,
        e.values,
        e.regime,
        e.price,
        e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
    )


def _intent(e: OrderIntent) -> Row:
    return (
        e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
        e.intent_id,
        e.symbol,
        e.side,
        e.quantity,
        e.order_type,
        e.limit_price,
        e.stop_price,
        e.tif,
        e.reason,
        e.score,
        e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
    )


def _approved(e: OrderApproved) -> Row:
    return (
        e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
        e.client_order_id,
        e.intent_id,
        e.symbol,
        e.side,
        e.quantity,
        e.order_type,
        e.limit_price,
        e.stop_price,
        e.tif,
        e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
    )


def _denied(e: OrderDenied) -> Row:
    return (
        e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
        e.intent_id,
        e.symbol,
        e.code,
        jsonb(e.context),
        e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
    )


def _order_event(e: OrderEvent) -> Row:
    return (
        e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
        e.client_order_id,
        e.seq,
        e.symbol,
        e.status,
        e.side,
        e.quantity,
        e.filled_quantity,
        e.avg_fill_price,
        e.broker_order_id,
        e.reason,
        e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
    )


def _fill(e: Fill) -> Row:
    return (
        e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
        e.exec_id,
        e.client_order_id,
        e.symbol,
        e.side,
        e.quantity,
        e.price,
        e.commission,
        e.venue,
        e.liquidity,
        e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
    )


def _positions(e: PositionSnapshot) -> list[Row]:
    return [
        (
            e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
            e.account,
            e.seq,
            p.symbol,
            p.quantity,
            p.avg_price,
            p.mark,
            p.realized_pnl,
            p.unrealized_pnl,
            e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
        )
        for p in e.positions
    ]


def _tca(e: TcaReport) -> Row:
    return (
        e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
        e.client_order_id,
        e.symbol,
        e.side,
        e.quantity,
        e.arrival_price,
        e.avg_fill_price,
        e.slippage_bps,
        e.commission,
        e.spread_bps_at_arrival,
        e.fill_ratio,
        e.latency_ns,
        e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
    )


# -- the audit trail ------------------------------------------------------------------------
# Recorded whatever recorder.durable_subjects / core_subjects say: "every action is audited" is a
# rule of the fleet, not an option an edited config file could turn off.
AUDIT_DURABLE_SUBJECTS = ("ctl.>", "ack.>", "alert.>", "risk.state", "dlq.>", "news.>")
# the policy's answers and the outside models' predictions ride core NATS
AUDIT_CORE_SUBJECTS = ("sig.policy.>", "sig.ext.>")
# Not worth keeping in an audit row: a sentiment score's embedding is hundreds of floats a model
# derives again from the headline.
AUDIT_JSON_DROPS: dict[type, frozenset[str]] = {SentimentScore: frozenset({"embedding"})}


def durable_patterns(configured: Iterable[str]) -> list[str]:
    """The configured durable subjects plus the audit trail's. One consumer per stream: the
    recorder's position in a stream is one committed sequence, which two consumers filtering the
    same stream would interleave. A configured pattern that already covers an audit one (risk.>)
    stands for it; one that reads an audit stream but not all of what the audit needs is refused."""
    patterns = list(dict.fromkeys(configured))
    by_stream = {stream_of_pattern(p): p for p in patterns}
    for pattern in AUDIT_DURABLE_SUBJECTS:
        stream = stream_of_pattern(pattern)
        have = by_stream.get(stream)
        if have is None:
            patterns.append(pattern)
            by_stream[stream] = pattern
        elif not covers(have, pattern):
            raise ValueError(
                f"recorder.durable_subjects has {have!r} on stream {stream}, which the audit trail "
                f"reads as {pattern!r} (one consumer per stream): use {pattern!r} or a broader pattern"
            )
    return patterns


def core_patterns(configured: Iterable[str]) -> list[str]:
    """The configured core subjects plus the audit trail's, unless one configured covers it
    (two core subscriptions matching one subject would store its events twice)."""
    patterns = list(dict.fromkeys(configured))
    for pattern in AUDIT_CORE_SUBJECTS:
        if not any(covers(have, pattern) for have in patterns):
            patterns.append(pattern)
    return patterns


def _no_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL; one in a webhook's headline or a dead letter's
    error must not make its whole batch fail forever (it would be retried, and fail, again)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    return value


def _encode_json(value: Any) -> bytes:
    # msgspec writes NaN as null (jsonb refuses NaN) and bytes (a dead letter's payload) as base64.
    data = msgspec.json.encode(value)
    if b"\\u0000" in data:  # rare: only then pay for a walk over the value
        data = msgspec.json.encode(_no_nul(msgspec.to_builtins(value)))
    return data


def event_json(event: Event) -> Jsonb:
    """The whole event as a JSON object (its type under "type"): events travel as arrays
    (array_like), which would make the stored JSON unreadable without the schema."""
    drop = AUDIT_JSON_DROPS.get(type(event), frozenset())
    fields = {f: getattr(event, f) for f in event.__struct_fields__ if f not in drop}
    return Jsonb({"type": type(event).__name__, **fields}, dumps=_encode_json)


# What each audited event says: (kind, who, what, ref). ``ref`` ties rows together: a command and
# its acks (command_id), a headline and its scores (news_id).
Described = tuple[str, str, str, str]


def _describe_control(e: Control) -> Described:
    args = " ".join(f"{k}={v}" for k, v in sorted(e.args.items()))
    return "ctl", e.issued_by, f"{e.command} {args}".rstrip(), e.command_id


def _describe_ack(e: ControlAck) -> Described:
    verdict = "accepted" if e.accepted else "REFUSED"
    return "ack", e.service, f"{verdict} {e.command}: {e.summary}", e.command_id


def _describe_alert(e: Alert) -> Described:
    return "alert", e.source, f"{e.severity}: {e.title}", e.alert_id


def _describe_dead_letter(e: DeadLetter) -> Described:
    return "dlq", e.service, f"refused {e.subject}: {e.reason}: {e.error}", e.digest


def _describe_news(e: NewsItem) -> Described:
    names = f" [{' '.join(e.symbols)}]" if e.symbols else ""
    return "news", e.source, f"{e.headline}{names}", e.news_id


def _describe_sentiment(e: SentimentScore) -> Described:
    who = f"sentiment:{e.model_version}" if e.model_version else "sentiment"
    return "sentiment", who, f"{e.symbol} {e.label} {e.polarity:+.2f}: {e.headline}", e.news_id


def _describe_policy(e: PolicySignal) -> Described:
    what = f"{e.symbol} {e.timing} at scale {e.scale:.2f} (QOS proposed {e.proposal:+d})"
    return "policy", f"policy:{e.policy_version}", what, f"{e.symbol}:{e.score_ts}"


def _moved(change: object) -> str:
    """``old -> new`` of a ConfigChange entry; as it is when it is not such a pair (bad input is
    recorded, never a failed batch)."""
    if isinstance(change, list | tuple) and len(change) == 2:
        return f"{change[0]!r} -> {change[1]!r}"
    return repr(change)


def _describe_config(e: ConfigChange) -> Described:
    moved = ", ".join(f"{k} {_moved(v)}" for k, v in sorted(e.changed.items()))
    return "param", e.issued_by, f"{e.section}: {moved or 'nothing changed'}", e.change_id


def _describe_external(e: ExternalSignal) -> Described:
    horizon = f" {e.horizon}" if e.horizon else ""
    what = f"{e.symbol} {e.signal:+.2f}{horizon} from {e.source} (confidence {e.confidence:.2f})"
    return "signal", e.issued_by or e.source, what, f"{e.source}:{e.symbol}:{e.ts_event}"


DESCRIBE: dict[type, Callable[[Any], Described]] = {
    ConfigChange: _describe_config,
    ExternalSignal: _describe_external,
    Control: _describe_control,
    ControlAck: _describe_ack,
    Alert: _describe_alert,
    DeadLetter: _describe_dead_letter,
    NewsItem: _describe_news,
    SentimentScore: _describe_sentiment,
    PolicySignal: _describe_policy,
}


def _audit(e: Event) -> Row:
    """One row of audit_events, for every audited type: one builder, so rows_of can still map a
    single function over the table's mixed events."""
    kind, who, what, ref = DESCRIBE[type(e)](e)
    return (
        e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
        kind,
        subject_of(e),
        _no_nul(who),
        _no_nul(what),
        _no_nul(ref),
        event_json(e),
        e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
    )


def _risk_state(e: RiskState) -> Row:
    return (
        e.ts_event // 1000 - PG_EPOCH_OFFSET_US,
        e.account,
        e.instance,
        e.seq,
        e.mode,
        _no_nul(e.mode_reason),
        e.operator_mode,
        _no_nul(e.operator_reason),
        e.realized_pnl,
        e.unrealized_pnl,
        e.gross_exposure,
        e.net_exposure,
        e.open_orders,
        event_json(e),
        e.ts_init // 1000 - PG_EPOCH_OFFSET_US,
    )


# Time columns are written as PostgreSQL's binary timestamptz (us since 2000, see schema.pg_time),
# computed inline: a function call per value is measurable at 400k rows/s.
SINGLE_ROW: dict[type, tuple[str, Callable[[Any], Row]]] = {
    Quote: ("quotes", _quote),
    Trade: ("trades", _trade),
    Bar: ("bars", _bar),
    FeatureVector: ("feature_vectors", _vector),
    OrderIntent: ("order_intents", _intent),
    OrderApproved: ("orders", _approved),
    OrderDenied: ("order_denials", _denied),
    OrderEvent: ("order_events", _order_event),
    Fill: ("fills", _fill),
    TcaReport: ("tca", _tca),
    RiskState: ("risk_states", _risk_state),
    **{kind: ("audit_events", _audit) for kind in DESCRIBE},
}
MULTI_ROW: dict[type, tuple[str, Callable[[Any], list[Row]]]] = {
    PositionSnapshot: ("positions", _positions),
}
TABLE_OF: dict[type, str] = {t: spec[0] for t, spec in (SINGLE_ROW | MULTI_ROW).items()}


def build_rows(event: Event) -> list[Row]:
    """Every row one event makes (tests, tools; the writer path uses rows_of)."""
    single = SINGLE_ROW.get(type(event))
    if single is not None:
        return [single[1](event)]
    return MULTI_ROW[type(event)][1](event)


def table_of(event: Event) -> str | None:
    return TABLE_OF.get(type(event))


def row_count(event: Event) -> int:
    return len(event.positions) if isinstance(event, PositionSnapshot) else 1


def rows_of(events: list[Event]) -> Iterator[Row]:
    """Rows built lazily, inside the writer's COPY loop: the client would otherwise sit idle
    while the server ingests, so building them there costs no wall time (bench/recorder.py).
    A table holds one event type (audit_events several, with one builder), so a C-level ``map``
    does the iteration."""
    if not events:
        return iter(())
    kind = type(events[0])
    single = SINGLE_ROW.get(kind)
    if single is not None:
        return map(single[1], events)
    return itertools.chain.from_iterable(map(MULTI_ROW[kind][1], events))


def days_of(events: list[Event]) -> set[int]:
    """UTC days (since 1970) the rows fall on, for partition upkeep."""
    return {e.ts_event // DAY_NS for e in events}


@dataclass
class WriteBatch:
    """Events of one transaction (by table), the deliveries to ack after it commits, and the
    highest stream sequence per stream it covers."""

    opened_ns: int
    core_events: dict[str, list[Event]] = field(default_factory=dict)
    durable_events: dict[str, list[Event]] = field(default_factory=dict)
    core_rows: collections.Counter[str] = field(default_factory=collections.Counter)
    durable_rows: collections.Counter[str] = field(default_factory=collections.Counter)
    acks: list[Any] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)
    n_core: int = 0
    n_durable: int = 0

    def events(self) -> dict[str, list[Event]]:
        merged = {t: list(e) for t, e in self.core_events.items()}
        for table, events in self.durable_events.items():
            merged.setdefault(table, []).extend(events)
        return merged

    def take_core(self) -> dict[str, list[Event]]:
        events, self.core_events = self.core_events, {}
        self.core_rows, self.n_core = collections.Counter(), 0
        return events

    @property
    def empty(self) -> bool:
        return self.n_core == 0 and self.n_durable == 0 and not self.acks


class RecorderCore:
    def __init__(
        self,
        clock: Clock,
        batch_rows: int,
        flush_interval_ns: int,
        buffer_max_rows: int,
        max_durable_pending: int,
    ) -> None:
        self.clock = clock
        self.batch_rows = batch_rows
        self.flush_interval_ns = flush_interval_ns
        self.buffer_max_rows = buffer_max_rows
        self.max_durable_pending = max_durable_pending
        self.pending = WriteBatch(clock.now_ns())
        self.backlog: collections.deque[WriteBatch] = collections.deque()
        self.watermarks: dict[str, int] = {}  # highest stream sequence committed
        self.seen: dict[str, int] = {}  # highest stream sequence taken in this run
        self.committed_rows: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        self.ignored: collections.Counter[str] = collections.Counter()

    # -- intake -----------------------------------------------------------------------------
    def add(self, event: Event, delivery: Any = None, stream: str | None = None, seq: int = 0) -> None:
        table = TABLE_OF.get(type(event))
        batch = self.pending
        if table is None:
            self.ignored[type(event).__name__] += 1
        else:
            n = row_count(event)
            if delivery is None:
                events = batch.core_events.get(table)
                if events is None:
                    events = batch.core_events[table] = []
                events.append(event)
                batch.core_rows[table] += n
                batch.n_core += n
            else:
                batch.durable_events.setdefault(table, []).append(event)
                batch.durable_rows[table] += n
                batch.n_durable += n
        if delivery is not None:
            batch.acks.append(delivery)
            if stream is not None and seq > batch.offsets.get(stream, 0):
                batch.offsets[stream] = seq
                if seq > self.seen.get(stream, 0):
                    self.seen[stream] = seq

    def already_committed(self, stream: str, seq: int) -> bool:
        """A redelivery of something whose row is committed (crash between commit and ack)."""
        return seq <= self.watermarks.get(stream, 0)

    def already_held(self, stream: str, seq: int) -> bool:
        """A redelivery (ack_wait expired during an outage) of something buffered, not yet committed.
        Delivery is in stream order from the committed position, so everything up to the highest
        sequence taken is either committed or held."""
        return seq <= self.seen.get(stream, 0)

    def room_for_durable(self) -> bool:
        return self.memory_durable_rows() < self.max_durable_pending

    def due(self) -> bool:
        batch = self.pending
        if batch.n_core + batch.n_durable >= self.batch_rows:
            return True
        return not batch.empty and self.clock.now_ns() - batch.opened_ns >= self.flush_interval_ns

    def cut(self) -> None:
        """Close the pending batch and queue it for writing."""
        if not self.pending.empty:
            self.backlog.append(self.pending)
        self.pending = WriteBatch(self.clock.now_ns())

    # -- outcomes ---------------------------------------------------------------------------
    def committed(self, batch: WriteBatch) -> None:
        self.committed_rows.update(batch.core_rows)
        self.committed_rows.update(batch.durable_rows)
        for stream, seq in batch.offsets.items():
            if seq > self.watermarks.get(stream, 0):
                self.watermarks[stream] = seq
        self.stats["batches"] += 1

    def committed_spill(self, events_by_table: dict[str, list[Event]]) -> None:
        for table, events in events_by_table.items():
            self.committed_rows[table] += sum(row_count(e) for e in events)
        self.stats["spill_files_written"] += 1

    def memory_core_rows(self) -> int:
        return self.pending.n_core + sum(b.n_core for b in self.backlog)

    def memory_durable_rows(self) -> int:
        return self.pending.n_durable + sum(b.n_durable for b in self.backlog)

    def overflow(self, keep_rows: int | None = None) -> list[dict[str, list[Event]]]:
        """Core events to spill to disk, oldest first, until at most ``keep_rows`` stay in
        memory (default: the buffer's bound; 0 with the database down: market data lives only
        here, and a crash must not take it along)."""
        keep = self.buffer_max_rows if keep_rows is None else keep_rows
        spilled = []
        for batch in self.backlog:
            if self.memory_core_rows() <= keep:
                break
            if batch.n_core:
                self.stats["rows_spilled"] += batch.n_core
                spilled.append(batch.take_core())
        return spilled

    def pending_rows(self) -> int:
        return self.memory_core_rows() + self.memory_durable_rows()
