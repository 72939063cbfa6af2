"""Fuzzing every subject each service consumes (issue 21): random bytes, msgpack of any shape,
events of a type the subject never carries, boundary values, far timestamps. The service must stay
up and ready, and every message must be accounted for: a refused one counted by its reason and
dead-lettered on dlq.SERVICE (and found on the DLQ stream), an accepted one handled without an
exception, no background task of the service dead.

Each service runs once per test, in process (its real app on a real ``Runtime`` and its own NATS,
in a thread of its own), and hypothesis sends it one message at a time, waiting after each until
the service is quiet (``NatsBus.quiet``, the lockstep replay's check: nothing in hand, queued,
pending or unacknowledged) before it compares the counters with what the message should have
done. What the bus must do with a message is worked out here from the catalog, independently of
the bus's code (``expected``).

What a service consumes is not listed here: it is recorded from its bus while its app starts
(every ``subscribe`` and ``serve``), so a subscription added later is fuzzed without a change
here; the catalog (proto/subjects.py) then gives the concrete subjects and the event types each
carries.

Far timestamps: an event stamped more than ``FAR_FUTURE_NS`` ahead of the wall clock is refused
by the bus (far_timestamp). One stamped far in the past (1970) is accepted: replays and late
reports are old on purpose (the simulated venue stamps its reports with market time, 0 before
any market data), and each core judges an age itself (a stale intent, an expired command); its
handler must take it without failing."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import threading
import time
import urllib.request
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi
import nats
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from libs.common import codec
from libs.common.bus import Handler, Responder, Subscription
from libs.common.config import Settings, load_settings
from libs.common.localinfra import NatsServer, start_nats
from libs.common.nats_bus import FAR_FUTURE_NS, NatsBus
from libs.common.runtime import NOTHING_IN_HAND, Runtime, ServiceApp
from libs.common.storage.migrate import migrate
from proto.base import Event
from proto.events import EVENT_TYPES, Batch
from proto.market import DepthUpdate
from proto.subjects import (
    CATALOG,
    SERVICES,
    SubjectSpec,
    Transport,
    resolve,
    stream_of_pattern,
    subject_matches,
)
from tests.conftest import SAMPLE_LEAN
from tests.helpers import REPO, SHARED_CACHES
from tests.kit.clocks import OPEN
from tests.kit.samples import sample_events
from tests.kit.stubs import TEST_APPROVAL_KEY
from tradefleet.services import BATCHING, RUNNABLE

T = TypeVar("T")

# Messages per subject a service consumes, within bounds (the policy service's 6 subjects get 60,
# the recorder's 41 get 200): a message costs about 20 ms, a service a few seconds.
EXAMPLES_PER_SUBJECT, MIN_EXAMPLES, MAX_EXAMPLES = 8, 60, 200

# A fixed profile: the same examples on every run (derandomized), no example database, no
# per-example deadline (a durable round trip is milliseconds, a retried handler seconds), and no
# shrinking: a failing example can cost a timeout each time it is tried again, and the first one
# found is printed whole (its target and its payload).
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=MIN_EXAMPLES,  # per service: EXAMPLES_PER_SUBJECT
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=False,
    phases=(Phase.explicit, Phase.generate),
    report_multiple_bugs=False,  # the first failure ends it (each can cost a timeout)
)

# Every service of the catalog this build runs: none needs the outside world. The md-gateway
# replays the shipped sample day (it subscribes only in a lockstep replay, so it runs one that
# waits for itself), execution trades on the simulated venue, the recorder writes to the tests'
# PostgreSQL.
FUZZED = [s.name for s in SERVICES if s.name in RUNNABLE]

# -- values ---------------------------------------------------------------------------------------
I64_MIN, U64_MAX = -(2**63), 2**64 - 1  # what msgpack carries
Y2100 = 4_102_444_800 * 10**9
EDGE_INTS = [0, 1, -1, 2**31, 2**53 + 1, 2**62, 2**63 - 1, 2**63, U64_MAX, I64_MIN]
NAN, INF = float("nan"), float("inf")
EDGE_FLOATS = [0.0, -0.0, -1.0, 5e-324, 1e-9, 1e9, 1.7976931348623157e308, INF, -INF, NAN]
EDGE_STRS = ["", " ", "x" * 10_000, "\x00", "A\tB", "*", "IBM", "BRK.B", "md.>", "ÎBM", "\U0001f4c8"]
FAR_PAST = [0, 1, 86_400 * 10**9]  # the epoch, and its next day
FAR_FUTURE = [Y2100, 2**62, 2**63 - 1, 2**63, U64_MAX]

scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(I64_MIN, U64_MAX),
    st.sampled_from(EDGE_INTS),
    st.floats(),
    st.sampled_from(EDGE_FLOATS),
    st.text(max_size=12),
    st.sampled_from(EDGE_STRS),
    st.binary(max_size=12),
)
anything: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=16,
)


def _within(v: float, t: mi.IntType | mi.FloatType) -> bool:
    return (
        (t.gt is None or v > t.gt)
        and (t.ge is None or v >= t.ge)
        and (t.lt is None or v < t.lt)
        and (t.le is None or v <= t.le)
    )


def valid_values(t: mi.Type, name: str = "") -> st.SearchStrategy[Any]:
    """Values the decoder accepts for a field of this type (its constraints kept), the boundary
    values among them as often as the rest; stamps of the sample day (far ones are a case of
    their own)."""
    if isinstance(t, mi.IntType):
        if name.startswith("ts_"):
            return st.integers(OPEN, OPEN + 7 * 3600 * 10**9)
        lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else I64_MIN)
        hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else U64_MAX)
        ints = [v for v in EDGE_INTS if lo <= v <= hi] or [lo]
        return st.one_of(st.sampled_from(ints), st.integers(lo, hi))
    if isinstance(t, mi.FloatType):
        unbounded = all(b is None for b in (t.gt, t.ge, t.lt, t.le))
        floats = st.floats(
            min_value=t.ge if t.ge is not None else t.gt,
            max_value=t.le if t.le is not None else t.lt,
            exclude_min=t.gt is not None,
            exclude_max=t.lt is not None,
            allow_nan=unbounded,
            allow_infinity=unbounded,
        )
        edge_floats = [v for v in EDGE_FLOATS if (unbounded if math.isnan(v) else _within(v, t))]
        return st.one_of(st.sampled_from(edge_floats), floats) if edge_floats else floats
    if isinstance(t, mi.StrType):
        if t.pattern is not None:
            return st.from_regex(t.pattern, fullmatch=True)
        shortest, longest = t.min_length or 0, t.max_length
        edge_strs = [s for s in EDGE_STRS if shortest <= len(s) <= (longest or len(s))]
        text = st.text(min_size=shortest, max_size=min(longest or 24, 24))
        return st.one_of(st.sampled_from(edge_strs), text) if edge_strs else text
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.BytesType):
        return st.binary(min_size=t.min_length or 0, max_size=min(t.max_length or 24, 24))
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.ListType):
        most = min(t.max_length or 4, 4)
        return st.lists(valid_values(t.item_type), min_size=t.min_length or 0, max_size=most)
    if isinstance(t, mi.DictType):
        return st.dictionaries(valid_values(t.key_type), valid_values(t.value_type), max_size=3)
    if isinstance(t, mi.UnionType):
        return st.one_of([valid_values(x, name) for x in t.types])
    if isinstance(t, mi.StructType):
        return struct_values(t)
    return anything


def struct_values(t: mi.StructType) -> st.SearchStrategy[Any]:
    """A struct as it travels: an array (tag first) or a map, of valid values."""
    fields = [valid_values(f.type, f.name) for f in t.fields]
    if t.array_like:
        head = [t.tag] if t.tag is not None else []
        return st.tuples(*fields).map(lambda vs: [*head, *vs])
    names = [f.encode_name for f in t.fields]
    return st.tuples(*fields).map(lambda vs: dict(zip(names, vs, strict=True)))


INFO: dict[type[Event], Any] = {kind: mi.type_info(kind) for kind in EVENT_TYPES}
# Real-looking events to start from (tests.kit.samples): their fields reach deeper into handlers.
SAMPLES = {type(e): msgspec.msgpack.decode(codec.encode(e)) for e in sample_events() if type(e) in INFO}


def _repaired(kind: type[Event], wire: list[Any]) -> list[Any]:
    """The invariants the decoder checks beyond field constraints (a Quote's bid <= ask; a Bar's
    low <= open, close <= high), kept most of the time so that more events reach handlers."""
    names = [f.name for f in INFO[kind].fields]
    at = {"Quote": ("bid", "ask"), "Bar": ("low", "open", "close", "high")}.get(kind.__name__, ())
    index = [names.index(n) + 1 for n in at]
    with contextlib.suppress(TypeError):  # a value of another type there: refused anyway
        for i, v in zip(index, sorted(wire[i] for i in index), strict=True):
            wire[i] = v
    return wire


@st.composite
def event_wire(draw: st.DrawFn, kind: type[Event]) -> list[Any]:
    """An event of ``kind`` as its wire array: the sample event with up to three fields replaced
    by valid values (boundaries included), or one of valid values throughout."""
    info = INFO[kind]
    if kind in SAMPLES and draw(st.booleans()):
        wire = list(SAMPLES[kind])
        for i in draw(st.lists(st.integers(0, len(info.fields) - 1), max_size=3, unique=True)):
            wire[i + 1] = draw(valid_values(info.fields[i].type, info.fields[i].name))
    else:
        wire = draw(struct_values(info))
    return _repaired(kind, wire) if draw(st.integers(0, 9)) else wire


@st.composite
def broken_wire(draw: st.DrawFn, kind: type[Event]) -> list[Any]:
    """An event of ``kind`` with fields replaced by anything (another type, out of range), or cut
    short, or with fields beyond its own."""
    wire = draw(event_wire(kind))
    for i in draw(st.lists(st.integers(0, len(wire) - 1), min_size=1, max_size=3, unique=True)):
        wire[i] = draw(st.sampled_from(EDGE_INTS + EDGE_FLOATS + EDGE_STRS) | anything)
    cut = draw(st.sampled_from(["keep", "keep", "short", "long"]))
    if cut == "short":
        wire = wire[: draw(st.integers(0, len(wire) - 1))]
    elif cut == "long":
        wire = [*wire, *draw(st.lists(anything, min_size=1, max_size=3))]
    return wire


@st.composite
def far_wire(draw: st.DrawFn, kind: type[Event]) -> list[Any]:
    """An event of ``kind`` stamped far in the past or the future (ts_event, ts_init or both)."""
    wire = draw(event_wire(kind))
    stamp = draw(st.sampled_from(FAR_PAST + FAR_FUTURE))
    for i in draw(st.sampled_from([(1,), (2,), (1, 2)])):  # ts_event, ts_init: the first fields
        wire[i] = stamp
    return wire


def payloads(spec: SubjectSpec | None) -> st.SearchStrategy[bytes]:
    """What a broken, confused or hostile publisher could send on a subject of ``spec``."""
    carried = sorted(spec.event_types if spec else EVENT_TYPES, key=lambda k: k.__name__)
    others = sorted((k for k in EVENT_TYPES if k not in carried), key=lambda k: k.__name__)
    kinds = st.sampled_from(carried)
    tags = st.sampled_from([*sorted(k.__name__ for k in EVENT_TYPES), "Batch", "Teleport", ""])
    encode = msgspec.msgpack.encode
    garbage = st.one_of(
        st.binary(max_size=256),  # random bytes
        st.integers(1, 5_000).map(lambda n: b"\x91" * n + b"\xc0"),  # arrays nested n deep
        # a string of any bytes (UTF-8 or not) where a Quote's symbol goes
        st.binary(min_size=1, max_size=8).map(lambda raw: b"\x92\xa5Quote" + bytes([0xA0 | len(raw)]) + raw),
        anything.map(encode),  # msgpack of any shape
        st.tuples(tags, st.lists(anything, max_size=8)).map(lambda t: encode([t[0], *t[1]])),
    )
    valid = kinds.flatmap(event_wire).map(encode)  # boundary values the decoder accepts
    return st.one_of(
        garbage,
        st.sampled_from(others or carried).flatmap(event_wire).map(encode),  # not for this subject
        valid,
        valid,
        valid,
        kinds.flatmap(broken_wire).map(encode),  # values the decoder must refuse
        kinds.flatmap(far_wire).map(encode),
        st.lists(kinds.flatmap(event_wire), max_size=3).map(lambda es: encode(["Batch", es])),
    )


def _sample(kind: type[Event], **fields: Any) -> bytes:
    """The sample event of ``kind`` with ``fields`` set, as it travels."""
    wire = list(SAMPLES[kind])
    names = [f.name for f in INFO[kind].fields]
    for name, value in fields.items():
        wire[names.index(name) + 1] = value
    return msgspec.msgpack.encode(wire)


def regressions(fuzzed: list[Target]) -> list[tuple[Target, bytes]]:
    """What the fuzzing found once, sent every time (the generator may not find it again): on a
    service's first subject, a string that is not UTF-8 and arrays nested 3000 deep (each ended
    a durable consumer's pull loop: msgspec raised past the codec) and an event stamped 2100; on
    each durable subject, a batch (its consumer handled the first event and dropped the rest
    uncounted); on each subject whose events name a symbol, one with a tab in it (a subject NATS
    cannot carry: the risk gate's intent handler failed on its answer, five times, and features
    lost the other symbols' vectors of that bar close); a depth update at a negative position (the
    books of the control view and of features failed on it); a request stamped 2100."""
    out: list[tuple[Target, bytes]] = []
    plain = [t for t in fuzzed if not t.served and resolve(t.subject) is not None]
    for i, target in enumerate(plain):
        spec = resolve(target.subject)
        assert spec is not None
        kind = spec.event_types[0]
        if i == 0:
            out += [(target, b"\x92\xa5Quote\xa2\xff\xfe"), (target, b"\x91" * 3000 + b"\xc0")]
            out.append((target, _sample(kind, ts_event=Y2100)))
        if spec.transport is Transport.JETSTREAM:
            out.append((target, msgspec.msgpack.encode(["Batch", [SAMPLES[kind]]])))
        if "symbol" in kind.__struct_fields__:
            out.append((target, _sample(kind, symbol="A\tB")))
        if kind is DepthUpdate:
            out.append((target, _sample(kind, operation="UPDATE", position=-5)))
    for target in (t for t in fuzzed if t.served):
        spec = resolve(target.subject)
        assert spec is not None
        out.append((target, _sample(spec.event_types[0], ts_event=Y2100)))
    return out


# -- what a message should do ---------------------------------------------------------------------
# Why the bus refuses a message (a handler may refuse a decoded event for a reason of its own: an
# approval without a valid signature).
BUS_REASONS = frozenset(
    {codec.MALFORMED, codec.UNKNOWN_TYPE, codec.INVALID_VALUE, codec.WRONG_SUBJECT, codec.FAR_TIMESTAMP}
)


@dataclass(frozen=True)
class Expected:
    """Refused by the bus (for one of ``reasons``), or accepted: ``events`` decoded."""

    reasons: frozenset[str] = frozenset()
    events: int = 0

    @property
    def refused(self) -> bool:
        return bool(self.reasons)


def expected(subject: str, payload: bytes, served: bool = False) -> Expected | None:
    """What the bus must make of ``payload`` on ``subject``, by the catalog (None: either, for a
    stamp too near the far-future line to tell). ``served``: a request, which is one event."""
    try:
        obj = codec.decode(payload)
    except codec.DecodeFailure as failure:
        return Expected(frozenset({failure.reason}))
    except Exception:  # the codec failed on it: the bus must refuse it all the same
        return Expected(frozenset({codec.MALFORMED}))
    events: list[Event] = list(obj.events) if isinstance(obj, Batch) else [obj]
    spec = resolve(subject)
    if any(type(e) not in (spec.event_types if spec else ()) for e in events):
        return Expected(frozenset({codec.WRONG_SUBJECT}))
    durable = spec is not None and spec.transport is Transport.JETSTREAM
    if spec is None or not events or (durable and isinstance(obj, Batch)) or (served and len(events) != 1):
        return Expected(frozenset({codec.MALFORMED}))  # durable events and requests: one a message
    line = time.time_ns() + FAR_FUTURE_NS
    stamps = [ts for e in events for ts in (e.ts_event, e.ts_init)]
    if any(abs(ts - line) < 60 * 10**9 for ts in stamps):
        return None
    if any(ts > line for ts in stamps):
        return Expected(frozenset({codec.FAR_TIMESTAMP}))
    return Expected(events=len(events))


# -- what a service consumes ----------------------------------------------------------------------
@dataclass(frozen=True)
class Consumed:
    """A subscription or a responder the service made."""

    pattern: str
    durable: bool = False
    served: bool = False


class RecordingBus(NatsBus):
    """The real bus, noting what the service consumes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumed: list[Consumed] = []

    async def subscribe(self, pattern: str, handler: Handler, **kwargs: Any) -> Subscription:
        sub = await super().subscribe(pattern, handler, **kwargs)
        self.consumed.append(Consumed(pattern, durable=kwargs.get("durable") is not None))
        return sub

    async def serve(self, subject: str, responder: Responder) -> Subscription:
        sub = await super().serve(subject, responder)
        self.consumed.append(Consumed(subject, served=True))
        return sub


