"""Typed, validated configuration: a YAML file, then TRADEFLEET_* environment variables on top.

A bad configuration stops start-up with one message that lists every problem.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import math
import os
import ssl
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from proto.orders import RiskMode
from proto.subjects import stream_of_pattern

ENV_PREFIX = "TRADEFLEET_"


def _sexagesimal(value: Any) -> Any:
    """YAML 1.1 reads an unquoted 15:30 as the base-60 number 930 (09:30 stays a string, having a
    leading zero): give such a wall time back its HH:MM."""
    return f"{value // 60:02d}:{value % 60:02d}" if isinstance(value, int) and value >= 0 else value


# A New York wall time, HH:MM (written unquoted in YAML or not).
WallTime = Annotated[
    str, BeforeValidator(_sexagesimal), StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
]
# Short, documented aliases for the two settings everyone sets.
ENV_ALIASES = {"TRADEFLEET_DB_URL": ("db", "url"), "TRADEFLEET_NATS_URL": ("nats", "url")}


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NatsSettings(Section):
    url: str = "nats://127.0.0.1:4222"
    connect_timeout_s: float = Field(5.0, gt=0)
    reconnect_wait_s: float = Field(0.5, gt=0)
    max_reconnect_attempts: int = -1  # -1: forever; a trading service never gives up on its bus
    batch_max: int = Field(256, ge=1, le=10_000)
    batch_linger_ms: float = Field(2.0, ge=0)
    publish_retries: int = Field(5, ge=0)
    # Answer a lockstep replay's "are you quiet?" on sync.SERVICE (tradefleet up --lockstep).
    sync: bool = False
    # This service's nkey seed (`tradefleet nats config` writes one per service): its identity on
    # a bus with users and permissions. Then streams are the provisioner's (`tradefleet nats
    # provision`) and a service only checks that they exist; without a seed it creates them.
    nkey_seed_file: Path | None = None
    # How many servers keep each stream (a JetStream cluster: 3); `tradefleet nats provision`.
    stream_replicas: int = Field(1, ge=1, le=5)
    # TLS to the server: the CA that signed its certificate (and this client's certificate and
    # key when the server asks for one). Any of them turns TLS on (tls:// URLs do too).
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # The JetStream domain of the server holding the streams (a hybrid site's cloud hub, whose
    # nats.conf says `jetstream { domain: ... }`): a service on a leaf node without JetStream
    # reaches the hub's streams through it ($JS.DOMAIN.API). None: the server's own.
    js_domain: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$")

    def tls_context(self) -> ssl.SSLContext | None:
        """The client's TLS context, or None when no TLS file is configured."""
        if not (self.tls_ca_file or self.tls_cert_file):
            return None
        context = ssl.create_default_context(cafile=str(self.tls_ca_file) if self.tls_ca_file else None)
        if self.tls_cert_file:
            key = str(self.tls_key_file) if self.tls_key_file else None
            context.load_cert_chain(str(self.tls_cert_file), key)
        return context

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        for part in url.split(","):
            if not part.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError("must start with nats://, tls://, ws:// or wss://")
        return url


class TableStorageSettings(Section):
    """Retention and compression of one time-series table (``db.tables.NAME``), both measured
    from when the data was written (a chunk's or day partition's creation), never from its event
    time: a replayed 2013 day is kept as long as a live one. None: the table follows
    ``db.retention_days`` / ``db.compress_after_days``; 0: off for this table (keep forever,
    never compress) whatever those say."""

    retention_days: int | None = Field(None, ge=0)
    compress_after_days: int | None = Field(None, ge=0)


class DbSettings(Section):
    """``url`` names the server, the database and the user; the password comes from a secret file
    (``password_file``, a Kubernetes or compose secret) and TLS from libpq's ``sslmode`` with the CA
    (and a client certificate where the server asks for one). Both are folded into ``url`` once,
    here, so every connection of every service and command uses them; ``redacted`` is what to
    print.

    Retention and compression are opt-in: by default nothing is ever dropped or compressed.
    ``retention_days`` / ``compress_after_days`` set a default for every time-series table and
    ``tables`` sets them per table (see TableStorageSettings); all count from write time. They
    are applied by ``tradefleet db migrate`` (TimescaleDB policies; recorded in
    tf_storage_policies for ``tradefleet db prune``)."""

    url: str | None = None
    password_file: Path | None = None
    # verify-full: TLS, the server's certificate signed by ssl_ca_file and naming the host
    sslmode: Literal["", "disable", "prefer", "require", "verify-ca", "verify-full"] = ""
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    # auto: TimescaleDB where the extension is installed, preloaded (shared_preload_libraries) and
    # TSL-licensed, else native partitions with the reason logged; timescaledb: fail naming the
    # reason instead. Chosen once per database (tf_meta); see libs/common/storage/migrate.py.
    storage_mode: Literal["auto", "timescaledb", "native"] = "auto"
    connect_timeout_s: int = Field(3, ge=1)
    # Defaults for every time-series table, by write time; None or 0: off (the default: keep
    # everything, compress nothing). Before migration 6 these were 90 and 2 and applied to every
    # table by event time, so a replayed old day was dropped as soon as it was written.
    retention_days: int | None = Field(None, ge=0)
    compress_after_days: int | None = Field(None, ge=0)
    # Per table (quotes, trades, ..., see libs/common/storage/schema.py), over the defaults.
    tables: dict[str, TableStorageSettings] = Field(default_factory=dict)

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, tables: dict[str, TableStorageSettings]) -> dict[str, TableStorageSettings]:
        from libs.common.storage.schema import TABLES_BY_NAME

        unknown = sorted(set(tables) - set(TABLES_BY_NAME))
        if unknown:
            raise ValueError(
                f"unknown time-series table(s) {', '.join(unknown)}; known: {', '.join(TABLES_BY_NAME)}"
            )
        return tables

    def retention_for(self, table: str) -> int | None:
        """Days a table's data is kept after it was written; None: kept forever."""
        own = self.tables[table].retention_days if table in self.tables else None
        days = own if own is not None else self.retention_days
        return days or None

    def compression_for(self, table: str) -> int | None:
        """Days after it was written that a table's data is compressed; None: never."""
        own = self.tables[table].compress_after_days if table in self.tables else None
        days = own if own is not None else self.compress_after_days
        return days or None

    @model_validator(mode="after")
    def _secrets_and_tls_into_the_url(self) -> DbSettings:
        if self.sslmode.startswith("verify") and self.ssl_ca_file is None:
            raise ValueError(f"sslmode {self.sslmode} checks the server's certificate: set ssl_ca_file")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("ssl_cert_file and ssl_key_file go together (a client certificate)")
        params: dict[str, str] = {}
        if self.password_file is not None:
            try:
                params["password"] = self.password_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"password_file {self.password_file}: {exc.strerror}") from None
        if self.sslmode:
            params["sslmode"] = self.sslmode
        for key, path in (
            ("sslrootcert", self.ssl_ca_file),
            ("sslcert", self.ssl_cert_file),
            ("sslkey", self.ssl_key_file),
        ):
            if path is not None:
                params[key] = str(path)
        if params and not self.url:
            raise ValueError("password_file and ssl settings need db.url (the server and database)")
        if params and self.url:
            parts = urllib.parse.urlsplit(self.url)
            query = dict(urllib.parse.parse_qsl(parts.query))
            query.update(params)
            url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
            object.__setattr__(self, "url", url)
        return self

    def redacted(self) -> str:
        return redacted_url(self.url or "")


