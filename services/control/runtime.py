"""control runtime: the fleet's events in (a FleetView), the API served by uvicorn in this
process's loop, actions out as ctl.* (answered on ack.*), live parameters as ctl.config.SECTION.

The view is a cache of the bus: at start it reads the last risk state, position snapshot, broker
status and live parameters from JetStream, then keeps up with core subscriptions. Correctness
never depends on it: the services act on their own state; the view only shows it. A WebSocket
client gets the view's messages through a bounded queue: one that falls ``ws_max_queue`` behind
is dropped (it reconnects for a fresh snapshot), so a slow browser never slows the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from pathlib import Path
from typing import Any

import msgspec

from libs.common import params
from libs.common.acks import Awaited
from libs.common.bus import Delivery
from libs.common.config import Settings
from libs.common.ids import new_id
from libs.common.logging import get_logger
from libs.common.runtime import Runtime, ServiceApp
from proto.alerts import Alert
from proto.base import Event
from proto.control import (
    CONFIG_RESPONDERS,
    CONFIG_SECTIONS,
    RESPONDERS,
    Command,
    ConfigChange,
    ConfigSection,
    Control,
    ControlAck,
    Heartbeat,
    control_arg_problems,
)
from proto.execution import BrokerStatus, Fill, OrderEvent, PositionSnapshot
from proto.market import DepthUpdate, FeedStatus, Quote
from proto.news import NewsItem, SentimentScore
from proto.orders import OrderApproved, OrderDenied, OrderIntent, RiskState
from proto.signals import ExternalSignal, Prediction, QosScore
from proto.tca import TcaAggregate, TcaReport
from services.control.api import GOING_AWAY, Answers, ParamsAnswer, SignalIn, build_api
from services.control.auth import TokenBook
from services.control.view import FleetView

log = get_logger(__name__)
BOOK_PUSH_S = 0.5  # a symbol's book on the WebSocket at most this often
SOCKETS_CLOSE_S = 2.0  # at a stop, how long the sockets get to close with 1001 before uvicorn closes them
_JSON = msgspec.json.Encoder()

# What the view follows (core subscriptions: a cache, not a consumer that must see everything).
FOLLOWED: tuple[tuple[str, tuple[type[Event], ...]], ...] = (
    ("risk.state", (RiskState,)),
    ("exec.>", (OrderEvent, Fill, PositionSnapshot, BrokerStatus)),
    ("qos.>", (QosScore,)),
    ("sig.fast.*.*", (Prediction,)),
    ("sig.ext.*", (ExternalSignal,)),
    ("order.intent.>", (OrderIntent,)),
    ("order.approved.>", (OrderApproved,)),
    ("order.denied.>", (OrderDenied,)),
    ("alert.>", (Alert,)),
    ("news.raw", (NewsItem,)),
    ("news.sentiment.>", (SentimentScore,)),
    ("tca.report.>", (TcaReport,)),
    ("tca.aggregate.>", (TcaAggregate,)),
    ("md.status", (FeedStatus,)),
    ("md.depth.>", (DepthUpdate,)),
    ("hb.>", (Heartbeat,)),
    ("ctl.config.>", (ConfigChange,)),
)


class ControlApp(ServiceApp):
    name = "control"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.cfg = settings.control
        self.view = FleetView()
        self.tokens = TokenBook(self.cfg.tokens)
        self.sections: dict[ConfigSection, params.SectionModel] = {
            s: params.current(settings, s) for s in CONFIG_SECTIONS
        }
        self._awaited: dict[str, Awaited] = {}
        self.clients: set[asyncio.Queue[str | None]] = set()
        self._sockets: set[asyncio.Queue[str | None]] = set()  # connected, told to go or not
        self._no_sockets = asyncio.Event()
        self.dropped_clients = 0
        self.actions = 0
        self._quote_watch: set[str] = set()
        self._book_pushed: dict[str, float] = {}
        self._server: Any = None
        self._server_task: asyncio.Task[None] | None = None
        self.url = ""

    # -- start / stop ------------------------------------------------------------------------------
    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        await self._restore(rt)
        for pattern, types in FOLLOWED:
            await rt.subscribe(pattern, self._on_event, types=types)
        await rt.subscribe("ack.*", self._on_ack, types=ControlAck)
        await self._serve()

    async def _restore(self, rt: Runtime) -> None:
        """Redis first (every symbol's latest score, the state and positions: fast), then the
        bus's last word where it keeps one (newer or equal: it wins)."""
        hs = self.settings.hot_state
        if hs.redis_url:
            from libs.common.hotstate import read_all

            for event in await read_all(hs.redis_url, hs.prefix):
                self.view.on_event(event)
        for subject, kind in (
            ("risk.state", RiskState),
            ("exec.position", PositionSnapshot),
            ("exec.broker", BrokerStatus),
        ):
            with contextlib.suppress(Exception):  # nothing stored yet, or no JetStream: start empty
                if (last := await rt.last(subject, kind)) is not None:
                    self.view.on_event(last[0])
        for section in CONFIG_SECTIONS:
            with contextlib.suppress(Exception):
                if (last := await rt.last(f"ctl.config.{section}", ConfigChange)) is not None:
                    self._take_config(last[0])

    async def _serve(self) -> None:
        import uvicorn

        web = _dashboard_dir(self.cfg.web_dir)
        api = build_api(self, self.cfg, self.tokens, web)
        config = uvicorn.Config(
            api,
            host=self.cfg.host,
            port=self.cfg.port,
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",
            # Compressing each frame for each client costs more CPU than the frames are worth on
            # the links a dashboard uses; a fleet's CPU is the decisions'.
            ws_per_message_deflate=False,
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # the runtime owns the signals
        self._server_task = asyncio.create_task(self._server.serve(), name="control-api")
        while not self._server.started:  # uvicorn offers no event to await
            if self._server_task.done():
                self._server_task.result()  # the bind failed: raise why
            await asyncio.sleep(0.02)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.cfg.host}:{port}/"
        log.info("control API serving", url=self.url, dashboard=(web / "index.html").exists())

    async def stop(self) -> None:
        for queue in list(self.clients):
            self._drop(queue, GOING_AWAY)  # a stop, not a slow client: not counted as dropped
        # Each socket's handler closes it with 1001 (going away); uvicorn's own shutdown closes
        # what is still open with 1012 (service restart), which a client may take for "come back
        # at once". A busy loop can leave the handlers behind uvicorn's next tick: wait for them.
        if self._sockets:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_sockets.wait(), SOCKETS_CLOSE_S)
        if self._server is not None:
            self._server.should_exit = True
        if self._server_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server_task, 5)

    # -- events in -------------------------------------------------------------------------------
    async def _on_event(self, d: Delivery[Event]) -> None:
        event = d.event
        if isinstance(event, ConfigChange):
            self._take_config(event)
        for kind, data in self.view.on_event(event, self.rt.now_ns()):
            self._broadcast({"type": kind, "data": data})
        if isinstance(event, DepthUpdate):
            self._push_book(event.symbol)

    def _take_config(self, change: ConfigChange) -> None:
        """The live values of a section, as last sent (by this service or another replica)."""
        with contextlib.suppress(Exception):  # a change the models refuse is not the live value
            self.sections[change.section] = params.validate(
                change.section, self.sections[change.section], change.values
            )
        self.view.on_event(change)

    async def _on_ack(self, d: Delivery[ControlAck]) -> None:
        if (awaited := self._awaited.get(d.event.command_id)) is not None:
            awaited.take(d.event)

    async def _on_quote(self, d: Delivery[Quote]) -> None:
        self.view.on_event(d.event)
        self._push_book(d.event.symbol)

    def _push_book(self, symbol: str) -> None:
        """A book changes with every quote: pushed at most every BOOK_PUSH_S per symbol."""
        if not self.clients:
            return
        now = time.monotonic()
        if now - self._book_pushed.get(symbol, 0.0) < BOOK_PUSH_S:
            return
        self._book_pushed[symbol] = now
        if (body := self.view.book(symbol)) is not None:
            self._broadcast({"type": "book", "data": body})

    # -- the WebSocket fan-out ---------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue[str | None]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(self.cfg.ws_max_queue + 1)
        self.clients.add(queue)
        self._sockets.add(queue)
        self._no_sockets.clear()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        """Its socket is closed (the handler's last step)."""
        self.clients.discard(queue)
        self._sockets.discard(queue)
        if not self._sockets:
            self._no_sockets.set()

    def _broadcast(self, message: dict[str, Any]) -> None:
        """Encoded once, for every client (not once per client: fifty clients, one encoding)."""
        if not self.clients:
            return
        text = _JSON.encode(message).decode()
        for queue in list(self.clients):
            if queue.qsize() >= self.cfg.ws_max_queue:
                self._drop(queue)
            else:
                queue.put_nowait(text)

    def _drop(self, queue: asyncio.Queue[str | None], why: str | None = None) -> None:
        """Emptied, told to go, forgotten: too far behind (None: close 1013, counted), or the
        service stopping (GOING_AWAY: close 1001)."""
        self.clients.discard(queue)
        if why is None:
            self.dropped_clients += 1
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(why)

    # -- what the API asks (the Fleet protocol) ---------------------------------------------------------
    def now_ns(self) -> int:
        return self.rt.now_ns()

    def limits(self) -> Any:
        return self.sections["risk"]

    def thresholds(self) -> tuple[dict[str, float], list[str]]:
        q = self.sections["qos"]
        assert isinstance(q, params.QosSettings)
        keys = ("entry_threshold", "rearm_threshold", "exit_decay", "exit_floor")
        return {k: float(getattr(q, k)) for k in keys}, list(q.entries_off)

    def params(self, section: ConfigSection) -> dict[str, Any]:
        last = self.view.params.get(section)
        return {
            "section": section,
            "values": params.values_of(self.sections[section]),
            "changed_by": last.issued_by if last else "",
            "changed_at": last.ts_event if last else None,
        }

    async def command(self, command: Command, args: dict[str, str], who: str) -> Answers:
        if problems := control_arg_problems(command, args):
            from fastapi import HTTPException

            raise HTTPException(422, "; ".join(problems))
        now = self.rt.now_ns()
        control = Control(
            ts_event=now, ts_init=now, command_id=f"api-{new_id()}", command=command, issued_by=who, args=args
        )
        self.actions += 1
        log.info("control API action", command=command, args=args, who=who)
        return await self._send(control, control.command_id, RESPONDERS[command])

    async def change_params(self, section: ConfigSection, values: dict[str, Any], who: str) -> ParamsAnswer:
        before = self.sections[section]
        after = params.validate(section, before, values)  # raises ValidationError: field errors
        if (
            isinstance(after, params.QosSettings)
            and isinstance(before, params.QosSettings)
            and after.horizons() != before.horizons()
        ):
            raise _live_error("weights", values.get("weights"), "the weighted horizons cannot change live")
        now = self.rt.now_ns()
        change = ConfigChange(
            ts_event=now,
            ts_init=now,
            change_id=f"cfg-{new_id()}",
            section=section,
            values=params.values_of(after),
            changed=params.changes(before, after),
            issued_by=who,
        )
        self.actions += 1
        log.info("live parameters changed", section=section, changed=change.changed, who=who)
        answers = await self._send(change, change.change_id, CONFIG_RESPONDERS[section])
        self.sections[section] = after
        return ParamsAnswer(
            **answers.model_dump(), section=section, values=change.values, changed=change.changed
        )

    async def _send(
        self, event: Control | ConfigChange, command_id: str, responders: tuple[str, ...]
    ) -> Answers:
        """Publish, wait (bounded) for every responder's ack, say what each said or that it was
        silent. Listening since start: no answer is missed."""
        awaited = self._awaited[command_id] = Awaited(frozenset(responders))
        try:
            await self.rt.emit(event)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(awaited.all_in.wait(), self.cfg.ack_wait_s)
        finally:
            self._awaited.pop(command_id, None)
        acks = [
            {"service": a.service, "accepted": a.accepted, "summary": a.summary, "counts": dict(a.counts)}
            for a in awaited.acks.values()
        ]
        silent = sorted(set(responders) - set(awaited.acks))
        ok = not silent and all(a["accepted"] for a in acks)
        return Answers(command_id=command_id, ok=ok, acks=acks, silent=silent)

    async def signal(self, body: SignalIn, who: str) -> str:
        now = self.rt.now_ns()
        event = ExternalSignal(
            ts_event=body.ts_ns or now,
            ts_init=now,
            symbol=body.symbol.upper(),
            source=body.source,
            signal=body.signal,
            horizon=body.horizon,
            confidence=body.confidence,
            issued_by=who,
        )
        await self.rt.emit(event)
        return f"{event.source}:{event.symbol}:{event.ts_event}"

    async def audit(self, since: dt.datetime, kinds: list[str], limit: int) -> list[dict[str, Any]]:
        from fastapi import HTTPException

        from libs.common.storage.audit import read_audit

        dsn = self.settings.db.url
        if not dsn:
            raise HTTPException(503, "no database configured: the audit trail lives there")
        until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
        try:
            rows, _ = await asyncio.to_thread(
                read_audit, dsn, since, until, kinds, limit, self.settings.db.connect_timeout_s
            )
        except Exception as exc:
            raise HTTPException(503, f"audit trail unreadable: {type(exc).__name__}") from None
        return [
            {
                "ts": r.ts.isoformat(),
                "kind": r.kind,
                "subject": r.subject,
                "who": r.who,
                "what": r.what,
                "ref": r.ref,
            }
            for r in rows
        ]

    async def watch_quotes(self, symbol: str) -> None:
        """Top of book for a symbol someone looks at: quotes are many, so only those asked for."""
        if symbol in self._quote_watch:
            return
        self._quote_watch.add(symbol)
        await self.rt.subscribe(f"md.quote.{symbol}", self._on_quote, types=Quote)

    # -- people ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "tokens": len(self.tokens.tokens),
            "ws_clients": len(self.clients),
            "ws_dropped": self.dropped_clients,
            "actions": self.actions,
            "view": dict(self.view.stats),
        }


def _live_error(field: str, value: Any, why: str) -> Exception:
    """A field error in pydantic's shape (the API turns it into a 422 naming the field)."""
    from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

    detail: InitErrorDetails = {"type": PydanticCustomError("live", why), "loc": (field,), "input": value}
    return ValidationError.from_exception_data("live", [detail])


def _dashboard_dir(web: Path) -> Path:
    """A relative web_dir: from where the service runs, else from the checkout it came from."""
    if web.is_absolute():
        return web
    here, checkout = web.resolve(), Path(__file__).resolve().parents[2] / web
    return here if here.exists() or not checkout.exists() else checkout