TOKENS = {
    "symbol": "FZ",
    "timeframe": "1m",
    "horizon": "5m",
    "severity": "warning",
    "command": "set_mode",
    "section": "risk",
    "service": "fuzz",
}


def concrete(pattern: str, entry: SubjectSpec) -> str | None:
    """A subject of ``entry`` that ``pattern`` matches (None: none does)."""
    mine = pattern.split(".")
    out = []
    for i, theirs in enumerate(entry.tokens):
        token = mine[i] if i < len(mine) and ">" not in mine[:i] else ">"
        if theirs.startswith("{"):
            out.append(token if token not in ("*", ">") else TOKENS[theirs[1:-1]])
        else:
            out.append(theirs)
    subject = ".".join(out)
    return subject if subject_matches(pattern, subject) and resolve(subject) is entry else None


@dataclass(frozen=True)
class Target:
    subject: str
    deliveries: int  # how many of the service's subscriptions receive it
    durable: bool  # one of them is a JetStream consumer
    served: bool  # a request/reply subject the service answers


def targets(consumed: list[Consumed]) -> list[Target]:
    """Every subject the service hears: one per catalog entry its patterns match, one beyond the
    catalog under each ``>``, and what it serves."""
    subjects: dict[str, None] = {}
    for c in consumed:
        if c.served:
            subjects[c.pattern] = None
            continue
        for entry in CATALOG:
            if (subject := concrete(c.pattern, entry)) is not None:
                subjects[subject] = None
        if c.pattern.endswith(">"):
            subjects[c.pattern[:-1] + "fuzz.off.catalog"] = None
    out = []
    for subject in subjects:
        subs = [c for c in consumed if not c.served and subject_matches(c.pattern, subject)]
        served = any(c.served and c.pattern == subject for c in consumed)
        out.append(Target(subject, len(subs), any(c.durable for c in subs), served))
    return out