def redacted_url(url: str) -> str:
    """A database URL fit to print: no password, in the user part or the query."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else netloc
    query = [(k, "***" if k == "password" else v) for k, v in urllib.parse.parse_qsl(parts.query)]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=urllib.parse.urlencode(query)))


class TelemetrySettings(Section):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    tracing: Literal["off", "console", "otlp", "memory"] = "off"
    otlp_endpoint: str | None = None
    # With tracing on, 1 market-data record in every this many starts a trace at the md-gateway
    # that follows it through features to its bar's vector and on to the fill (0: none).
    trace_sample_every: int = Field(1000, ge=0)
    # Every service says it is alive this often on hb.SERVICE (0: never, e.g. in a backtest).
    heartbeat_s: float = Field(2.0, ge=0)


class HttpSettings(Section):
    host: str = "127.0.0.1"
    # 0: any free port; -1: no HTTP endpoint. In a process group (fleet.groups) each member has
    # its own endpoint: the group's Nth member (from 0) listens on port + N (0: each any free one).
    port: int = Field(0, ge=-1, le=65535)


GROUP_SEPARATOR = "+"


def group_members(name: str) -> list[str]:
    """The services of a process group's name ("features+fastlane+qos"), in its order."""
    return [m.strip() for m in name.split(GROUP_SEPARATOR)]


class FleetSettings(Section):
    """How the services are laid out in processes. ``groups``: sets of services that run in one
    process each, on the in-process bus among themselves and NATS for everything that leaves the
    group ("features+fastlane+qos+risk"; docs/ARCHITECTURE.md, Process groups). `up` starts each
    group as one process; `tradefleet service NAME` refuses a service that belongs to one."""

    groups: list[str] = Field(default_factory=list)

    @field_validator("groups")
    @classmethod
    def _groups(cls, groups: list[str]) -> list[str]:
        from proto.subjects import SERVICES

        known = {s.name for s in SERVICES}
        seen: dict[str, str] = {}
        out = []
        for group in groups:
            members = group_members(group)
            if len(members) < 2:
                raise ValueError(f"{group!r}: a group has two services or more, joined by '+'")
            if unknown := [m for m in members if m not in known]:
                raise ValueError(f"{group!r}: no such service {', '.join(unknown)} (one of {sorted(known)})")
            if len(set(members)) != len(members):
                raise ValueError(f"{group!r} names a service twice")
            for m in members:
                if m in seen:
                    raise ValueError(f"{m} is in two groups: {seen[m]!r} and {group!r}")
                seen[m] = group
            out.append(GROUP_SEPARATOR.join(members))
        return out

    def group_of(self, service: str) -> str | None:
        """The group a service runs in (None: its own process)."""
        return next((g for g in self.groups if service in group_members(g)), None)


class MarketSettings(Section):
    """The exchange calendar and the regular session every session rule reads (libs/common/
    calendar.py): the risk gate's trading window, the features' bar grid (anchored at the open, the
    close always a boundary), the protective exits' flatten before the close, and which records a
    replay or a backtest keeps. Holidays and early closes come from exchange-calendars; the hours
    below bound every session (New York time)."""

    calendar: str = "XNYS"  # an exchange-calendars name (XNYS, XNAS...), or "weekdays": no holidays
    session_start: WallTime = "09:30"
    session_end: WallTime = "16:00"
    tick_size: float = Field(0.01, gt=0)  # the price grid of limit prices the gateway makes
    cache: Path = Path("var/calendar-cache")  # the exchange's schedule, built once per library version

    @model_validator(mode="after")
    def _ordered(self) -> MarketSettings:
        if self.session_start >= self.session_end:
            raise ValueError(
                f"session_start {self.session_start} must be before session_end {self.session_end}"
            )
        return self


class CleaningSettings(Section):
    max_jump_pct: float = Field(10.0, gt=0)
    drop_suspicious: bool = True
    # A record stamped more than this outside the market clock (a replay: the replayed day; live:
    # ahead of the wall clock) is dropped as a bad tick (far_timestamp) before it touches a book.
    max_clock_skew_s: float = Field(300.0, gt=0)
    session: Literal["regular", "extended"] = "regular"


