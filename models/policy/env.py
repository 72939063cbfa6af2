"""The RL environment: one symbol-day on the backtest's own cores, with the SimBroker as the venue.

An episode replays a *tape* of one symbol-day: what the market-data gateway, features, fast lane
and sentiment published for it (those never depend on what the policy does, so each symbol-day is
recorded once, by the backtest engine itself, see ``record_tapes``). The tape is played into the
fleet's QOS, risk gate, execution gateway (SimBroker: latency, walking the quoted size, IB
commissions) and policy apps on an in-process bus and a simulated clock, exactly as in a backtest,
with QOS proposing its entries to the policy (qos.policy: on).

- a step is one entry QOS proposes: the observation is the policy service's own
  (models/policy/observation.py), the action is [scale, timing] in [0, 1]^2 (serving.decode_action:
  scale of QOS's order size; timing >= 0.5 enters now, below waits: QOS proposes again at its next
  score while the signal still clears the threshold);
- the reward of a step is what happened until the next proposal (or the day's end): the change of
  the day's P&L (fills at the SimBroker's prices, commissions, the position marked at the latest
  vector's price), in bps of QOS's order notional, less ``risk_penalty`` times the growth of the
  drawdown from the day's best, in the same bps;
- the episode ends with the tape. Exits stay QOS's and the protective exits'; the risk gate may
  still deny or shrink any order.

Speed: while the SimBroker has nothing working, quotes only set the touch and trades do nothing
(SimBroker.idle), so the player keeps only the latest quote (the touch) and the latest trade (the
broker's clock) and delivers them before the next event that is not market data. Every quote and
trade is delivered while an order works. Risk keeps only the latest quote too, so its decisions see
the same marks; tests/integration/test_policy_env.py holds the environment's fills to the
backtest's on the shipped day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from libs.common.bus import Delivery, InProcessBus
from libs.common.calendar import market_calendar
from libs.common.clock import SimClock
from libs.common.config import Settings
from libs.common.logging import get_logger
from libs.common.markettime import ny_minute_facts
from libs.common.runtime import Runtime, ServiceApp
from models.policy.observation import LIMIT, ObservationSpec
from proto.base import Event
from proto.execution import Fill
from proto.features import MICRO_TIMEFRAME
from proto.market import FeedStatus, Quote, Trade
from proto.signals import QosScore
from proto.subjects import SERVICES, spec
from proto.units import BPS

log = get_logger(__name__)
STATUS = spec("md.status")
TAPE_TIMEFRAMES = frozenset({"1m", MICRO_TIMEFRAME})
# What the episode's apps consume from upstream (feature vectors: only the 1m and 1s ones).
KEPT = frozenset({("md", "quote"), ("md", "trade"), ("sig", "fast"), ("news", "sentiment")})
# The apps an episode runs, in the catalog's start order (the backtest's subscription order).
EPISODE_APPS = tuple(s.name for s in SERVICES if s.name in {"execution", "risk", "policy", "qos"})


@dataclass
class Tape:
    """One symbol-day of what the upstream services published, in bus order."""

    symbol: str
    date: str
    #: (subject, event, the simulated clock when it was published), in bus order
    events: list[tuple[str, Event, int]]

    @property
    def name(self) -> str:
        return f"{self.symbol}@{self.date}"


class TapeRecorder(ServiceApp):
    """Subscribed to everything, first: sees the events in the bus's delivery order."""

    name = "tape"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, Event, int]] = []

    async def start(self, rt: Runtime) -> None:
        self.now = rt.clock.now_ns
        await rt.subscribe(">", self._on_event)

    async def _on_event(self, d: Delivery) -> None:
        kind = tuple(d.subject.split(".", 2)[:2])
        if kind in KEPT or (kind[0] == "feat" and kind[1] in TAPE_TIMEFRAMES):
            self.events.append((d.subject, d.event, self.now()))


def _date_of(ts: int) -> str:
    return dt.date.fromordinal(ny_minute_facts(ts)[0]).strftime("%Y%m%d")


def record_tapes(
    settings: Settings,
    days: list[Any],
    news: list[Path] | None = None,
    sentiment: bool = True,
    progress: bool = False,
) -> list[Tape]:
    """Run the backtest engine with only the upstream services (features, fast lane, sentiment)
    over each day, and cut what they published into one tape per symbol."""
    from tradefleet.backtest.engine import Backtest, InlineSentiment, load_sentiment_scorer, run_backtest
    from tradefleet.services import RUNNABLE

    recorder = TapeRecorder()

    def apps(s: Settings) -> list[ServiceApp]:
        built: list[ServiceApp] = [recorder]
        if sentiment and news:
            scorer, error = load_sentiment_scorer(s)
            if scorer is None:
                log.error("tapes recorded without sentiment", error=error)
            else:
                built.append(InlineSentiment(s, scorer))
        return [*built, RUNNABLE["fastlane"](s), RUNNABLE["features"](s)]

    # One run per day, as a fleet started each morning: the fast lane's drift quarantine and the
    # indicators start afresh (a model quarantined on Monday would otherwise propose nothing all week).
    for day in days:
        run_backtest(Backtest(settings, [day], news, progress=progress, apps=apps))
    traded = {(day.date, symbol) for day in days for symbol in day.symbols}
    tapes: dict[tuple[str, str], Tape] = {}
    for subject, event, clock_ns in recorder.events:
        symbol = event.symbol  # type: ignore[attr-defined]
        key = (symbol, _date_of(event.ts_event))
        if (key[1], symbol) not in traded:
            continue  # a headline's other tickers: no market data to trade them on
        tape = tapes.get(key)
        if tape is None:
            tape = tapes[key] = Tape(symbol, key[1], [])
        tape.events.append((subject, event, clock_ns))
    return [tapes[k] for k in sorted(tapes)]