# -- the service under test -----------------------------------------------------------------------
def fuzz_settings(nats_url: str, tmp: Path, db_url: str | None) -> Settings:
    return load_settings(
        None,
        # nats.sync: the service counts what it handled and answers sync.SERVICE, as a lockstep
        # replay needs; here it tells when a message is done with.
        nats={"url": nats_url, "sync": True},
        http={"port": 0},
        db={"url": db_url} if db_url else {},
        md_gateway={
            "replay": {"root": str(SAMPLE_LEAN), "news": [], "limit": 500, "lockstep": ["md-gateway"]}
        },
        execution={"journal": str(tmp / "journal.msgpack"), "account": f"SIM-{uuid.uuid4().hex[:6]}"},
        recorder={"flush_interval_ms": 20, "spill_dir": str(tmp / "spill")},
        fastlane={"compile_cache": SHARED_CACHES["TRADEFLEET_FASTLANE__COMPILE_CACHE"]},
        sentiment={"cache": SHARED_CACHES["TRADEFLEET_SENTIMENT__CACHE"]},
        market={"cache": SHARED_CACHES["TRADEFLEET_MARKET__CACHE"]},
        signing={"approval_key": TEST_APPROVAL_KEY},
        control={"port": 0},
    )


@dataclass
class Counts:
    handled: int
    dropped: dict[str, int]
    dead_letters: int
    handler_errors: int
    received: int

    def minus(self, other: Counts) -> Counts:
        reasons = set(self.dropped) | set(other.dropped)
        return Counts(
            self.handled - other.handled,
            {r: n for r in reasons if (n := self.dropped.get(r, 0) - other.dropped.get(r, 0))},
            self.dead_letters - other.dead_letters,
            self.handler_errors - other.handler_errors,
            self.received - other.received,
        )