class ReplaySettings(Section):
    format: Literal["lean", "lobster"] = "lean"
    root: Path = Path("data/sample/lean")
    date: str = Field("20131008", pattern=r"^\d{8}$")  # YYYYMMDD; YYYY-MM-DD is accepted too
    symbols: list[str] = Field(default_factory=lambda: ["IBM", "BAC"], min_length=1)
    speed: float = Field(0.0, ge=0)  # 0: as fast as possible; 1: real time; 10: ten times faster
    # A paced replay (speed > 0) keeps time from this New York time on (default: the session's
    # open); what comes before it is replayed at once, so the features are warm when it starts.
    start: WallTime | None = None
    # Above speed 1, a stretch with nothing to replay is skipped when it would last longer than
    # this many seconds of wall time (a quiet lunch at 20x is not a frozen screen).
    max_quiet_s: float = Field(1.0, gt=0)
    bars: Literal["none", "minute", "second"] = "minute"  # LEAN bar files replayed beside the ticks
    limit: int | None = Field(None, ge=1)
    lobster_level: int = Field(1, ge=1, le=50)
    # News files (CSV / JSON lines, libs/common/news_file.py) replayed on news.raw
    # in time order beside the market data; only the replayed day's headlines are sent.
    news: list[Path] = Field(default_factory=lambda: [Path("data/sample/news/20131008.jsonl")])
    # Where the replay notes how far it has published (a restarted gateway resumes there instead
    # of replaying the day again; tradefleet up gives each run its own). None: no resuming.
    checkpoint: Path | None = None
    # Stop the replay at this New York time (HH:MM); the backtest cuts each day there too.
    until: WallTime | None = None
    # Lockstep: before and after each tick that starts a new second of market time (where bars
    # close and decisions happen) and each headline, wait until these services are quiet
    # (sync.SERVICE). Slower, but a replay then gives the backtest's orders and fills. Every
    # process, this gateway included, needs nats.sync (tradefleet up --lockstep sets both).
    lockstep: list[str] = Field(default_factory=list)
    # Replicas of a partitioned service in lockstep (service -> count): each answers, all wait.
    lockstep_replicas: dict[str, int] = Field(default_factory=dict)
    lockstep_timeout_s: float = Field(30.0, gt=0)
    # Paced by tick rate instead of market time (load benches): this many market-data events
    # (quotes, trades, bars) published per second of wall time, in the files' order, cleaned and
    # numbered as ever, whatever their market time; up to 1 s behind schedule it catches up, further
    # behind the schedule slips (counted in /status pace). 0: off (speed paces). Not with speed
    # above 0, nor with lockstep.
    ticks_per_s: float = Field(0.0, ge=0)
    # The day replayed this many times in one run (a sustained bench outlasts the sample day: its
    # 487k events last 49 s at 10k ticks/s). Pass k is the day's market data moved to the k-th
    # next trading day (the market clock keeps going forward), a tick session of its own, so the
    # recorder keeps every pass's ticks; headlines only in the first pass. A pass's missed ticks
    # are not sent again.
    passes: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _one_pacing(self) -> ReplaySettings:
        if self.ticks_per_s > 0 and self.speed > 0:
            raise ValueError("ticks_per_s paces the replay by tick rate: give speed 0 with it")
        if self.ticks_per_s > 0 and self.lockstep:
            raise ValueError("ticks_per_s cannot pace a lockstep replay (lockstep waits on the fleet)")
        return self

    @field_validator("date", mode="before")
    @classmethod
    def _one_day_format(cls, value: Any) -> Any:
        """YYYY-MM-DD as well as YYYYMMDD (every command takes both); YAML reads an unquoted
        2013-10-08 as a date."""
        if isinstance(value, dt.date):
            return value.strftime("%Y%m%d")
        if isinstance(value, str) and len(value) == 10 and value[4] == value[7] == "-":
            return value.replace("-", "")
        return value

    @field_validator("symbols")
    @classmethod
    def _upper(cls, symbols: list[str]) -> list[str]:
        return [s.strip().upper() for s in symbols if s.strip()]


class SyntheticSettings(Section):
    symbols: int = Field(10, ge=1, le=10_000)
    rate: float = Field(1000.0, gt=0)  # ticks per second over all symbols; 0 < rate
    duration_s: float | None = Field(None, gt=0)
    count: int | None = Field(None, ge=1)
    seed: int = 7


LIVE_PORTS = frozenset({7496, 4001})  # TWS live, IB Gateway live


class IbHistoricalSettings(Section):
    """IB's historical-data pacing rules (../shared/reference/ib-api.md, section 4): a violation is
    an identical request within ``identical_gap_s``, more than ``per_contract`` requests for one
    contract within ``per_contract_window_s``, or more than ``max_per_window`` in ``window_s``;
    at most ``max_open`` open at once. Change them only if IB changes them."""

    max_per_window: int = Field(60, ge=1)
    window_s: float = Field(600.0, gt=0)
    identical_gap_s: float = Field(15.0, ge=0)
    per_contract: int = Field(5, ge=1)  # "6 or more within 2 s" is the violation
    per_contract_window_s: float = Field(2.0, ge=0)
    max_open: int = Field(50, ge=1)
    backoff_initial_s: float = Field(15.0, gt=0)  # after IB answers 162 (pacing violation) anyway
    backoff_max_s: float = Field(600.0, gt=0)


class IbSettings(Section):
    """Interactive Brokers (docs/ARCHITECTURE.md, IB). Paper by default: a live port (7496,
    4001) is refused unless ``allow_live`` is set, on purpose, in the config."""

    host: str = "127.0.0.1"
    port: int = Field(7497, ge=1, le=65535)  # TWS paper; IB Gateway paper is 4002
    allow_live: bool = False
    connect_timeout_s: float = Field(10.0, gt=0)
    ready_timeout_s: float = Field(10.0, gt=0)  # connected until nextValidId and the accounts came
    connect_options: str = ""  # e.g. "+PACEAPI": TWS-side pacing as a backstop
    md_client_id: int = Field(11, ge=0)
    exec_client_id: int = Field(12, ge=0)  # fixed: IB binds orders to the client id that placed them
    backfill_client_id: int = Field(13, ge=0)
    reconcile_every_s: float = Field(60.0, gt=0)  # besides every (re)connect
    account: str = ""  # empty: the first managed account
    symbols: list[str] = Field(default_factory=lambda: ["IBM", "BAC"], min_length=1)
    depth_symbols: list[str] = Field(default_factory=list)
    depth_rows: int = Field(5, ge=1, le=50)
    news: bool = False  # news ticks per symbol (one line each) and IB bulletins, on news.raw
    market_data_type: Literal[1, 2, 3, 4] = 1  # live, frozen, delayed, delayed-frozen
    max_lines: int = Field(100, ge=1)
    timestamps: Literal["receive", "exchange"] = "receive"
    stale_after_s: float = Field(30.0, gt=0)
    # One bucket for everything a session sends; IB closes connections above 50 messages/s.
    max_msgs_per_s: float = Field(45.0, gt=0, le=50)
    watchdog_s: float = Field(20.0, gt=0)
    probe_timeout_s: float = Field(5.0, gt=0)
    backoff_initial_s: float = Field(0.5, gt=0)  # reconnects back off from this to backoff_max_s
    backoff_max_s: float = Field(30.0, gt=0)
    # IB's daily and weekly restarts, New York time ("HH:MM-HH:MM", or "Fri 23:00-Sat 03:00"): a
    # disconnect inside one is expected; one that outlasts it (or any beyond max_disconnect_s
    # outside them) raises an alert.
    reset_windows: list[str] = Field(default_factory=lambda: ["00:15-01:45", "Fri 23:00-Sat 03:00"])
    max_disconnect_s: float = Field(120.0, gt=0)
    historical: IbHistoricalSettings = IbHistoricalSettings()

    @model_validator(mode="after")
    def _paper_unless_opted_in(self) -> IbSettings:
        if self.port in LIVE_PORTS and not self.allow_live:
            raise ValueError(
                f"ib.port {self.port} is a live-trading port; set ib.allow_live: true to trade real money"
            )
        return self


class MdGatewaySettings(Section):
    provider: Literal["replay", "synthetic", "ib"] = "replay"
    replay: ReplaySettings = ReplaySettings()
    synthetic: SyntheticSettings = SyntheticSettings()
    cleaning: CleaningSettings = CleaningSettings()
    batching: bool = True
    exit_when_done: bool = False


