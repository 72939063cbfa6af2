"""The subject catalog: which event flows on which subject, on which transport, from whom.

High-rate market data rides core NATS (latest value wins; a slow consumer must not slow the
gateway). Everything that must not be lost rides JetStream with durable consumers, explicit acks
and ``Nats-Msg-Id`` dedupe.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from proto.alerts import Alert, DeadLetter
from proto.base import Event
from proto.control import ConfigChange, Control, ControlAck, Heartbeat, SyncProbe, SyncReply
from proto.execution import BrokerStatus, Fill, OrderEvent, PositionSnapshot
from proto.features import FeatureVector
from proto.market import Bar, DepthUpdate, FeedStatus, GapRequest, Quote, Trade
from proto.news import NewsItem, SentimentScore
from proto.orders import MarginCheck, MarginReply, OrderApproved, OrderDenied, OrderIntent, RiskState
from proto.signals import ExternalSignal, PolicySignal, Prediction, QosScore
from proto.tca import TcaAggregate, TcaFeedback, TcaReport


class Transport(StrEnum):
    CORE = "core"
    JETSTREAM = "jetstream"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_s: int = 7 * 24 * 3600
    duplicate_window_s: int = 120
    storage: str = "file"
    max_bytes: int = -1  # -1: no limit but the age
    # At a byte limit: "old" drops the oldest (a feed's status), "new" refuses a publish (what
    # must not be lost silently); with no byte limit it never applies.
    discard: str = "old"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    role: str
    # The issue that builds it; the fleet runs only services whose runtime exists.
    since_issue: int
    #: the backtest runs it in its one process (the trading spine)
    spine: bool = False
    #: a lockstep replay waits until it is quiet (it decides or trades)
    lockstep: bool = False


@dataclass(frozen=True)
class SubjectSpec:
    template: str  # e.g. "md.quote.{symbol}"
    event_types: tuple[type[Event], ...]
    transport: Transport
    producer: str
    description: str
    stream: str | None = None
    #: published on an explicit subject only, never chosen by subject_of (its types have a
    #: subject of their own: gap.fill carries quotes and trades sent again)
    by_subject_only: bool = False
    tokens: tuple[str, ...] = field(init=False)
    #: the NATS pattern matching every concrete subject of this entry (a metrics label on every
    #: message, so computed once here)
    wildcard: str = field(init=False)

    def __post_init__(self) -> None:
        tokens = tuple(self.template.split("."))
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "wildcard", ".".join("*" if t.startswith("{") else t for t in tokens))

    def subject(self, **values: str) -> str:
        return self.template.format(**{k: subject_token(v) for k, v in values.items()})

    def matches(self, subject: str) -> bool:
        parts = subject.split(".")
        if len(parts) != len(self.tokens):
            return False
        return all(t.startswith("{") or t == p for t, p in zip(self.tokens, parts, strict=True))


def subject_token(value: str) -> str:
    """NATS splits subjects on '.', so a symbol such as BRK.B travels as BRK_B."""
    return value.replace(".", "_").replace(" ", "_")


# In start order, consumers before producers, so nothing the replay publishes goes unheard; the
# fleet starts them in this order and the backtest subscribes its spine in it (on the in-process
# bus, subscription order is delivery order, so this order is part of what makes a run
# reproducible). The recorder only writes and TCA's feedback is off by default, so a lockstep
# replay waits for neither.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("recorder", "writes md, exec and TCA events, and the audit trail, to TimescaleDB", 2),
    ServiceSpec("tca", "slippage and cost analysis", 4, spine=True),
    ServiceSpec("execution", "the only service that talks to the broker", 4, spine=True, lockstep=True),
    ServiceSpec("risk", "fail-closed risk gate", 4, spine=True, lockstep=True),
    ServiceSpec("policy", "RL timing and sizing", 8, spine=True, lockstep=True),
    ServiceSpec("qos", "timeframe-weighted QOS score and intents", 3, spine=True, lockstep=True),
    ServiceSpec("sentiment", "news sentiment", 6, spine=True, lockstep=True),
    ServiceSpec("fastlane", "calibrated predictions per horizon", 3, spine=True, lockstep=True),
    ServiceSpec("features", "feature vectors per symbol and timeframe", 3, spine=True, lockstep=True),
    ServiceSpec("md-gateway", "market data from IB or a replay, cleaned, on md.*", 2),
    ServiceSpec("control", "operator API and kill switch", 4),
    ServiceSpec("alerts", "Telegram and email", 4),
)
SERVICE_NAMES = frozenset(s.name for s in SERVICES)
ANY_SERVICE = "*"

STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("MDSTATUS", ("md.status",)),
    StreamSpec("NEWS", ("news.>",), max_age_s=30 * 24 * 3600),
    StreamSpec("ORDERS", ("order.>",), max_age_s=30 * 24 * 3600),
    StreamSpec("EXEC", ("exec.>",), max_age_s=30 * 24 * 3600),
    StreamSpec("TCA", ("tca.>",), max_age_s=30 * 24 * 3600),
    StreamSpec("RISK", ("risk.>",), max_age_s=30 * 24 * 3600),
    StreamSpec("ALERTS", ("alert.>",)),
    # Kept without an age limit: a section's last ctl.config.SECTION is what a restarted service
    # applies (live parameters survive any downtime), and operator commands are few.
    StreamSpec("CONTROL", ("ctl.>",), max_age_s=0),
    StreamSpec("ACKS", ("ack.>",), max_age_s=30 * 24 * 3600),
    StreamSpec("DLQ", ("dlq.>",), max_age_s=30 * 24 * 3600),
)

_C, _J = Transport.CORE, Transport.JETSTREAM

CATALOG: tuple[SubjectSpec, ...] = (
    SubjectSpec("md.quote.{symbol}", (Quote,), _C, "md-gateway", "consolidated best bid/offer"),
    SubjectSpec("md.trade.{symbol}", (Trade,), _C, "md-gateway", "trade prints"),
    SubjectSpec("md.depth.{symbol}", (DepthUpdate,), _C, "md-gateway", "level-2 book changes"),
    SubjectSpec("md.bar.{timeframe}.{symbol}", (Bar,), _C, "md-gateway", "recorded or vendor bars"),
    SubjectSpec("md.status", (FeedStatus,), _J, "md-gateway", "feed health and replay progress", "MDSTATUS"),
    SubjectSpec(
        "news.raw", (NewsItem,), _J, ANY_SERVICE, "headlines: IB, news files in replays, webhooks", "NEWS"
    ),
    SubjectSpec(
        "news.sentiment.{symbol}",
        (SentimentScore,),
        _J,
        "sentiment",
        "a headline's sentiment per ticker, with event tags",
        "NEWS",
    ),
    SubjectSpec("feat.{timeframe}.{symbol}", (FeatureVector,), _C, "features", "feature vector on bar close"),
    SubjectSpec("sig.fast.{horizon}.{symbol}", (Prediction,), _C, "fastlane", "calibrated prediction"),
    SubjectSpec(
        "sig.ext.{symbol}",
        (ExternalSignal,),
        _C,
        "control",
        "an outside model's prediction (POST /api/signal): QOS input 'external'",
    ),
    SubjectSpec(
        "sig.policy.{symbol}",
        (PolicySignal,),
        _C,
        "policy",
        "the RL policy's size scale and timing for a QOS score (answers an entry proposal)",
    ),
    SubjectSpec("qos.{symbol}", (QosScore,), _C, "qos", "QOS score with its components"),
    SubjectSpec("order.intent.{symbol}", (OrderIntent,), _J, "qos", "what the strategy wants", "ORDERS"),
    SubjectSpec("order.approved.{symbol}", (OrderApproved,), _J, "risk", "risk-approved order", "ORDERS"),
    SubjectSpec("order.denied.{symbol}", (OrderDenied,), _J, "risk", "denial with its code", "ORDERS"),
    SubjectSpec("risk.state", (RiskState,), _J, "risk", "risk mode, P&L, exposure, counters", "RISK"),
    SubjectSpec("exec.order.{symbol}", (OrderEvent,), _J, "execution", "order lifecycle", "EXEC"),
    SubjectSpec("exec.fill.{symbol}", (Fill,), _J, "execution", "executions", "EXEC"),
    SubjectSpec("exec.position", (PositionSnapshot,), _J, "execution", "positions and P&L", "EXEC"),
    SubjectSpec(
        "exec.broker",
        (BrokerStatus,),
        _J,
        "execution",
        "the broker link: disconnected, reconciled, or a reconciliation mismatch",
        "EXEC",
    ),
    SubjectSpec(
        "broker.whatif",
        (MarginCheck, MarginReply),
        _C,
        "risk",
        "margin preview: MarginCheck, answered by a MarginReply",
    ),
    SubjectSpec("tca.report.{symbol}", (TcaReport,), _J, "tca", "cost of one order", "TCA"),
    SubjectSpec(
        "tca.aggregate.{symbol}", (TcaAggregate,), _C, "tca", "rolling cost per order type and time of day"
    ),
    SubjectSpec(
        "tca.feedback.{symbol}", (TcaFeedback,), _J, "tca", "how to work market orders, from cost", "TCA"
    ),
    SubjectSpec("alert.{severity}", (Alert,), _J, ANY_SERVICE, "alerts for people", "ALERTS"),
    SubjectSpec(
        "ctl.{command}",
        (Control,),
        _J,
        ANY_SERVICE,
        "operator commands: tradefleet ctl, the Telegram desk, the panic file (and the control API)",
        "CONTROL",
    ),
    SubjectSpec(
        "ctl.config.{section}",
        (ConfigChange,),
        _J,
        "control",
        "live parameters of a section (risk, qos, exits), applied without a restart, read again at start",
        "CONTROL",
    ),
    SubjectSpec(
        "ack.{service}",
        (ControlAck,),
        _J,
        ANY_SERVICE,
        "what a service did about an operator command (risk: the mode; execution: orders, flattens)",
        "ACKS",
    ),
    SubjectSpec("dlq.{service}", (DeadLetter,), _J, ANY_SERVICE, "refused messages, kept whole", "DLQ"),
    SubjectSpec(
        "hb.{service}",
        (Heartbeat,),
        _C,
        ANY_SERVICE,
        "a service is alive (the alerts service raises a critical alert on silence)",
    ),
    SubjectSpec(
        "gap.request.{symbol}",
        (GapRequest,),
        _C,
        "recorder",
        "ticks a consumer missed (a sequence gap): asked of the source again until filled",
    ),
    SubjectSpec(
        "gap.fill.{symbol}",
        (Quote, Trade, Bar),
        _C,
        "md-gateway",
        "ticks sent again to fill a reported gap (a replay's); only the recorder reads them",
        by_subject_only=True,
    ),
    SubjectSpec(
        "sync.{service}",
        (SyncProbe, SyncReply),
        _C,
        "md-gateway",
        "lockstep replay: is the service quiet? SyncProbe, answered by a SyncReply",
    ),
)

SPEC_BY_TEMPLATE = {s.template: s for s in CATALOG}

# What each service subscribes to (NATS patterns): its bus user's subscribe allow-list
# (libs/common/natsauth.py), and what Runtime.subscribe lets it ask for on a secured bus. The
# recorder and the control service read everything in the catalog (their own subjects are
# configurable); every service also answers sync.SERVICE (lockstep) and reads its _INBOX replies.
READ_ALL: tuple[str, ...] = tuple(
    sorted({f"{s.tokens[0]}.>" for s in CATALOG if s.tokens[0] not in ("sync", "broker")})  # requests
)
CONSUMES: dict[str, tuple[str, ...]] = {
    "md-gateway": ("exec.order.>", "exec.position", "gap.request.*"),
    "recorder": READ_ALL,
    "features": ("md.>",),
    "fastlane": ("feat.*.*",),
    "policy": ("feat.*.*", "sig.fast.*.*", "exec.fill.>", "qos.*"),
    "qos": (
        "sig.fast.*.*",
        "feat.*.*",
        "exec.fill.>",
        "order.denied.>",
        "news.sentiment.>",
        "sig.ext.*",
        "ctl.config.>",
        "sig.policy.*",
    ),
    "risk": (
        "md.quote.>",
        "md.status",
        "feat.*.*",
        "sig.fast.>",
        "exec.>",
        "ctl.>",
        "order.intent.>",
        "risk.state",
        "broker.whatif",
        "hb.*",  # the on-prem gate hears the hub's services (risk.hub_services)
    ),
    "execution": ("md.>", "ctl.>", "order.approved.>", "tca.feedback.>", "exec.position", "broker.whatif"),
    "tca": ("md.quote.>", "md.status", "order.>", "exec.>"),
    "sentiment": ("news.raw",),
    "alerts": ("alert.>", "hb.>", "feat.*.*", "risk.state", "exec.position", "exec.order.*", "ack.*"),
    "control": READ_ALL,
}
# Who may publish on the shared subjects beyond its own: operator commands (ctl.*) from the
# control API, the Telegram desk (alerts) and the CLI's operator user, and from execution ctl.kill
# alone (the panic file's kill, so the risk gate hears it); headlines (news.raw) from the
# md-gateway's replays and IB news, and the sentiment service's webhook.
SHARED_PUBLISHERS: dict[str, tuple[str, ...]] = {
    "control": ("ctl.>",),
    "alerts": ("ctl.*",),
    "execution": ("ctl.kill",),
    "md-gateway": ("news.raw",),
    "sentiment": ("news.raw",),
}


# Scaling by subject partition on the server (docs/ARCHITECTURE.md, Scaling): with N > 1
# partitions, NATS maps each of these symbol-keyed core subjects to one with the symbol's
# partition after the first token: md.quote.IBM -> md.2.quote.IBM (``partition(N, symbol)``, the
# hash of libs/common/partition.py). A replica of a partitioned service then subscribes to its
# own partitions only (md.2.> is all of partition 2's market data on one subscription, so in the
# publisher's order), and everyone else to every partition (NatsBus does both; handlers see the
# catalog's subject). JetStream subjects (fills, denials, sentiment) are few and stay whole: a
# replica filters them by symbol itself.
PARTITION_KEYED: tuple[str, ...] = (
    "md.quote.{symbol}",
    "md.trade.{symbol}",
    "md.depth.{symbol}",
    "md.bar.{timeframe}.{symbol}",
    "feat.{timeframe}.{symbol}",
    "sig.fast.{horizon}.{symbol}",
    "sig.ext.{symbol}",
    "sig.policy.{symbol}",
    "qos.{symbol}",
)
PARTITIONED_SERVICES: tuple[str, ...] = ("features", "fastlane", "qos", "policy")
# How a client learns the server's partition count (NATS has no API for its mappings): the
# server maps this subject to PARTITIONS_PROBE.N; without a mapping it arrives unchanged (N = 1).
PARTITIONS_PROBE = "tf.partitions"


def _with_partition(tokens: list[str] | tuple[str, ...], partition: str) -> str:
    return ".".join([tokens[0], partition, *tokens[1:]])


def partition_mappings(count: int) -> dict[str, str]:
    """The server's ``mappings`` block for ``count`` partitions (with 1, only the probe's)."""
    out = {PARTITIONS_PROBE: f"{PARTITIONS_PROBE}.{count}"}
    if count <= 1:
        return out
    for template in PARTITION_KEYED:
        entry = SPEC_BY_TEMPLATE[template]
        wild = [i for i, t in enumerate(entry.tokens) if t.startswith("{")]
        dest = list(entry.tokens)
        for n, i in enumerate(wild, start=1):
            dest[i] = f"{{{{wildcard({n})}}}}"
        symbol_wildcard = wild.index(entry.tokens.index("{symbol}")) + 1
        out[entry.wildcard] = _with_partition(dest, f"{{{{partition({count},{symbol_wildcard})}}}}")
    return out


def _keyed(entry: SubjectSpec) -> bool:
    return entry.template in PARTITION_KEYED


def _intersect(pattern: str, entry: SubjectSpec) -> list[str]:
    """The subjects of ``entry`` that ``pattern`` matches, as pattern tokens (both may have
    wildcards; the caller knows they overlap)."""
    tokens = pattern.split(".")
    out = []
    for i, theirs in enumerate(entry.tokens):
        mine = tokens[i] if i < len(tokens) else ">"
        if mine == ">":
            out += ["*" if t.startswith("{") else t for t in entry.tokens[i:]]
            break
        out.append("*" if mine == "*" and theirs.startswith("{") else (mine if mine != "*" else theirs))
    return out


def partitioned_patterns(pattern: str, partitions: int, owned: frozenset[int] | None) -> tuple[str, ...]:
    """What to subscribe to for ``pattern`` on a server mapping ``partitions`` partitions.
    ``owned``: a partitioned replica's own (None: every partition). A pattern that already
    matches the mapped subjects (md.>) stays one subscription, so its order is kept; a replica's
    ``HEAD.>`` becomes one ``HEAD.P.>`` per owned partition (and the head's unkeyed subjects)."""
    if partitions <= 1:
        return (pattern,)
    entries = [e for e in CATALOG if overlaps(pattern, e)]
    keyed = [e for e in entries if _keyed(e)]
    if not keyed:
        return (pattern,)
    parts = ["*"] if owned is None else [str(p) for p in sorted(owned)]
    if owned is None and all(covers(pattern, _with_partition(e.wildcard.split("."), "*")) for e in keyed):
        return (pattern,)
    out: list[str] = []
    head = pattern.split(".")
    if len(head) == 2 and head[1] == ">":
        out += [f"{head[0]}.{p}.>" for p in parts]
    else:
        out += [_with_partition(_intersect(pattern, e), p) for e in keyed for p in parts]
    out += [".".join(_intersect(pattern, e)) for e in entries if not _keyed(e)]
    return tuple(dict.fromkeys(out))


@functools.lru_cache(maxsize=65536)
def unmapped(subject: str) -> str:
    """The catalog's subject of one the server mapped to a partition (md.2.quote.IBM ->
    md.quote.IBM); any other subject as it is."""
    tokens = subject.split(".")
    if len(tokens) > 2 and tokens[1].isdigit() and resolve(subject) is None:
        plain = ".".join([tokens[0], *tokens[2:]])
        found = resolve(plain)
        if found is not None and _keyed(found):
            return plain
    return subject


class UnknownSubject(ValueError):
    """A subject or event type outside the catalog: a programming error, raised where it is made."""


def _emitted_by_type() -> dict[type[Event], tuple[SubjectSpec, Callable[[Event], tuple[str, ...]]]]:
    """Each event type that one catalog entry carries, with what reads its subject's tokens from
    an event (entries whose tokens are not fields of the type, such as a request's reply subject,
    are published by subject only)."""
    entries: dict[type[Event], list[SubjectSpec]] = {}
    for entry in CATALOG:
        for kind in entry.event_types if not entry.by_subject_only else ():
            entries.setdefault(kind, []).append(entry)
    out: dict[type[Event], tuple[SubjectSpec, Callable[[Event], tuple[str, ...]]]] = {}
    for kind, found in entries.items():
        names = [t[1:-1] for t in found[0].tokens if t.startswith("{")]
        if len(found) != 1 or not set(names) <= set(kind.__struct_fields__):
            continue
        getter = operator.attrgetter(*names) if names else (lambda _: ())
        out[kind] = (found[0], (lambda e, g=getter: (g(e),)) if len(names) == 1 else getter)  # type: ignore[misc]
    return out


_EMITTED = _emitted_by_type()
_SUBJECT_CACHE: dict[tuple[type[Event], tuple[str, ...]], str] = {}


def subject_of(event: Event) -> str:
    """The concrete subject an event is published on, from the catalog entry of its type and the
    event's own fields (md.quote.{symbol} <- quote.symbol): no runtime formats a subject by hand.
    Cached per type and token values (called for every event a service emits)."""
    kind = type(event)
    try:
        entry, tokens_of = _EMITTED[kind]
    except KeyError:
        raise UnknownSubject(
            f"{kind.__name__} has no single catalog subject to emit on (proto/subjects.py); publish "
            "it on an explicit subject"
        ) from None
    tokens = tokens_of(event)
    key = (kind, tokens)
    subject = _SUBJECT_CACHE.get(key)
    if subject is None:
        names = [t[1:-1] for t in entry.tokens if t.startswith("{")]
        subject = _SUBJECT_CACHE[key] = entry.subject(**dict(zip(names, tokens, strict=True)))
    return subject


def overlaps(pattern: str, entry: SubjectSpec) -> bool:
    """Can a subscription on ``pattern`` (NATS wildcards) receive subjects of ``entry``?"""
    tokens = pattern.split(".")
    for i, tok in enumerate(tokens):
        if tok == ">":
            return len(entry.tokens) > i
        if i >= len(entry.tokens):
            return False
        theirs = entry.tokens[i]
        if tok != "*" and not theirs.startswith("{") and tok != theirs:
            return False
    return len(tokens) == len(entry.tokens)


def types_on(pattern: str) -> frozenset[type[Event]]:
    """Every event type a subscription on ``pattern`` can receive, by the catalog."""
    return frozenset(t for entry in CATALOG if overlaps(pattern, entry) for t in entry.event_types)


@functools.lru_cache(maxsize=65536)
def covers(broad: str, narrow: str) -> bool:
    """Does every subject ``narrow`` can match also match ``broad``? (NATS wildcards: * one
    token, > the rest)"""
    b, n = broad.split("."), narrow.split(".")
    for i, tok in enumerate(b):
        if tok == ">":
            return i < len(n)
        if i >= len(n) or n[i] == ">":
            return False
        if tok != "*" and tok != n[i]:
            return False
    return len(b) == len(n)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard semantics: '*' one token, '>' one or more trailing tokens."""
    p_tokens, s_tokens = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p_tokens):
        if tok == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens) or (tok != "*" and tok != s_tokens[i]):
            return False
    return len(p_tokens) == len(s_tokens)


@functools.lru_cache(maxsize=65536)
def resolve(subject: str) -> SubjectSpec | None:
    """The catalog entry of a concrete subject (cached: called on every message)."""
    for spec in CATALOG:
        if spec.matches(subject):
            return spec
    return None


def spec(template: str) -> SubjectSpec:
    return SPEC_BY_TEMPLATE[template]


def stream_of_pattern(pattern: str) -> str | None:
    """The JetStream stream holding every subject a pattern (wildcards allowed) can match, or
    None for core subjects."""
    probe = pattern.replace(">", "x").replace("*", "x")
    for st in STREAMS:
        if any(s == pattern or subject_matches(s, probe) for s in st.subjects):
            return st.name
    return None


def catalog_as_dict() -> dict[str, object]:
    """The catalog in plain data, for JSON export and non-Python consumers."""
    return {
        "subjects": [
            {
                "subject": s.template,
                "pattern": s.wildcard,
                "events": [t.__name__ for t in s.event_types],
                "transport": s.transport.value,
                "stream": s.stream,
                "producer": s.producer,
                "description": s.description,
            }
            for s in CATALOG
        ],
        "streams": [
            {
                "name": st.name,
                "subjects": list(st.subjects),
                "max_age_s": st.max_age_s,
                "duplicate_window_s": st.duplicate_window_s,
                "storage": st.storage,
            }
            for st in STREAMS
        ],
        "services": [
            {
                "name": s.name,
                "role": s.role,
                "since_issue": s.since_issue,
                "spine": s.spine,
                "lockstep": s.lockstep,
            }
            for s in SERVICES
        ],
    }