def _ours(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    where = code.co_filename if code is not None else ""
    return where.startswith(str(REPO)) and not where.startswith(str(REPO / ".venv"))


class Fuzzed:
    """One service on its own NATS, run in a thread's event loop; the test's thread drives it."""

    def __init__(self, name: str, tmp: Path, db_url: str | None = None) -> None:
        self.name, self.tmp, self.db_url = name, tmp, db_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"fuzz-{name}", daemon=True)
        self.server: NatsServer | None = None
        self.rt: Runtime | None = None
        self.app: ServiceApp | None = None
        self.task: asyncio.Task[int] | None = None
        self.bus: RecordingBus | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.feeder: Any = None
        self.js: Any = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> Fuzzed:
        self.server = start_nats(self.tmp / "nats")  # its own JetStream: no other test's streams
        self.thread.start()
        try:
            self.call(self._start())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        try:
            with contextlib.suppress(Exception):
                self.call(self._stop(), 60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()
            if self.server is not None:
                self.server.stop()

    async def _start(self) -> None:
        assert self.server is not None
        settings = fuzz_settings(self.server.url, self.tmp, self.db_url)
        if self.db_url:
            migrate(self.db_url, settings.db)
        self.bus = RecordingBus(settings.nats, self.name, batching=self.name in BATCHING)
        self.rt = rt = Runtime(self.name, settings, bus=self.bus)
        self.app = RUNNABLE[self.name](settings)
        self.task = asyncio.create_task(rt.run(self.app, install_signals=False))
        deadline = time.monotonic() + 120
        while not rt.ready:
            assert not self.task.done(), self.task.exception()
            assert time.monotonic() < deadline, f"{self.name} not ready"
            await asyncio.sleep(0.02)
        # Some consumers start after ready (the recorder's durable ones wait for the database's
        # offsets): all are there once none has come for a while.
        seen, still = len(self.bus.consumed), time.monotonic()
        while time.monotonic() - still < 0.5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if len(self.bus.consumed) != seen:
                seen, still = len(self.bus.consumed), time.monotonic()
        self.feeder = await nats.connect(self.server.url)
        self.js = self.feeder.jetstream()
        # What our code runs in the background from now on (pull loops, flushers, timers): none
        # of it may end in an exception while the service runs. (The client library's own short
        # tasks, a fetch's timer, end in timeouts all the time.)
        self.tasks = {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and _ours(t)}

    async def _stop(self) -> None:
        if self.feeder is not None:
            await self.feeder.close()
        if self.rt is not None and self.task is not None and not self.task.done():
            self.rt.request_stop()
            await asyncio.wait_for(self.task, 30)

    # -- reading the service ----------------------------------------------------------------------
    def counts(self) -> Counts:
        assert self.rt is not None and self.bus is not None
        errors = sum(
            s.value
            for m in self.rt.metrics.handler_errors.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
        return Counts(
            self.bus.handled,
            self.rt.metrics.dropped_by_reason(),
            self.rt.status()["dead_letters"],
            int(errors),
            sum(self.rt.metrics.received.values()),
        )

    def running(self) -> None:
        """The runtime runs and says it is ready, and no background task of ours has failed."""
        assert self.rt is not None and self.task is not None
        assert not self.task.done(), self.task.exception() if not self.task.cancelled() else "cancelled"
        assert self.rt.ready, f"{self.name} no longer ready"
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"{self.name}: {task!r} failed: {task.exception()!r}")

    def alive(self) -> None:
        """Running, and /readyz says so."""
        self.running()
        assert self.rt is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.rt.http_port}/readyz", timeout=5) as resp:
            assert resp.status == 200

    async def max_payload(self) -> int:
        return int(self.feeder.max_payload)

    async def dead_letters_stored(self) -> int:
        info = await self.js.stream_info("DLQ", subjects_filter=f"dlq.{self.name}")
        return int((info.state.subjects or {}).get(f"dlq.{self.name}", 0))

    # -- feeding it -------------------------------------------------------------------------------
    async def feed(self, target: Target, payload: bytes, want: Expected | None) -> tuple[Counts, bool]:
        """Send one message and wait until the service is done with it: what it changed, and
        whether a request was answered."""
        before = self.counts()
        answered = False
        if target.served:
            wait = 0.05 if want is None or want.refused else 2.0
            with contextlib.suppress(nats.errors.TimeoutError, nats.errors.NoRespondersError):
                await self.feeder.request(target.subject, payload, timeout=wait)
                answered = True
        elif stream_of_pattern(target.subject) is not None:
            await self.js.publish(target.subject, payload)  # stored: its durable consumers get it
        else:
            await self.feeder.publish(target.subject, payload)
            await self.feeder.flush()

        def counted(now: Counts) -> bool:
            if target.served:  # a responder's work is not counted as handled
                return answered or sum(now.dropped.values()) >= 1 or now.handler_errors >= 1
            refused = want is not None and want.refused
            enough = sum(now.dropped.values()) >= target.deliveries if refused else True
            return now.handled >= target.deliveries and enough

        deadline = time.monotonic() + 20
        while True:  # polled: the counters are plain numbers, nothing to wait on
            if counted(self.counts().minus(before)) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.001)
        await self._quiet()
        return self.counts().minus(before), answered

    async def _quiet(self, timeout: float = 6.0) -> None:
        """Twice in a row nothing in hand, queued, pending or unacknowledged (nothing moved in
        between), and nothing held by the app."""
        assert self.bus is not None and self.app is not None
        deadline = time.monotonic() + timeout
        streak = 0
        while streak < 2:
            quiet, detail = await self.bus.quiet()
            streak = streak + 1 if quiet and not self.app.busy() else 0
            assert time.monotonic() < deadline, f"{self.name} never quiet: {detail or 'the app is busy'}"
            if not streak:
                await asyncio.sleep(0.002)