class RecorderSettings(Section):
    batch_rows: int = Field(20_000, ge=1)
    flush_interval_ms: int = Field(200, ge=1)
    buffer_max_rows: int = Field(500_000, ge=1)
    max_durable_pending: int = Field(5_000, ge=1)
    spill_dir: Path = Path("var/recorder-spill")
    gil_switch_interval_s: float = Field(0.0005, gt=0, le=0.1)
    core_subjects: list[str] = ["md.quote.>", "md.trade.>", "md.bar.>", "feat.>"]
    durable_subjects: list[str] = ["order.>", "exec.>", "tca.>"]

    @field_validator("durable_subjects")
    @classmethod
    def _on_jetstream(cls, patterns: list[str]) -> list[str]:
        core = [p for p in patterns if stream_of_pattern(p) is None]
        if core:
            raise ValueError(f"not JetStream subjects (record them under core_subjects): {core}")
        return patterns


class RiskSettings(Section):
    """The risk gate's limits (services/risk/core.py applies them; each denial names its key)."""

    max_position_shares: float = Field(2_000, gt=0)
    max_position_notional: float = Field(50_000.0, gt=0)
    max_gross_exposure: float = Field(200_000.0, gt=0)
    max_net_exposure: float = Field(150_000.0, gt=0)
    max_open_orders: int = Field(20, ge=1)
    max_orders_per_minute: int = Field(30, ge=1)
    # The day's realized + unrealized P&L below -this: entries stop.
    daily_loss_limit: float = Field(2_500.0, gt=0)
    max_drawdown: float = Field(3_000.0, gt=0)  # from the day's peak P&L
    max_consecutive_losses: int = Field(4, ge=1)
    loss_cooldown_s: float = Field(900.0, ge=0)
    pdt_enabled: bool = False  # a switch: the rule's status changed in 2026
    pdt_min_equity: float = Field(25_000.0, ge=0)
    pdt_max_day_trades: int = Field(3, ge=0)  # in 5 business days, below pdt_min_equity
    account_equity: float = Field(100_000.0, gt=0)
    # buying power = equity x this - gross exposure - pending
    margin_multiplier: float = Field(2.0, gt=0, le=4)
    shortable: frozenset[str] | None = None  # None: every symbol is shortable
    ssr_symbols: frozenset[str] = frozenset()  # short-sale restriction (Rule 201) in force today
    max_limit_distance_bps: float = Field(50.0, gt=0)
    max_quote_age_ms: float = Field(5_000.0, gt=0)
    allow_symbols: frozenset[str] | None = None
    deny_symbols: frozenset[str] = frozenset()
    # Volatility-scaled sizing: an entry risks at most this many dollars at atr_stop_multiple ATRs.
    risk_per_trade: float = Field(250.0, gt=0)
    atr_stop_multiple: float = Field(2.0, gt=0)
    # Optional fractional-Kelly cap on an entry's notional, from the gate's own closed trades.
    kelly_fraction: float | None = Field(None, gt=0, le=1)
    kelly_min_trades: int = Field(20, ge=1)
    # How long an approval may wait to be sent; the execution gateway's redelivery wait for an
    # approval it fetched but never journaled is derived from it (execution.approval_ack_wait_ms).
    approval_ttl_ms: float = Field(2_000.0, gt=0)
    # An intent older than this (by its maker's clock) is history, not a decision: a new durable
    # consumer replaying a stream must never turn yesterday's intents into orders.
    max_intent_age_ms: float = Field(10_000.0, gt=0)
    initial_mode: RiskMode = "LIVE"
    # Ask the broker (IB what-if, through the execution gateway) before each entry; no answer
    # denies (MARGIN_UNKNOWN).
    broker_what_if: bool = False
    what_if_timeout_ms: float = Field(3_000.0, gt=0)
    # The on-prem gate's link to the cloud hub (a NATS leaf node): when none of these services'
    # heartbeats (hb.SERVICE) came for hub_silence_s, the hub is unreachable and the gate holds
    # DEGRADED (exits only) until one is heard again. Empty: not watched (one site).
    hub_services: list[str] = Field(default_factory=list)
    hub_silence_s: float = Field(10.0, gt=0)
    # Portfolio risk from the gate's own minute closes (services/risk/portfolio.py); each limit
    # is off until set. Statistics use the last returns_window one-minute returns; a symbol
    # with fewer than returns_min_samples is unknown, and an unknown fails closed (below).
    returns_window: int = Field(120, ge=10)
    returns_min_samples: int = Field(30, ge=5)
    # Circuit breaker: a symbol that moved more than circuit_sigma of its own standard
    # deviations (one-minute returns, scaled by the square root of the span) within the last
    # circuit_minutes halts entries on it for circuit_halt_s (exits still pass). An alert says so.
    circuit_sigma: float | None = Field(None, gt=0)
    circuit_minutes: int = Field(5, ge=1)
    circuit_halt_s: float = Field(900.0, gt=0)
    # Correlated exposure: an entry's notional plus the net notional of every position whose
    # returns correlate with it by correlation_threshold or more (sign-adjusted: a negatively
    # correlated long counts as short) may not exceed this. A pair without enough common
    # history counts as fully correlated.
    max_correlated_exposure: float | None = Field(None, gt=0)
    correlation_threshold: float = Field(0.7, gt=0, le=1)
    # Value at risk of the book after an entry: the larger of parametric (normal, from the
    # covariance) and historical (the window's own returns) at var_confidence over
    # var_horizon_minutes (square root of time). Too little history denies (VAR_UNKNOWN).
    max_var: float | None = Field(None, gt=0)
    var_confidence: float = Field(0.99, gt=0.5, lt=1)
    var_horizon_minutes: int = Field(30, ge=1)


class SimSettings(Section):
    """The simulated venue (services/execution/simbroker.py): what keeps its fills honest."""

    submit_latency_ms: float = Field(5.0, ge=0)  # an order, cancel or replace reaches the venue
    report_latency_ms: float = Field(2.0, ge=0)  # a report reaches the gateway
    commission: Literal["ib-fixed", "ib-tiered"] = "ib-tiered"
    queue_ahead_fraction: float = Field(1.0, ge=0)  # of the displayed size when a limit joins it
    max_order_shares: float = Field(100_000, gt=0)  # larger orders are rejected


