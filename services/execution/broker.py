"""The broker seam: what the execution gateway needs from a venue, whatever the venue is.

One order type (``BrokerOrder``: what we ask the venue to work) and one report type
(``BrokerReport``: what the venue says happened) for every broker, and one ``Broker`` protocol that
``ExecutionApp`` holds without knowing which it is. Two implementations:

- ``SimBroker`` (simbroker.py): the simulated venue. Its time is market time: it fills against the
  market data it is given (``on_market``), so its reports come back from that call, and from
  ``due`` once the data has ended;
- ``IbBroker`` (ib.py): TWS / IB Gateway on the official client. Its reports arrive when IB sends
  them, through the ``ReportSink`` handed to ``start``; ``on_market`` and ``due`` have nothing.

The contract both keep is one test module run against each (tests/integration/
test_broker_contract.py): the SimBroker directly, IB through the fake TWS.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from proto.base import Event

if TYPE_CHECKING:
    from libs.common.config import Settings

ReportKind = Literal["ack", "fill", "cancelled", "rejected", "replaced", "replace_rejected"]
OrderType = Literal["MKT", "LMT", "STP", "STP_LMT", "TRAIL"]
OrderT = TypeVar("OrderT", bound="BrokerOrder")


@dataclass
class BrokerOrder:
    """One order at the venue. The execution core makes them (a child of an approved order, a
    bracket leg); a broker keeps its own copy of what it works."""

    client_order_id: str
    symbol: str
    side: Literal["BUY", "SELL"]
    quantity: float
    order_type: OrderType = "MKT"
    limit_price: float | None = None
    stop_price: float | None = None
    tif: Literal["DAY", "GTC", "IOC"] = "DAY"
    trail_amount: float | None = None
    trail_percent: float | None = None
    #: a bracket leg: held at the venue until this order fills
    parent_id: str = ""
    #: legs in one OCA group reduce each other by every fill
    oca_group: str = ""
    #: IB: False holds the order at TWS until a later one of its bracket transmits
    transmit: bool = True

    def copy_as(self, kind: type[OrderT]) -> OrderT:
        """This order as another order class (a broker's working copy with state of its own)."""
        return kind(**{f.name: getattr(self, f.name) for f in fields(BrokerOrder)})


@dataclass(frozen=True)
class BrokerReport:
    kind: ReportKind
    client_order_id: str
    ts: int  # when it reaches us
    venue_ts: int  # when it happened at the venue
    quantity: float = 0.0
    price: float = 0.0
    exec_id: str = ""
    commission: float | None = 0.0  # None: not known (IB's report is late or unset)
    liquidity: Literal["ADD", "REMOVE", "UNKNOWN"] = "UNKNOWN"
    reason: str = ""


@dataclass(frozen=True)
class MarginPreview:
    """A broker's what-if answer for one order (None: the broker left it unset)."""

    init_margin_change: float | None
    maint_margin_change: float | None
    equity_with_loan_after: float | None
    init_margin_after: float | None
    commission: float | None
    warning: str = ""
    error: str = ""


#: where a broker hands reports it makes on its own time (IB's callbacks); the gateway acts on each
ReportSink = Callable[[BrokerReport], Awaitable[None]]


class Broker(Protocol):
    """What the execution gateway asks of a venue. Orders go out journaled (the gateway's job);
    a broker never resubmits on its own and treats an outcome it cannot know as unknown."""

    name: str

    async def start(self, reports: ReportSink, namespace: str = "") -> None:
        """Connect (and reconcile) in the background; reports made later go to ``reports``. Ids
        the broker makes itself (a simulated venue's exec ids) are unique per ``namespace`` (the
        run), since fills are deduplicated by them."""

    async def stop(self) -> None: ...

    def now_ns(self) -> int:
        """The broker's time: market time for a simulated venue, the wall clock for a real one
        (what the gateway's working orders are timed by)."""

    def on_market(self, event: Event) -> list[BrokerReport]:
        """Market data as the gateway receives it; the reports it makes due (a simulated venue
        trades against it; a real one has its own feed and returns none)."""

    def due(self) -> list[BrokerReport]:
        """Reports due now without market data (a simulated venue whose data has ended)."""

    async def submit(self, order: BrokerOrder) -> None: ...

    async def cancel(self, client_order_id: str) -> None: ...

    async def replace(
        self,
        client_order_id: str,
        quantity: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> None: ...

    async def cancel_all(self) -> None:
        """The kill switch at the venue: cancel every open order of the account, ours or not."""

    async def positions(self) -> dict[str, float] | None:
        """Net shares per symbol as the venue holds them; None when it cannot say now."""

    async def what_if(self, order: BrokerOrder, timeout_s: float = 5.0) -> MarginPreview | None:
        """The margin and commission the order would cost, never routed; None: no answer."""

    def summary(self) -> dict[str, Any]:
        """For /status and the run summary."""


def make_broker(settings: Settings, our_positions: Callable[[], dict[str, float]]) -> Broker:
    """The configured venue (``execution.broker``). ``our_positions``: the gateway's books, which a
    real broker compares with the venue's at every reconciliation. Each is imported only when
    chosen: IB's client is the ``ib`` extra."""
    x = settings.execution
    if x.broker == "ib":
        from services.execution.ib import IbBroker

        ids = x.journal.parent / "ib-order-ids.jsonl"
        return IbBroker(settings.ib, ids, our_positions=our_positions)
    from services.execution.simbroker import SimBroker

    return SimBroker(x.sim, settings.market)