# -- the test -------------------------------------------------------------------------------------
def check(target: Target, want: Expected | None, got: Counts, answered: bool) -> str:
    """What the message came to ("accepted", or the reasons it was refused for); fails when the
    service did not do with it what it should have."""
    where = f"on {target.subject}: {got}"
    assert got.handler_errors == 0, f"a handler failed {where}"
    kept = sum(n for r, n in got.dropped.items() if r not in NOTHING_IN_HAND)
    if not target.subject.startswith("dlq."):  # a refused dead letter is not dead-lettered again
        assert got.dead_letters == kept, f"refused but not dead-lettered {where}"
    if want is None:
        return "either"
    deliveries = 1 if target.served else target.deliveries
    if want.refused:
        assert set(got.dropped) <= want.reasons, f"refused as {got.dropped}, expected {want} {where}"
        assert sum(got.dropped.values()) == deliveries, f"not refused once a delivery {where}"
        return "/".join(sorted(got.dropped))
    assert not set(got.dropped) & BUS_REASONS, f"refused, expected accepted {where}"
    assert got.received >= want.events * deliveries, f"accepted but not received {where}"
    if target.served:
        assert answered or got.dropped, f"a request accepted, neither answered nor refused {where}"
    return "accepted"


@pytest.mark.parametrize("name", FUZZED)
def test_fuzzed_input_never_stops_a_service_and_every_message_is_accounted_for(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db_url = request.getfixturevalue("pg_dsn") if name == "recorder" else None
    with Fuzzed(name, tmp_path, db_url) as svc:
        assert svc.bus is not None
        fuzzed = targets(svc.bus.consumed)
        assert fuzzed, f"{name} consumes nothing"
        outcomes: collections.Counter[str] = collections.Counter()
        examples = min(MAX_EXAMPLES, max(MIN_EXAMPLES, EXAMPLES_PER_SUBJECT * len(fuzzed)))

        messages = st.sampled_from(fuzzed).flatmap(
            lambda t: st.tuples(st.just(t), payloads(resolve(t.subject)))
        )

        @settings(FUZZ, max_examples=examples)
        @given(messages)
        def one_message(message: tuple[Target, bytes]) -> None:
            target, payload = message
            want = expected(target.subject, payload, target.served)
            got, answered = svc.call(svc.feed(target, payload, want))
            outcomes[check(target, want, got, answered)] += 1
            svc.running()

        for case in regressions(fuzzed):  # first, then the generated ones
            one_message = example(case)(one_message)
        one_message()
        # Refused bytes as many as the server takes: their dead letter must still fit.
        target = next(t for t in fuzzed if not t.served and not t.subject.startswith("dlq."))
        huge = b"\xc1" * (svc.call(svc.max_payload()) - 64)
        got, _ = svc.call(svc.feed(target, huge, expected(target.subject, huge)))
        assert check(target, expected(target.subject, huge), got, False) == codec.MALFORMED
        svc.alive()
        assert svc.call(svc.dead_letters_stored()) == svc.counts().dead_letters  # each one kept
        # The generators reach both sides: events the handlers take, and refusals.
        print(f"{name}: {len(fuzzed)} subjects, {examples} messages, {dict(outcomes)}")
        assert outcomes["accepted"] > 0 and sum(outcomes.values()) > outcomes["accepted"], outcomes