class ExecutionSettings(Section):
    broker: Literal["sim", "ib"] = "sim"  # ib: TWS / IB Gateway per the ib section (paper by default)
    account: str = "SIM"
    journal: Path = Path("var/execution-journal.msgpack")
    flatten_on_kill: bool = False
    panic_file: Path | None = None  # if this file appears: kill (cancel all; flatten if configured)
    sim: SimSettings = SimSettings()
    # An approval fetched but not journaled when the process died comes back after this wait.
    # Approvals expire (risk.approval_ttl_ms), so the wait is that TTL unless set shorter here:
    # a redelivery after the TTL could only be refused as expired.
    approval_ack_wait_ms: float | None = Field(None, gt=0)
    # How market orders are worked (docs/ARCHITECTURE.md, Execution tactics): MKT sends them as
    # approved; LMT prices each child from the near touch by limit_offset_bps and reprices it to
    # the far touch after chase_after_ms; slice_shares > 0 sends at most that many per child.
    tactic_style: Literal["MKT", "LMT"] = "MKT"
    limit_offset_bps: float = Field(0.0, ge=0, le=100)
    chase_after_ms: float = Field(2_000.0, gt=0)
    slice_shares: float = Field(0.0, ge=0)
    # TCA feedback may change the tactic per symbol, clamped to these bounds; off unless enabled.
    feedback: bool = False
    feedback_max_offset_bps: float = Field(5.0, ge=0)
    feedback_min_chase_ms: float = Field(250.0, gt=0)
    feedback_max_chase_ms: float = Field(30_000.0, gt=0)
    feedback_min_slice_shares: float = Field(100.0, gt=0)


class TcaSettings(Section):
    """Cost analysis and the feedback loop (services/tca/feedback.py explains each number)."""

    realized_after_s: float = Field(5.0, gt=0)
    window: int = Field(50, ge=2)  # orders per rolling aggregate
    min_samples: int = Field(8, ge=1)  # before an aggregate can alert or a tactic be judged
    alert_sigma: float = Field(3.0, gt=0)
    feedback: bool = True  # publish tca.feedback (execution applies it only if it enables feedback)
    start_offset_bps: float = Field(0.0, ge=0)
    offset_step_bps: float = Field(0.5, ge=0)
    max_offset_bps: float = Field(5.0, ge=0)
    passive_low: float = Field(0.3, ge=0, le=1)
    passive_high: float = Field(0.8, ge=0, le=1)
    chase_after_ms: float = Field(2_000.0, gt=0)
    walk_threshold_bps: float = Field(1.0, ge=0)
    min_slice_shares: float = Field(100.0, gt=0)


class PartitionSettings(Section):
    """Which symbols this replica owns: NATS's partition(count, symbol) in ``owned`` (empty: all).
    features, fastlane and qos keep per-symbol state, so each scales as replicas owning disjoint
    partitions (docs/ARCHITECTURE.md, Scaling)."""

    count: int = Field(1, ge=1, le=1024)
    owned: list[int] = Field(default_factory=list)

    @field_validator("owned", mode="before")
    @classmethod
    def _one_partition(cls, value: Any) -> Any:
        # A bare number is one partition: what a StatefulSet pod's ordinal gives (deploy/k8s).
        return [value] if isinstance(value, int) else value

    @model_validator(mode="after")
    def _in_range(self) -> PartitionSettings:
        bad = [p for p in self.owned if not 0 <= p < self.count]
        if bad:
            raise ValueError(f"owned partitions {bad} outside 0..{self.count - 1}")
        return self


class FeaturesSettings(Section):
    timeframes: list[str] = Field(default_factory=lambda: ["1m", "5m", "15m", "30m", "60m"], min_length=1)
    # Where the service notes its state (bars, VWAP, windows) every few seconds, so a restart
    # resumes the day instead of starting its bars afresh (None: it starts afresh). The file is
    # loaded with pickle: it must be this service's own (`up` puts one per run in its state dir).
    checkpoint: Path | None = None
    index_symbol: str = "SPY"
    block_min_shares: int = Field(10_000, ge=1)
    block_min_notional: float = Field(500_000.0, gt=0)
    burst_window: int = Field(60, ge=2)  # bars of volume behind the volume z-score
    vol_rank_window: int = Field(100, ge=2)  # bars behind the volatility percentile
    realized_window_s: int = Field(60, ge=2)  # seconds behind the 1-second realized volatility
    trend_adx: float = Field(20.0, gt=0)  # ADX from which a bar's trend counts
    depth_levels: int = Field(5, ge=1, le=50)  # book levels in the depth imbalance
    emit_micro: bool = True  # the 1-second microstructure vector on feat.1s.SYM
    include_names: bool = False  # names in every vector (for tapping; the feature_set names them)
    # Live feeds close bars on the wall clock too (a quiet symbol still gets its bar); replays
    # run on event time only, and close the last bars when the replay says it finished.
    close_on_wall_clock: bool = False
    wall_clock_grace_ms: int = Field(250, ge=0)
    redis_url: str | None = None  # latest vectors as hot state; written behind, never read back
    redis_flush_ms: int = Field(500, ge=10)
    redis_ttl_s: int = Field(86_400, ge=1)

    @field_validator("timeframes")
    @classmethod
    def _durations(cls, timeframes: list[str]) -> list[str]:
        from libs.common.markettime import parse_duration_ns

        spans = [parse_duration_ns(tf) for tf in timeframes]
        if spans != sorted(set(spans)):
            raise ValueError("timeframes must be distinct and ascending")
        return timeframes

    @functools.cached_property
    def timeframe_ns(self) -> tuple[int, ...]:
        from libs.common.markettime import parse_duration_ns

        return tuple(parse_duration_ns(tf) for tf in self.timeframes)

    @functools.cached_property
    def base_ns(self) -> int:
        """The base bar every timeframe folds from: their greatest common divisor."""
        return math.gcd(*self.timeframe_ns)

    @property
    def names(self) -> tuple[str, ...]:
        """The bar vector's feature names for these timeframes, in order."""
        from proto.features import bar_feature_names

        return bar_feature_names(tuple(self.timeframes))

    @property
    def feature_set(self) -> str:
        from proto.features import bar_feature_set

        return bar_feature_set(tuple(self.timeframes))


# The registry that ships with the code (models/registry), wherever the process runs from.
SHIPPED_REGISTRY = Path(__file__).resolve().parents[2] / "models" / "registry"


