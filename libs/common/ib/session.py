"""One TWS API connection on the official ``ibapi`` client, brought into asyncio, kept alive.

ibapi is threaded: ``EClient.connect`` blocks, and ``EClient.run`` decodes messages on its own
thread and calls ``EWrapper`` methods there. Here every callback is handed to the event loop
(``call_soon_threadsafe``) as ``(name, args)``, so the providers above stay single-threaded.

What it takes care of (../shared/reference/ib-api.md, section 6, "Connection/session"):
- ready only after both ``nextValidId`` and ``managedAccounts``, within ``ready_timeout_s``;
- reconnect with capped exponential backoff and jitter, after a drop, a refused connect or 326
  (client id in use: the old socket is closed and awaited first; an alert is raised);
- a watchdog: no inbound traffic for ``watchdog_s`` -> probe with ``reqCurrentTime``; no answer
  within ``probe_timeout_s`` -> drop and reconnect (a half-open socket says nothing otherwise);
- one outbound pacer for every request (``max_msgs_per_s``, under IB's 50/s);
- error codes classified once (connectivity, farm, pacing, permission, order) for the callers;
- connectivity state: 1100 lost, 1101 restored with data lost (resubscribe), 1102 restored with
  data kept; and an alert when a disconnect outlasts its expected window.

This module never places orders or interprets data: the md-gateway and execution providers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from aiolimiter import AsyncLimiter
from ibapi.client import EClient
from ibapi.wrapper import EWrapper

from libs.common.config import IbSettings
from libs.common.logging import get_logger

log = get_logger(__name__)

CONNECTIVITY_LOST = frozenset({1100, 1300, 2110})
RESTORED_DATA_LOST = 1101
RESTORED_DATA_KEPT = 1102
CLIENT_ID_IN_USE = 326
RATE_EXCEEDED = 100
FARM_CODES = range(2100, 2200)  # farm status: informational
# Market-data permission notes: the data (or a delayed form of it) may still flow, and they never
# end an unrelated subscription (rust-ibapi#768).
PERMISSION_CODES = frozenset({354, 10089, 10090, 10167, 10168, 10197})
ORDER_CODES = frozenset(
    {103, 104, 105, 110, 161, 201, 202, 203, 321, 399, 404, 434, 10147, 10148, 10268, 10269}
)

Handler = Callable[[str, tuple[Any, ...]], None]


def classify(code: int) -> str:
    """connectivity | restored | farm | pacing | permission | order | client_id | other."""
    if code in CONNECTIVITY_LOST:
        return "connectivity"
    if code in (RESTORED_DATA_LOST, RESTORED_DATA_KEPT):
        return "restored"
    if code in FARM_CODES:
        return "farm"
    if code in (RATE_EXCEEDED, 162, 420):
        return "pacing"
    if code in PERMISSION_CODES:
        return "permission"
    if code in ORDER_CODES:
        return "order"
    if code == CLIENT_ID_IN_USE:
        return "client_id"
    return "other"


class _Bridge(EWrapper, EClient):
    """EWrapper methods become ``(name, args)`` on the event loop; unknown ones are ignored by the
    base class, which logs nothing for them."""

    FORWARD = (
        "nextValidId",
        "managedAccounts",
        "error",
        "connectionClosed",
        "currentTime",
        "tickPrice",
        "tickSize",
        "tickString",
        "tickGeneric",
        "marketDataType",
        "tickReqParams",
        "tickByTickBidAsk",
        "tickByTickAllLast",
        "tickByTickMidPoint",
        "updateMktDepth",
        "updateMktDepthL2",
        "openOrder",
        "openOrderEnd",
        "orderStatus",
        "execDetails",
        "execDetailsEnd",
        "commissionReport",
        "position",
        "positionEnd",
        "completedOrder",
        "completedOrdersEnd",
        "accountSummary",
        "accountSummaryEnd",
        "historicalData",
        "historicalDataEnd",
        "historicalDataUpdate",
        "historicalTicks",
        "historicalTicksBidAsk",
        "historicalTicksLast",
        "tickNews",
        "updateNewsBulletin",
    )

    def __init__(self, deliver: Callable[[str, tuple[Any, ...]], None]) -> None:
        EClient.__init__(self, self)
        self._deliver = deliver
        for name in self.FORWARD:
            setattr(self, name, self._forwarder(name))

    def _forwarder(self, name: str) -> Callable[..., None]:
        def forward(*args: Any) -> None:
            self._deliver(name, args)

        return forward


class IbSession:
    """One TWS / IB Gateway connection of one service: the ``ib`` settings section, with the
    service's own client id (IB binds orders to the client id that placed them)."""

    def __init__(
        self,
        config: IbSettings,
        client_id: int,
        on_event: Handler,
        *,
        on_alert: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = config
        self.client_id = client_id
        self.on_event = on_event
        self.on_alert = on_alert or (lambda title, body: None)
        self.clock = clock
        # One message per 1/rate seconds: a bucket as deep as the rate would let a burst of 45 and
        # then 45 more land in the same second, which IB answers with 100 and a closed socket.
        self.limiter = AsyncLimiter(1, 1.0 / config.max_msgs_per_s)
        self.ready = asyncio.Event()
        self.closed = asyncio.Event()
        self.next_valid_id = 0
        self.accounts: list[str] = []
        self.connections = 0  # successful (ready) connections so far
        self.data_lost = asyncio.Event()  # set on 1101 or a new connection: resubscribe
        self.connectivity = "down"  # down | up | lost (1100)
        self.last_inbound = 0.0
        self.disconnected_since: float | None = None
        self.stats: dict[str, int] = {}
        self._client: _Bridge | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._got_id = asyncio.Event()
        self._got_accounts = asyncio.Event()
        self._probe: asyncio.Future[int] | None = None
        self._attempt = 0
        self._generation = 0  # callbacks from an older connection's thread are ignored

    # -- public ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, stay connected, reconnect after any loss, until ``stop``."""
        self._loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                await self._connect_once()
                await self._watch()
            except (ConnectionError, OSError, TimeoutError) as exc:
                self._count("connect_failures")
                log.warning("ib connect failed", error=str(exc), attempt=self._attempt)
            finally:
                await self._close()
            if self._stopping:
                break
            await asyncio.sleep(self._backoff())

    async def stop(self) -> None:
        self._stopping = True
        await self._close()

    async def send(self, request: Callable[[EClient], None]) -> None:
        """Send one request through the pacer. Waits for the connection to be ready."""
        await self.ready.wait()
        async with self.limiter:
            client = self._client
            if client is None or not client.isConnected():
                raise ConnectionError("not connected to TWS")
            request(client)
            self._count("requests")

    def send_now(self, request: Callable[[EClient], None]) -> bool:
        """For the kill switch: skip the pacer's queue (one message can never breach 50/s)."""
        client = self._client
        if client is None or not client.isConnected():
            return False
        request(client)
        return True

    async def current_time(self, timeout_s: float | None = None) -> int:
        """A round trip to TWS (the watchdog's probe): its clock, in epoch seconds."""
        assert self._loop is not None
        self._probe = self._loop.create_future()
        await self.send(lambda c: c.reqCurrentTime())
        return await asyncio.wait_for(self._probe, timeout_s or self.cfg.probe_timeout_s)

    # -- connecting -----------------------------------------------------------------------------
    async def _connect_once(self) -> None:
        self._attempt += 1
        self.ready.clear()
        self._got_id.clear()
        self._got_accounts.clear()
        self.closed.clear()
        self._generation += 1
        generation = self._generation
        client = _Bridge(lambda name, args: self._from_thread(generation, name, args))
        if self.cfg.connect_options:
            client.setConnectionOptions(self.cfg.connect_options)
        self._client = client
        await asyncio.wait_for(
            asyncio.to_thread(client.connect, self.cfg.host, self.cfg.port, self.client_id),
            self.cfg.connect_timeout_s,
        )
        self._thread = threading.Thread(target=client.run, name=f"ibapi-{self.client_id}", daemon=True)
        self._thread.start()  # also drains what came before a refusal (the 326 that says why)
        if not client.isConnected():
            await asyncio.to_thread(self._thread.join, 2.0)
            raise ConnectionError(f"no TWS session at {self.cfg.host}:{self.cfg.port}")
        both: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(self._got_id.wait(), self._got_accounts.wait())
        )
        closed: asyncio.Future[Any] = asyncio.ensure_future(self.closed.wait())
        done, pending = await asyncio.wait(
            {both, closed}, timeout=self.cfg.ready_timeout_s, return_when="FIRST_COMPLETED"
        )
        for task in pending:
            task.cancel()
        if both not in done:  # refused (326 closes the socket) or silent
            raise (
                ConnectionError("TWS closed the connection before it was ready")
                if closed in done
                else TimeoutError("TWS did not send nextValidId and managedAccounts")
            )
        self._attempt = 0
        self.connections += 1
        self.connectivity = "up"
        self.last_inbound = self.clock()
        if self.disconnected_since is not None:
            self._count("reconnects")
        self.disconnected_since = None
        self.data_lost.set()  # a new connection has no subscriptions: the providers resubscribe
        self.ready.set()
        log.info("ib ready", host=self.cfg.host, port=self.cfg.port, next_valid_id=self.next_valid_id)

    async def _watch(self) -> None:
        """Until the socket closes: probe it when it has been silent too long."""
        while not self._stopping and self._client is not None and self._client.isConnected():
            try:
                await asyncio.wait_for(self.closed.wait(), timeout=min(1.0, self.cfg.watchdog_s))
                return
            except TimeoutError:
                pass
            if self.clock() - self.last_inbound >= self.cfg.watchdog_s:
                try:
                    await self.current_time()
                except TimeoutError:
                    self._count("watchdog_drops")
                    log.warning(
                        "ib socket silent: reconnecting", silent_s=round(self.clock() - self.last_inbound, 1)
                    )
                    return

    async def _close(self) -> None:
        self.ready.clear()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.disconnect()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)  # the old socket is gone before a new connect
        if self.connectivity != "down":
            self.connectivity = "down"
            self.disconnected_since = self.clock()
            self.on_event("disconnected", ())
        self.closed.clear()

    def _backoff(self) -> float:
        base = min(self.cfg.backoff_max_s, self.cfg.backoff_initial_s * 2 ** max(self._attempt - 1, 0))
        return base * random.uniform(0.5, 1.0)  # jitter: two sessions never retry in lockstep

    # -- callbacks -------------------------------------------------------------------------------
    def _from_thread(self, generation: int, name: str, args: tuple[Any, ...]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed while the thread ran on
                loop.call_soon_threadsafe(self._on_callback, generation, name, args)

    def _on_callback(self, generation: int, name: str, args: tuple[Any, ...]) -> None:
        if generation != self._generation:
            return  # the previous connection's last words (its connectionClosed, late ticks)
        self.last_inbound = self.clock()
        if name == "nextValidId":
            self.next_valid_id = int(args[0])
            self._got_id.set()
        elif name == "managedAccounts":
            self.accounts = [a for a in str(args[0]).split(",") if a]
            self._got_accounts.set()
        elif name == "currentTime":
            if self._probe is not None and not self._probe.done():
                self._probe.set_result(int(args[0]))
        elif name == "connectionClosed":
            self.ready.clear()  # at once: nothing may be sent into a closed socket meanwhile
            self.closed.set()
        elif name == "error":
            self._on_error(int(args[0]), int(args[1]), str(args[2]))
        self.on_event(name, args)

    def _on_error(self, req_id: int, code: int, text: str) -> None:
        kind = classify(code)
        self._count(f"error_{code}")
        if code in CONNECTIVITY_LOST:
            self.connectivity = "lost"
            self.disconnected_since = self.disconnected_since or self.clock()
        elif code == RESTORED_DATA_LOST:
            self.connectivity = "up"
            self.disconnected_since = None
            self.data_lost.set()
        elif code == RESTORED_DATA_KEPT:
            self.connectivity = "up"
            self.disconnected_since = None
        elif code == CLIENT_ID_IN_USE:
            self.on_alert(
                f"IB client id {self.client_id} already in use",
                "TWS refused the connection (326): a ghost session may hold the id; retrying with backoff.",
            )
        elif code == RATE_EXCEEDED:
            self.on_alert("IB message rate exceeded (100)", text)
        level = "info" if kind in ("farm", "permission") else "warning"
        getattr(log, level)("ib message", req_id=req_id, code=code, kind=kind, text=text)

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1