@dataclass(frozen=True)
class RewardConfig:
    risk_penalty: float = 0.5  # per bp of drawdown growth


def episode_settings(settings: Settings, work: Path) -> Settings:
    """A backtest's settings with QOS proposing its entries to the policy, which never waits on a
    registry (the learner is the policy)."""
    from tradefleet.backtest.engine import backtest_settings

    base = backtest_settings(settings, work)
    return base.model_copy(
        update={"qos": base.qos.model_copy(update={"policy": "on", "policy_fallback": "hold"})}
    )


class _Episode:
    """One tape being played into the apps; suspended at each proposal until the learner acts."""

    def __init__(self, env: SymbolDayEnv, tape: Tape, number: int) -> None:
        from services.policy.runtime import PolicyApp
        from tradefleet.backtest.engine import BacktestHooks
        from tradefleet.services import RUNNABLE

        self.env, self.tape = env, tape
        journal = env.work / f"journal-{number}.jsonl"
        journal.unlink(missing_ok=True)
        s = env.settings.model_copy(
            update={"execution": env.settings.execution.model_copy(update={"journal": journal})}
        )
        self.journal = journal
        self.clock = SimClock()
        self.hooks = BacktestHooks()
        self.bus = InProcessBus(hooks=self.hooks)
        self.policy = PolicyApp(s, decide=self._decide)
        self.apps: list[ServiceApp] = [
            self.policy if name == "policy" else RUNNABLE[name](s) for name in EPISODE_APPS
        ]
        session = market_calendar(s.market).session_on(tape.date)
        if session is None:
            raise ValueError(f"{tape.date} is not a trading day of market.calendar {s.market.calendar}")
        self.session = session
        self.waiting: asyncio.Future[np.ndarray] | None = None
        self.pending: tuple[np.ndarray, QosScore] | None = None
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.decisions = 0
        self.fills: list[Fill] = []

    async def start(self) -> None:
        self.clock.set(self.session[0] - 60 * 10**9)
        for app in self.apps:
            rt = Runtime(app.name, self.env.settings, bus=self.bus, clock=self.clock)
            rt.started_ns = self.session[0]
            rt.app = app
            await app.start(rt)
        self.broker = self.apps[0].broker  # type: ignore[attr-defined]
        await self.bus.subscribe("exec.fill.>", self._on_fill)
        self.task = asyncio.ensure_future(self._play())

    async def _on_fill(self, d: Delivery) -> None:
        if isinstance(d.event, Fill):
            self.fills.append(d.event)

    async def _decide(self, obs: np.ndarray, q: QosScore) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.waiting, self.pending = future, (obs, q)
        self.decisions += 1
        self.ready.set()
        return await future

    async def _status(self, state: Any, seq: int) -> None:
        now = self.clock.now_ns()
        status = FeedStatus(
            ts_event=now, ts_init=now, source=f"policy-env:{self.tape.name}", state=state, seq=seq
        )
        await self.bus.publish(STATUS.subject(), status)

    async def _play(self) -> None:
        await self._status("replay_started", 1)
        # One stream (publish_all): each event settled before the next is taken, which is when
        # the broker's idleness below is read; one coroutine for the tape, not one per event.
        await self.bus.publish_all(self._stream())
        await self._status("replay_finished", 2)
        for app in self.apps:
            await app.stop()
        if self.hooks.errors:
            first = next(iter(self.hooks.first.values()), None)
            raise RuntimeError(
                f"handlers failed in the policy environment: {dict(self.hooks.errors)}"
            ) from first

    def _stream(self) -> Iterator[tuple[str, Event]]:
        """The tape's events, each with the clock set to its own. While the broker is idle, only
        the latest quote (the touch) and the latest trade (the broker's and the gateway's clock)
        matter; held back until the next other event."""
        set_clock, idle = self.clock.set, self.broker.idle
        held: dict[type, tuple[int, str, Event, int]] = {}
        for n, (subject, event, clock_ns) in enumerate(self.tape.events):
            kind = type(event)
            if (kind is Quote or kind is Trade) and idle():
                held[kind] = (n, subject, event, clock_ns)
                continue
            if held:
                yield from self._held(held)
            set_clock(clock_ns)
            yield subject, event
        yield from self._held(held)

    def _held(self, held: dict[type, tuple[int, str, Event, int]]) -> Iterator[tuple[str, Event]]:
        """The held market data, in tape order, each at its own clock."""
        for _, subject, event, clock_ns in sorted(held.values(), key=lambda h: h[0]):
            self.clock.set(clock_ns)
            yield subject, event
        held.clear()

    async def until_decision(self) -> bool:
        """Run until the learner must act (True) or the tape ends (False)."""
        assert self.task is not None
        if not self.ready.is_set():
            waiter = asyncio.ensure_future(self.ready.wait())
            await asyncio.wait({self.task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        if self.ready.is_set():
            self.ready.clear()  # set by _decide: the learner's turn
            return True
        if self.task.done():
            self.task.result()  # a failure in the apps fails the episode, loudly
            return False
        return True

    def equity_bps(self) -> tuple[float, float]:
        book = self.policy.core.obs.book(self.tape.symbol) if self.policy.core else None
        if book is None:
            return 0.0, 0.0
        bps = BPS / self.env.obs_spec.order_notional
        return book.equity() * bps, book.drawdown() * bps

    async def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            for app in self.apps:
                await app.stop()
        self.journal.unlink(missing_ok=True)


class SymbolDayEnv(gym.Env[np.ndarray, np.ndarray]):
    """gymnasium environment: each episode one tape (a symbol-day), chosen at random (seeded) or
    by ``reset(options={"tape": i})``."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        tapes: list[Tape],
        settings: Settings,
        reward: RewardConfig | None = None,
        spec: ObservationSpec | None = None,
    ) -> None:
        from services.policy.runtime import fleet_spec

        if not tapes:
            raise ValueError("no tapes: the environment needs at least one symbol-day")
        self.tapes = tapes
        self._tmp = tempfile.TemporaryDirectory(prefix="tf-policy-env-")
        self.work = Path(self._tmp.name)
        self.settings = episode_settings(settings, self.work)
        self.obs_spec = spec or fleet_spec(self.settings)
        self.reward_cfg = reward or RewardConfig()
        # bounded as the observation is clipped (gymnasium's checker warns on infinite bounds)
        self.observation_space = gym.spaces.Box(-LIMIT, LIMIT, shape=(self.obs_spec.size,), dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self._loop = asyncio.new_event_loop()
        self._episode: _Episode | None = None
        self._episodes = 0
        self._last_obs = np.zeros(self.obs_spec.size, dtype=np.float32)
        self._equity = self._drawdown = 0.0
        self.empty_tapes: set[int] = set()
        self.last_fills: list[Fill] = []  # the last finished episode's, for inspection

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._drop_episode()
        fixed = (options or {}).get("tape")
        for _ in range(len(self.tapes)):
            index = int(fixed) if fixed is not None else self._pick()
            episode = self._begin(index)
            if episode is not None:
                obs, q = episode.pending  # type: ignore[misc]
                self._last_obs = obs
                return obs, {"tape": self.tapes[index].name, "score_ts": q.ts_event}
            self.empty_tapes.add(index)
            if fixed is not None:
                break
        raise ValueError("no tape has an entry proposal: QOS never wanted to enter, nothing to decide")

    def _pick(self) -> int:
        choices = [i for i in range(len(self.tapes)) if i not in self.empty_tapes] or list(
            range(len(self.tapes))
        )
        return int(choices[int(self.np_random.integers(len(choices)))])

    def _begin(self, index: int) -> _Episode | None:
        self._episodes += 1
        episode = _Episode(self, self.tapes[index], self._episodes)
        self._loop.run_until_complete(episode.start())
        self._episode = episode
        self._equity = self._drawdown = 0.0
        if self._loop.run_until_complete(episode.until_decision()):
            return episode
        self._drop_episode()
        return None

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        episode = self._episode
        if episode is None or episode.waiting is None:
            raise RuntimeError("step() before reset(), or after the episode ended")
        waiting, episode.waiting = episode.waiting, None
        waiting.set_result(np.asarray(action, dtype=np.float32))
        more = self._loop.run_until_complete(episode.until_decision())
        equity, drawdown = episode.equity_bps()
        reward = (equity - self._equity) - self.reward_cfg.risk_penalty * max(0.0, drawdown - self._drawdown)
        self._equity, self._drawdown = equity, drawdown
        info: dict[str, Any] = {"tape": episode.tape.name, "equity_bps": equity, "drawdown_bps": drawdown}
        if more:
            obs, q = episode.pending  # type: ignore[misc]
            self._last_obs = obs
            return obs, float(reward), False, False, info | {"score_ts": q.ts_event}
        info["decisions"] = episode.decisions
        info["fills"] = len(episode.fills)
        self.last_fills = episode.fills
        info["qos"] = dict(episode.apps[EPISODE_APPS.index("qos")].core.stats)  # type: ignore[attr-defined]
        self._episode = None
        episode.journal.unlink(missing_ok=True)
        return self._last_obs, float(reward), True, False, info

    def _drop_episode(self) -> None:
        if self._episode is not None:
            self._loop.run_until_complete(self._episode.cancel())
            self._episode = None

    def close(self) -> None:
        self._drop_episode()
        if not self._loop.is_closed():
            self._loop.close()
        self._tmp.cleanup()