class FastlaneSettings(Section):
    registry: Path = SHIPPED_REGISTRY
    horizons: list[str] = Field(default_factory=lambda: ["5m", "15m", "30m", "60m"], min_length=1)
    source_timeframe: str = "1m"  # every horizon scores the vectors of this timeframe
    # The model families each horizon trains (models/fastlane/zoo.py; several are blended by the
    # ZooBalancer): what `train fastlane` (without --families), the walk-forward and ablation
    # train. Serving serves whatever the active version holds.
    families: list[str] = Field(default_factory=lambda: ["lightgbm"], min_length=1)
    engine: Literal["auto", "lleaves", "onnx", "lightgbm"] = "auto"  # auto: the faster one measured
    compile_cache: Path = Path("var/lleaves-cache")  # compiled trees, per CPU and model version
    reload_interval_s: float = Field(5.0, gt=0)
    drift_window: int = Field(500, ge=50)
    drift_check_every: int = Field(50, ge=1)
    drift_psi_limit: float = Field(0.25, gt=0)
    drift_ks_limit: float = Field(0.3, gt=0, le=1)
    drift_min_samples: int = Field(500, ge=20)  # judge only a full window (intraday seasonality)
    # Like with like (models/fastlane/drift.py): a feature is judged only with this many
    # independent samples in the window (its autocorrelation measured in training), the first
    # drift_warmup vectors of each symbol after a start are left out, and the score drifts only
    # when it also moved this much in probability (KS alone flags a model whose scores barely move).
    drift_min_effective: float = Field(10.0, gt=0)
    drift_warmup: int = Field(30, ge=0)
    drift_min_score_shift: float = Field(0.01, ge=0)
    # A quarantined model is released (with an alert) after this many clean checks in a row.
    drift_release_checks: int = Field(3, ge=1)
    # Universe prefilter: a vector whose cheap proxies say nothing is happening (a one-minute
    # move of at most prefilter_max_abs_ret_bps, volume at most prefilter_max_volume_z from its
    # norm, volatility in the lowest prefilter_max_vol_pctile of its own history) is not scored:
    # each horizon publishes "no view" (signal 0, flagged prefiltered) without running its model.
    prefilter: bool = False
    prefilter_max_abs_ret_bps: float = Field(2.0, ge=0)
    prefilter_max_volume_z: float = 0.0
    prefilter_max_vol_pctile: float = Field(0.5, ge=0, le=1)

    @field_validator("families")
    @classmethod
    def _known_families(cls, families: list[str]) -> list[str]:
        known = ("lightgbm", "logistic", "mlp", "sequence")  # models.fastlane.zoo.FAMILIES
        unknown = [f for f in families if f not in known]
        if unknown:
            raise ValueError(f"unknown model families {unknown}: known {', '.join(known)}")
        return list(dict.fromkeys(families))


class SentimentSettings(Section):
    """The sentiment service (docs/ARCHITECTURE.md, sentiment)."""

    registry: Path = SHIPPED_REGISTRY
    engine: Literal["auto", "onnx-int8", "onnx", "torch"] = "auto"  # auto: what training measured
    # A FinBERT-class sequence classifier in a local folder, instead of the registry's model.
    model_path: Path | None = None
    cache: Path = Path("var/sentiment-cache")  # ONNX exports per model version
    batch_max: int = Field(32, ge=1, le=512)  # headlines scored together
    batch_wait_ms: float = Field(2.0, ge=0, le=1000)  # how long a first headline waits for others
    dedupe_window_s: float = Field(3600.0, gt=0)
    symbols: list[str] = Field(default_factory=list)  # only these tickers (empty: every ticker)
    companies: dict[str, list[str]] | None = None  # symbol -> names; None: the built-in map
    embeddings: bool = False  # attach the pooled encoder output to each score
    reload_interval_s: float = Field(10.0, gt=0)
    webhook_port: int | None = Field(None, ge=0, le=65535)  # POST /news; None: no webhook
    webhook_host: str = "127.0.0.1"
    webhook_token: SecretStr = SecretStr("")  # when set, the webhook needs "Authorization: Bearer <token>"


class PolicySettings(Section):
    """The RL policy service (services/policy): which registry it serves from."""

    registry: Path = SHIPPED_REGISTRY
    # auto: the numpy engine where the version has one (fastest for one cold row), else ONNX Runtime
    engine: Literal["auto", "numpy", "onnx"] = "auto"
    reload_interval_s: float = Field(5.0, gt=0)


class ExitSettings(Section):
    """Protective exits (services/qos/exits.py): an ATR stop-loss and take-profit, an R-multiple
    trailing stop, and flattening before the session's close (market.session_end, or the
    exchange's early close)."""

    stop_atr: float = Field(2.0, gt=0)  # R, the initial risk per share, is stop_atr ATRs
    take_profit_atr: float = Field(4.0, gt=0)
    trail_after_r: float = Field(1.0, ge=0)  # the stop trails once the price has gone this many R
    trail_r: float = Field(1.0, gt=0)  # ...this many R behind the best price
    flatten_before_close_s: float = Field(300.0, ge=0)
    default_atr_bps: float = Field(20.0, gt=0)  # while no ATR is known for the symbol yet


# Rule strategies QOS can weigh beside the horizons (services/qos/strategies.py).
STRATEGY_INPUTS = ("rsi_reversion", "breakout", "news_event")


class StrategySettings(Section):
    """The rule strategies' parameters (each counts only with a weight in qos.weights)."""

    rsi_oversold: float = Field(30.0, gt=0, lt=50)
    rsi_overbought: float = Field(70.0, gt=50, lt=100)
    orb_minutes: float = Field(30.0, gt=0, le=390)  # the opening range
    orb_buffer_bps: float = Field(5.0, gt=0)  # a close this far beyond it is a breakout
    orb_min_volume_z: float = Field(0.5)  # ...on volume this far above its norm
    # news_event: a headline about an event (its tags, services/sentiment/tagging.py) with at
    # least this polarity is an entry trigger in its direction, live for news_hold_s
    news_min_polarity: float = Field(0.5, gt=0, le=1)
    news_events: list[str] = Field(
        default_factory=lambda: ["earnings", "guidance", "upgrade", "downgrade", "m&a", "fda"]
    )
    news_hold_s: float = Field(1800.0, gt=0)


class PairSettings(Section):
    """A pair traded on its spread (services/qos/pairs.py): legs A and B, log A regressed on log B."""

    legs: tuple[str, str]
    lookback: int = Field(120, ge=20)  # minutes both legs printed
    entry_z: float = Field(2.0, gt=0)
    exit_z: float = Field(0.5, ge=0)
    max_hold_min: float = Field(60.0, gt=0)
    notional: float = Field(10_000.0, gt=0)  # of leg A; leg B is beta times it
    # Engle-Granger at 5% for two series (MacKinnon): the spread's ADF t-statistic must be below
    adf_critical: float = Field(-3.34, lt=0)

    @field_validator("legs")
    @classmethod
    def _two_symbols(cls, legs: tuple[str, str]) -> tuple[str, str]:
        a, b = (x.strip().upper() for x in legs)
        if not a or not b or a == b:
            raise ValueError(f"a pair needs two different symbols, not {legs!r}")
        return a, b


class QosSettings(Section):
    weights: dict[str, float] = Field(
        default_factory=lambda: {
            "5m": 0.4,
            "15m": 0.3,
            "30m": 0.2,
            "60m": 0.1,
            "sentiment": 0.2,
        }
    )
    entry_threshold: float = Field(0.35, gt=0, le=1)
    rearm_threshold: float = Field(0.2, ge=0, le=1)  # hysteresis: |QOS| must fall below this to re-arm
    exit_decay: float = Field(0.15, gt=0, le=2)  # exit when QOS falls this far from its peak
    exit_floor: float = Field(0.0, ge=-1, le=1)  # ...or crosses back through this level
    cooldown_s: float = Field(300.0, ge=0)
    min_hold_s: float = Field(60.0, ge=0)
    allow_short: bool = True
    order_notional: float = Field(10_000.0, gt=0)
    stale_after_s: float = Field(180.0, gt=0)  # a prediction older than this no longer counts
    hit_rate_halflife: int = Field(50, ge=1)  # predictions; trailing hit rate moves each weight
    regime_tilt: float = Field(0.5, ge=0, le=1)  # how far trend/range regimes tilt long vs short horizons
    # HorizonArbiter (services/qos/arbiter.py): a horizon whose |expected return| is below this many
    # round trips (the symbol's quoted spread_bps + 2 x arbiter_commission_bps) contributes nothing
    # (weight 0 in the score's weights). 0: off.
    arbiter_cost_multiple: float = Field(0.0, ge=0)
    arbiter_commission_bps: float = Field(0.5, ge=0)
    # How realized outcomes move the horizons' weights: "hit_rate" (a trailing hit rate scales each
    # within [0.5, 1.5]) or "exp3ix" (Exp3-IX exponential weights: exp3_eta the learning rate per
    # missed prediction, exp3_gamma the implicit exploration).
    online_weighting: Literal["hit_rate", "exp3ix"] = "hit_rate"
    exp3_eta: float = Field(0.05, gt=0, le=5)
    exp3_gamma: float = Field(0.05, ge=0, le=1)
    # Headline sentiment (news.sentiment.SYM) as the weighted input "sentiment": per symbol, the sum
    # of polarities decayed with this half-life in event time, clipped to [-1, 1].
    sentiment_half_life_s: float = Field(900.0, gt=0)
    # The RL policy (services/policy) as a size and timing modifier: "on" proposes each entry to it
    # and waits for its answer on sig.policy.SYM; "off" sizes by the rules alone.
    policy: Literal["off", "on"] = "off"
    # A proposal unanswered at the next score: "rules" enters at full size, "hold" never enters.
    policy_fallback: Literal["rules", "hold"] = "rules"
    # An outside model's prediction (POST /api/signal, sig.ext.SYM) counts as the input "external"
    # when weights gives it a weight, for this long after its time.
    external_ttl_s: float = Field(300.0, gt=0)
    # Symbols that take no new entries (exits go on); "*" for every symbol. The control API's
    # strategy stop/start edits it live (PUT /api/params/qos does too).
    entries_off: list[str] = Field(default_factory=list)
    exits: ExitSettings = ExitSettings()
    strategies: StrategySettings = StrategySettings()
    # Pairs traded on their spread, both legs through the gate. A leg of a pair takes no entry
    # from the other inputs and no protective stop of its own (the pair exits both legs); the
    # session-end flatten still applies. With partitions, the replica owning the first leg trades it.
    pairs: list[PairSettings] = Field(default_factory=list)

    @field_validator("weights")
    @classmethod
    def _known_inputs(cls, weights: dict[str, float]) -> dict[str, float]:
        from libs.common.markettime import parse_duration_ns

        for name, weight in weights.items():
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weight of {name!r} must be a finite number >= 0, not {weight!r}")
            if name in ("sentiment", "external", *STRATEGY_INPUTS):
                continue
            try:
                parse_duration_ns(name)
            except ValueError:
                raise ValueError(
                    f"{name!r} is neither a horizon (5m, 1h) nor sentiment, external or a strategy "
                    f"({', '.join(STRATEGY_INPUTS)})"
                ) from None
        return weights

    @field_validator("entries_off")
    @classmethod
    def _symbols(cls, symbols: list[str]) -> list[str]:
        return sorted({s.strip().upper() for s in symbols if s.strip()})

    def horizons(self) -> list[str]:
        """Weighted inputs that are fast-lane horizons, shortest first (others, such as
        "sentiment", are inputs of their own)."""
        from libs.common.markettime import parse_duration_ns

        timed = [k for k in self.weights if k[:-1].isdigit() and k[-1] in "smh"]
        return sorted(timed, key=parse_duration_ns)


AlertSeverity = Literal["info", "warning", "critical"]


class TelegramSettings(Section):
    """The Telegram sink. ``api_url`` may name a self-hosted Bot API server; ``chat_ids`` are
    where alerts go, and the only chats whose commands are obeyed. Off when the token
    is empty. The token may come from ``token_file`` (a mounted secret) instead."""

    api_url: str = "https://api.telegram.org"
    token: SecretStr = SecretStr("")
    token_file: Path | None = None
    chat_ids: list[int] = Field(default_factory=list)
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("api_url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")


class EmailSettings(Section):
    """The email sink (SMTP). Off when ``host`` or ``recipients`` is empty. STARTTLS upgrades
    the connection before any credentials are sent; the password may come from ``password_file``."""

    host: str = ""
    port: int = Field(587, ge=1, le=65535)
    sender: str = "tradefleet@localhost"
    recipients: list[str] = Field(default_factory=list)
    starttls: bool = True
    username: str = ""
    password: SecretStr = SecretStr("")
    password_file: Path | None = None
    timeout_s: float = Field(10.0, gt=0)


def _default_floors() -> dict[str, AlertSeverity]:
    # Email takes the informational too (the day's summary at the close); Telegram pages people.
    return {"telegram": "warning", "email": "info"}


class AlertsSettings(Section):
    """The alerts service: which alerts reach which sink, how repeats are folded, how long a
    failing sink is retried."""

    telegram: TelegramSettings = TelegramSettings()
    email: EmailSettings = EmailSettings()
    # The least severe alert each sink delivers; critical always goes out, whatever is set here.
    min_severity: dict[str, AlertSeverity] = Field(default_factory=_default_floors)
    # The same dedupe key within this window is one message with a count ("x37 in 5 min").
    dedupe_window_s: float = Field(300.0, gt=0)
    # A service silent this long (no heartbeat, no clean stop) is a critical alert; its return,
    # a recovered one. Several heartbeats long, so one late message is not an alarm.
    heartbeat_limit_s: float = Field(10.0, gt=0)
    # A subscribed symbol without a record this many seconds of market time while the session is
    # open is an alert (the sample day's longest in-session gap is 22 s, IBM's).
    market_silence_s: float = Field(60.0, gt=0)
    # A features service with no vector this session this many seconds (wall) after the first
    # bar closed is an alert.
    vectors_grace_s: float = Field(30.0, gt=0)
    # A recorder that has not had everything it received written for this long is an alert.
    recorder_lag_s: float = Field(30.0, gt=0)
    # The timeframe whose trend flips (up <-> down) are told to people; "" for none.
    regime_timeframe: str = "30m"
    # A failing sink is retried with backoff this long before the alert is given up on it
    # (counted, logged, and said on the other sinks).
    retry_for_s: float = Field(120.0, gt=0)

    @field_validator("min_severity")
    @classmethod
    def _known_sinks(cls, floors: dict[str, str]) -> dict[str, str]:
        unknown = set(floors) - {"telegram", "email"}
        if unknown:
            raise ValueError(f"unknown sinks {sorted(unknown)}: telegram, email")
        return floors


class SigningSettings(Section):
    """The risk gate signs every approval (HMAC-SHA256 over its fields, libs/common/signing.py)
    and the execution gateway takes only approvals whose signature verifies: a forged approval on
    a misconfigured bus is refused and dead-lettered. Both read the same key: ``approval_key`` or
    the content of ``approval_key_file`` (a mounted secret). Without one, risk signs nothing and
    execution refuses every approval (fail closed); `tradefleet up` and the backtest make a key
    per run."""

    approval_key: SecretStr = SecretStr("")
    approval_key_file: Path | None = None

    def key(self) -> bytes:
        """The key's bytes; empty when none is configured (raises when the file cannot be read)."""
        if self.approval_key.get_secret_value():
            return self.approval_key.get_secret_value().encode()
        if self.approval_key_file is not None:
            return self.approval_key_file.read_bytes().strip()
        return b""


class HotStateSettings(Section):
    """Redis as hot state (libs/common/hotstate.py): risk, execution and qos keep their latest
    state, positions and scores there for the control service's snapshots. Off when no URL."""

    redis_url: str | None = None
    flush_ms: int = Field(250, ge=10)
    ttl_s: int = Field(86_400, ge=1)
    refresh_s: float = Field(30.0, gt=0)  # everything written again this often: a flushed Redis fills
    prefix: str = Field("tradefleet:hot", min_length=1)  # one per fleet sharing a Redis


Role = Literal["viewer", "operator", "admin"]


class ApiToken(Section):
    """One control API token: its name (what the audit trail and ctl.* carry as who acted), its
    role, and the SHA-256 of the token (hex): the token itself is never stored."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Role
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ControlSettings(Section):
    """The control service: REST under /api, a WebSocket at /api/ws, the dashboard at /.
    ``tokens`` are made by `tradefleet control token --name N --role R`: viewer reads, operator
    also acts (kill, resume, mode, orders, flatten, strategy), admin also changes parameters."""

    host: str = "127.0.0.1"
    port: int = Field(8600, ge=0, le=65535)  # 0: any free port
    tokens: list[ApiToken] = Field(default_factory=list)
    # Requests per token (or per address, before a token is known), over a moving minute.
    read_per_minute: int = Field(600, ge=1)
    act_per_minute: int = Field(30, ge=1)
    # Origins allowed to call the API from a browser page of another origin; none by default.
    cors_origins: list[str] = Field(default_factory=list)
    # How long an action waits for the services' acks before it reports who stayed silent.
    ack_wait_s: float = Field(5.0, gt=0, le=60)
    # A WebSocket client this many messages behind is dropped: a slow client never slows the fleet.
    ws_max_queue: int = Field(1000, ge=1)
    # The built dashboard (web/dist); served at / when it exists.
    web_dir: Path = Path("web/dist")

    @field_validator("tokens")
    @classmethod
    def _unique(cls, tokens: list[ApiToken]) -> list[ApiToken]:
        names = [t.name for t in tokens]
        if len(set(names)) != len(names):
            raise ValueError("token names must be unique (they are who acted in the audit trail)")
        if len({t.token_sha256 for t in tokens}) != len(tokens):
            raise ValueError("two tokens have the same hash")
        return tokens


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    nats: NatsSettings = NatsSettings()
    db: DbSettings = DbSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    http: HttpSettings = HttpSettings()
    fleet: FleetSettings = FleetSettings()
    market: MarketSettings = MarketSettings()
    md_gateway: MdGatewaySettings = MdGatewaySettings()
    recorder: RecorderSettings = RecorderSettings()
    features: FeaturesSettings = FeaturesSettings()
    fastlane: FastlaneSettings = FastlaneSettings()
    qos: QosSettings = QosSettings()
    policy: PolicySettings = PolicySettings()
    sentiment: SentimentSettings = SentimentSettings()
    partition: PartitionSettings = PartitionSettings()
    risk: RiskSettings = RiskSettings()
    execution: ExecutionSettings = ExecutionSettings()
    ib: IbSettings = IbSettings()
    tca: TcaSettings = TcaSettings()
    alerts: AlertsSettings = AlertsSettings()
    control: ControlSettings = ControlSettings()
    hot_state: HotStateSettings = HotStateSettings()
    signing: SigningSettings = SigningSettings()

    @model_validator(mode="after")
    def _ack_wait_within_ttl(self) -> Settings:
        wait = self.execution.approval_ack_wait_ms
        if wait is not None and wait > self.risk.approval_ttl_ms:
            raise ValueError(
                f"execution.approval_ack_wait_ms {wait:g} exceeds risk.approval_ttl_ms "
                f"{self.risk.approval_ttl_ms:g}: a redelivered approval would always have expired"
            )
        return self

    @model_validator(mode="after")
    def _regime_timeframe_made(self) -> Settings:
        tf = self.alerts.regime_timeframe
        if tf and tf not in self.features.timeframes:
            raise ValueError(
                f"alerts.regime_timeframe {tf!r} is not one of features.timeframes {self.features.timeframes}"
            )
        return self

    @property
    def approval_ack_wait_s(self) -> float:
        """How long execution waits before an approval it fetched but never journaled comes back."""
        wait = self.execution.approval_ack_wait_ms or self.risk.approval_ttl_ms
        return wait / 1000

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit overrides > environment > config file > defaults.
        return (init_settings, env_settings, _FileSource(settings_cls))


_FILE_DATA: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "tradefleet_file_config", default=None
)


class _FileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return (_FILE_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError([f"config file {path} does not exist"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"config file {path} is not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path} must hold a mapping at the top level"])
    return data


def _apply_aliases(overrides: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in overrides.items()}
    for env_name, (section, key) in ENV_ALIASES.items():
        value = os.environ.get(env_name)
        if value:
            merged.setdefault(section, {})
            if isinstance(merged[section], dict):
                merged[section].setdefault(key, value)
    return merged


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Load and validate; raise ConfigError listing every problem."""
    if path is None and os.environ.get(f"{ENV_PREFIX}CONFIG"):
        path = os.environ[f"{ENV_PREFIX}CONFIG"]
    token = _FILE_DATA.set(_read_file(Path(path)) if path else {})
    try:
        return Settings(**_apply_aliases(overrides))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            value = f" [got {err['input']!r}]" if err["type"] not in ("missing", "extra_forbidden") else ""
            problems.append(f"{where}: {err['msg']}{value}")
        raise ConfigError(problems) from None
    finally:
        _FILE_DATA.reset(token)
