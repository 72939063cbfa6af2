"""The QOS core: fast-lane predictions in; a QOS score per symbol and order intents out.

QOS = coherence * sum over horizons of w_tf * S_tf, where S_tf in [-1, 1] is each horizon's
signal and the weights (normalized over the horizons that count) move with:
- regime: a trending regime tilts weight toward the longer horizons, a ranging one toward the
  shorter ones;
- trailing hit rate: each horizon's recent directional accuracy (an EWMA, scored against the price
  a horizon later) scales its weight between 0.5x and 1.5x;
and coherence = 0.5 + 0.5 * |weighted agreement of the signs| damps a score whose horizons disagree.
Headline sentiment joins as the input "sentiment" when it has a weight: per symbol, the sum of the
polarities of its headlines, each decayed with ``sentiment_half_life_s`` (event time), clipped to
[-1, 1]. A headline re-evaluates its symbol at once (headline -> QOS -> intent).

Decisions, per symbol, one position direction at a time (netting: never opposing intents):
- enter when |QOS| >= entry_threshold, the symbol is armed and out of cool-down;
- exit when QOS decays by more than exit_decay from its peak since entry, or crosses exit_floor,
  after min_hold;
- hysteresis: after an entry or exit the symbol re-arms only once |QOS| fell below rearm_threshold;
- cool-down: no new entry within cooldown after an exit.
Quarantined and stale predictions do not count. An outside model's prediction (sig.ext.SYM, the
control API's /api/signal) joins as the input "external" when it has a weight, for
``external_ttl_s``. Symbols in ``entries_off`` ("*": all) take no new entries; exits go on.
Pure: no I/O; time is the events' time.

With the RL policy on (``policy="on"``), an entry QOS wants is first *proposed*: the score goes out
with action "propose" and the policy answers it on sig.policy.SYM (matched by the score's time)
with a size scale in [0, 1] and a timing, enter or wait. "enter" sends the intent at
``scale * order_notional``; "wait" leaves the symbol armed, so the next score that still clears the
threshold proposes again. Exits never wait for the policy. A proposal still unanswered at the
symbol's next score means the policy is silent: with ``policy_fallback="rules"`` QOS then enters by
its own rules at full size until the policy answers again (it answers every score, so QOS sees it
come back); with "hold" it only proposes, and a silent policy means no new entries.
"""

from __future__ import annotations

import collections
import math
from typing import Literal

from libs.common.clock import Clock
from libs.common.config import STRATEGY_INPUTS, FeaturesSettings, QosSettings
from libs.common.markettime import parse_duration_ns
from proto.base import Event
from proto.features import FeatureVector
from proto.news import SentimentScore
from proto.orders import OrderIntent
from proto.signals import ExternalSignal, PolicySignal, Prediction, QosScore
from proto.units import SECOND_NS as NS
from services.qos.arbiter import Exp3IX, HorizonArbiter
from services.qos.strategies import MADE_FOR, Strategies

Action = Literal["enter", "exit", "hold", "propose"]


class _Horizon:
    __slots__ = ("hit_rate", "latest", "pending", "span_ns")

    def __init__(self, span_ns: int) -> None:
        self.span_ns = span_ns
        self.latest: Prediction | None = None
        # (time, signal, price, the horizon's Exp3-IX probability then) of predictions to score
        self.pending: collections.deque[tuple[int, float, float, float]] = collections.deque()
        self.hit_rate = 0.5

    def signal(self) -> float:
        return self.latest.signal if self.latest is not None else 0.0


class _Symbol:
    def __init__(self, horizons: dict[str, int], exp3: tuple[float, float]) -> None:
        self.horizons = {h: _Horizon(span) for h, span in horizons.items()}
        self.exp3 = Exp3IX(horizons, *exp3)
        self.spread_bps = math.nan  # the latest 1m vector's quoted spread (the arbiter's cost)
        self.group_ts = -1
        self.group_count = 0
        self.group_batch = 1
        self.direction = 0
        self.quantity = 0.0
        self.peak = 0.0
        self.entry_ts = 0
        self.exit_ts = -(10**18)
        self.armed = True
        self.regime = ""
        self.price = 0.0
        self.entry_intent = ""
        self.exit_intent = ""
        self.exited: tuple[int, float] = (0, 0.0)  # direction and quantity before the last exit
        self.sentiment = 0.0  # decayed polarity sum at sentiment_ts
        self.sentiment_ts = 0
        self.external: ExternalSignal | None = None  # the latest outside model's prediction
        self.sources: dict[str, tuple[int, float]] = {}  # rule strategy -> (its vector's time, signal)
        self.proposal: tuple[int, float, dict[str, float]] | None = None  # ts, QOS, components
        self.policy_silent = False  # a proposal went unanswered; cleared by the policy's next answer


class QosCore:
    def __init__(
        self,
        config: QosSettings,
        clock: Clock,
        namespace: str = "qos",
        feature_names: list[str] | None = None,
    ) -> None:
        self.cfg = config
        self.pair_legs = {leg for p in config.pairs for leg in p.legs}
        # the rule strategies read the 1m vectors by feature name
        self.strategies = Strategies(config.strategies, feature_names or list(FeaturesSettings().names))
        self.clock = clock
        # Intent ids are deterministic within a run (a replay makes the same ones) and distinct
        # across runs: JetStream deduplicates by them, so a second run must not reuse the first's.
        self.namespace = namespace
        self.horizon_names = config.horizons()
        self.spans = {h: parse_duration_ns(h) for h in self.horizon_names}
        self.alpha = 1 - 0.5 ** (1 / config.hit_rate_halflife)
        self.arbiter = HorizonArbiter(config.arbiter_cost_multiple, config.arbiter_commission_bps)
        self.spread_at = (feature_names or list(FeaturesSettings().names)).index("spread_bps")
        self.symbols: dict[str, _Symbol] = {}
        self.stats: collections.Counter[str] = collections.Counter()

    def reconfigure(self, config: QosSettings) -> str:
        """Live parameters (a ConfigChange): applied from the next score on; "" when applied, else
        why not. The horizons are the shape of every symbol's state: changing which ones carry a
        weight needs a restart."""
        if config.horizons() != self.horizon_names:
            return (
                f"the weighted horizons cannot change live ({', '.join(self.horizon_names)} -> "
                f"{', '.join(config.horizons())}): restart qos with the new weights"
            )
        self.cfg = config
        self.pair_legs = {leg for p in config.pairs for leg in p.legs}
        self.strategies.config = config.strategies
        self.alpha = 1 - 0.5 ** (1 / config.hit_rate_halflife)
        self.arbiter = HorizonArbiter(config.arbiter_cost_multiple, config.arbiter_commission_bps)
        for s in self.symbols.values():
            s.exp3.eta, s.exp3.gamma = config.exp3_eta, config.exp3_gamma
        return ""

    def _new_symbol(self) -> _Symbol:
        return _Symbol(self.spans, (self.cfg.exp3_eta, self.cfg.exp3_gamma))

    def entries_off(self, symbol: str) -> bool:
        off = self.cfg.entries_off
        if symbol in self.pair_legs:
            return True  # a pair's leg: its pair enters it
        return bool(off) and ("*" in off or symbol in off)

    def on_prediction(self, p: Prediction) -> list[Event]:
        if p.horizon not in self.spans:
            self.stats["unweighted_horizon"] += 1
            return []
        s = self.symbols.get(p.symbol)
        if s is None:
            s = self.symbols[p.symbol] = self._new_symbol()
        out: list[Event] = []
        if p.ts_event != s.group_ts:
            if s.group_count:  # the previous vector's predictions did not all arrive
                self.stats["incomplete_groups"] += 1
                out += self._evaluate(p.symbol, s, s.group_ts)
            s.group_ts, s.group_count, s.group_batch = p.ts_event, 0, p.batch
        self._observe(s, p.horizon, p)
        s.regime, s.price = p.regime, p.price if p.price > 0 else s.price
        s.group_count += 1
        if s.group_count >= s.group_batch:
            s.group_count = 0
            out += self._evaluate(p.symbol, s, p.ts_event)
        return out

    def on_vector(self, v: FeatureVector) -> list[Event]:
        """A 1m vector: the weighted rule strategies' signals for its symbol. With no weighted
        horizon, the vector itself is the moment to score (no predictions will come)."""
        if v.timeframe != "1m":
            return []
        rules = any(self.cfg.weights.get(n, 0.0) > 0 for n in STRATEGY_INPUTS)
        if not rules and not self.arbiter.on:
            return []
        s = self.symbols.get(v.symbol)
        if s is None:
            s = self.symbols[v.symbol] = self._new_symbol()
        if self.arbiter.on and self.spread_at < len(v.values):
            s.spread_bps = v.values[self.spread_at]  # the arbiter's round-trip cost
        if not rules:
            return []
        for name, signal in self.strategies.signals(v).items():
            s.sources[name] = (v.ts_event, signal)
        self.stats["strategy_vectors"] += 1
        if self.spans:
            return []  # the vector's predictions score it
        s.regime, s.price = v.regime, v.price if v.price > 0 else s.price
        return self._evaluate(v.symbol, s, v.ts_event)

    def on_sentiment(self, score: SentimentScore) -> list[Event]:
        """A headline's polarity joins the symbol's decayed sentiment; with a weight, the symbol is
        scored again now (the latest of the headline's time and the last prediction's)."""
        s = self.symbols.get(score.symbol)
        if s is None:
            s = self.symbols[score.symbol] = self._new_symbol()
        now = max(score.ts_event, s.group_ts, s.sentiment_ts)
        s.sentiment = max(-1.0, min(1.0, self._sentiment_at(s, now) + score.polarity))
        s.sentiment_ts = now
        self.stats["sentiment_in"] += 1
        triggered = 0.0
        if self.cfg.weights.get("news_event", 0.0) > 0:
            triggered = self.strategies.news_signal(score.polarity, score.events)
            if triggered:
                s.sources["news_event"] = (now, triggered)
                self.stats["news_triggers"] += 1
        if (self.cfg.weights.get("sentiment", 0.0) <= 0 and not triggered) or s.group_count:
            return []  # unweighted; or mid-group: the group's last prediction scores it
        self.stats["rescored_on_headline"] += 1
        return self._evaluate(score.symbol, s, now)

    def on_external(self, signal: ExternalSignal) -> list[Event]:
        """An outside model's prediction: the symbol's input "external" until external_ttl_s after
        its time; with a weight, the symbol is scored again now (as a headline does)."""
        s = self.symbols.get(signal.symbol)
        if s is None:
            s = self.symbols[signal.symbol] = self._new_symbol()
        s.external = signal
        self.stats["external_in"] += 1
        if self.cfg.weights.get("external", 0.0) <= 0 or s.group_count:
            return []
        return self._evaluate(signal.symbol, s, max(signal.ts_event, s.group_ts, s.sentiment_ts))

    def _external_at(self, s: _Symbol, now: int) -> float:
        e = s.external
        if e is None or now - e.ts_event > self.cfg.external_ttl_s * NS or now < e.ts_event:
            return 0.0
        return e.signal

    def _sentiment_at(self, s: _Symbol, now: int) -> float:
        if not s.sentiment_ts:
            return 0.0
        age_s = max(0, now - s.sentiment_ts) / NS
        return s.sentiment * 0.5 ** (age_s / self.cfg.sentiment_half_life_s)

    def _observe(self, s: _Symbol, name: str, p: Prediction) -> None:
        """Score matured predictions of this horizon against today's price (its trailing hit rate
        and its Exp3-IX loss), then queue this one."""
        h = s.horizons[name]
        while h.pending and h.pending[0][0] + h.span_ns <= p.ts_event:
            _, signal, price, played = h.pending.popleft()
            move = p.price - price
            if signal and move and p.price > 0:
                hit = 1.0 if (signal > 0) == (move > 0) else 0.0
                h.hit_rate += self.alpha * (hit - h.hit_rate)
                s.exp3.update(name, 1.0 - hit, played)
        if not p.quarantined and p.price > 0:
            played = s.exp3.probabilities(self.cfg.weights).get(name, 0.0) if self._exp3 else 0.0
            h.pending.append((p.ts_event, p.signal, p.price, played))
        h.latest = p

    @property
    def _exp3(self) -> bool:
        return self.cfg.online_weighting == "exp3ix"

    # -- the score ----------------------------------------------------------------------------
    def _weights(self, s: _Symbol, now: int) -> dict[str, float]:
        stale = self.cfg.stale_after_s * NS
        live = [
            h
            for h in self.horizon_names
            if (p := s.horizons[h].latest) is not None
            and not p.quarantined
            and now - p.ts_event <= stale
            and self.cfg.weights[h] > 0
        ]
        sentiment = self.cfg.weights.get("sentiment", 0.0)
        news = sentiment > 0 and abs(self._sentiment_at(s, now)) >= 0.01
        external = self.cfg.weights.get("external", 0.0)
        outside = external > 0 and self._external_at(s, now) != 0.0
        news_hold = self.cfg.strategies.news_hold_s * NS
        rules = [
            name
            for name, (ts, _) in s.sources.items()
            if self.cfg.weights.get(name, 0.0) > 0
            and 0 <= now - ts <= (news_hold if name == "news_event" else stale)
        ]
        if not live and not news and not outside and not rules:
            return {}
        trend = s.regime.split("/")[0]
        tilt_sign = 1.0 if trend in ("up", "down") else -1.0 if trend == "range" else 0.0
        n = len(self.horizon_names)
        raw = {}
        online = s.exp3.factors() if self._exp3 else {}
        for h in live:
            p = s.horizons[h].latest
            if self.arbiter.on and p is not None and not self.arbiter.clears(p.expected_return, s.spread_bps):
                raw[h] = 0.0  # its expected move does not pay its round trip: said, weighed nothing
                self.stats["arbiter_cut"] += 1
                continue
            position = self.horizon_names.index(h) / (n - 1) if n > 1 else 0.5
            regime_factor = 1 + tilt_sign * self.cfg.regime_tilt * (2 * position - 1)
            hit_factor = min(1.5, max(0.5, s.horizons[h].hit_rate / 0.5))
            outcome_factor = online[h] if self._exp3 else hit_factor
            raw[h] = self.cfg.weights[h] * regime_factor * outcome_factor
        if news:
            raw["sentiment"] = sentiment
        if outside:
            raw["external"] = external
        regime = "trend" if trend in ("up", "down") else "range" if trend == "range" else ""
        for name in rules:  # made for this regime: tilted up; for the other: down
            made_for = MADE_FOR[name]
            tilt = (
                0.0
                if not (regime and made_for)
                else self.cfg.regime_tilt
                if made_for == regime
                else -self.cfg.regime_tilt
            )
            raw[name] = self.cfg.weights[name] * (1 + tilt)
        total = sum(raw.values())
        if total > 0:
            return {h: w / total for h, w in raw.items()}
        # Every live input was cut by the arbiter: a score of 0 with the reason in its weights
        # (not "no live inputs", which closes a position as a fail-safe).
        return dict.fromkeys(raw, 0.0) if self.arbiter.on and raw else {}

    def _evaluate(self, symbol: str, s: _Symbol, now: int) -> list[Event]:
        if s.proposal is not None and s.proposal[0] != now:
            s.proposal, s.policy_silent = None, True  # never answered: the policy is silent
            self.stats["policy_silent"] += 1
        weights = self._weights(s, now)
        if not weights:
            self.stats["no_live_inputs"] += 1
            if s.direction == 0:
                return []
            # Fail safe: a position whose every input went stale or quarantined is closed.
            return [self._exit(symbol, s, now, 0.0, {}, "exit: no live inputs (stale or quarantined)")]
        signals = {h: self._input_at(s, h, now) for h in weights}
        components = {h: w * signals[h] for h, w in weights.items()}
        agreement = abs(sum(w * _sign(signals[h]) for h, w in weights.items()))
        qos = sum(components.values()) * (0.5 + 0.5 * agreement)
        if "sentiment" in components:
            self.stats["scores_with_sentiment"] += 1
        action, intent = self._decide(symbol, s, qos, now, components)
        score = QosScore(
            ts_event=now,
            ts_init=self.clock.now_ns(),
            symbol=symbol,
            score=qos,
            peak=s.peak,
            regime=s.regime,
            components=components,
            weights=weights,
            action=action,
        )
        self.stats["scores"] += 1
        return [score] if intent is None else [score, intent]

    def _input_at(self, s: _Symbol, name: str, now: int) -> float:
        if name == "sentiment":
            return self._sentiment_at(s, now)
        if name == "external":
            return self._external_at(s, now)
        if name in s.sources:
            return s.sources[name][1]
        return s.horizons[name].signal()

    # -- decisions ----------------------------------------------------------------------------
    def _decide(
        self, symbol: str, s: _Symbol, qos: float, now: int, components: dict[str, float]
    ) -> tuple[Action, OrderIntent | None]:
        cfg = self.cfg
        if s.direction == 0:
            if not s.armed:
                s.armed = abs(qos) < cfg.rearm_threshold
                return "hold", None
            cooling = now - s.exit_ts < cfg.cooldown_s * NS
            wants = abs(qos) >= cfg.entry_threshold and (qos > 0 or cfg.allow_short)
            stopped = wants and self.entries_off(symbol)
            if not wants or cooling or stopped or s.price <= 0:
                if wants and cooling:
                    self.stats["entries_in_cooldown"] += 1
                elif stopped:
                    self.stats["entries_stopped"] += 1  # stays armed: entries resume when started
                return "hold", None
            if cfg.policy == "on" and not (s.policy_silent and cfg.policy_fallback == "rules"):
                s.proposal = (now, qos, components)
                self.stats["proposals"] += 1
                return "propose", None
            if cfg.policy == "on":
                self.stats["entries_by_rules_policy_silent"] += 1
            intent = self._enter(symbol, s, now, qos, components, 1.0, "")
            return ("enter", intent) if intent is not None else ("hold", None)
        aligned = s.direction * qos
        s.peak = max(s.peak, aligned)
        held = now - s.entry_ts >= cfg.min_hold_s * NS
        decayed = s.peak - aligned > cfg.exit_decay
        crossed = aligned < cfg.exit_floor
        if not held or not (decayed or crossed):
            return "hold", None
        reason = (
            f"exit: QOS {qos:+.3f} decayed {s.peak - aligned:.3f} from peak {s.peak:.3f}"
            if decayed
            else f"exit: QOS {qos:+.3f} crossed {cfg.exit_floor}"
        )
        return "exit", self._exit(symbol, s, now, qos, components, reason)

    def _enter(
        self,
        symbol: str,
        s: _Symbol,
        now: int,
        qos: float,
        components: dict[str, float],
        scale: float,
        why: str,
    ) -> OrderIntent | None:
        quantity = math.floor(self.cfg.order_notional * scale / s.price)
        if quantity < 1:
            self.stats["notional_below_one_share" if scale >= 1 else "policy_sized_below_one_share"] += 1
            return None
        s.direction = 1 if qos > 0 else -1
        s.quantity, s.peak, s.entry_ts, s.armed = float(quantity), abs(qos), now, False
        reason = f"entry: QOS {qos:+.3f} beyond {self.cfg.entry_threshold}{why}"
        intent = self._intent(
            symbol, s, now, "enter", s.direction, quantity, reason, "normal", qos, components
        )
        s.entry_intent = intent.intent_id
        return intent

    def on_policy(self, signal: PolicySignal) -> list[Event]:
        """The policy's answer: to the symbol's open proposal, an entry now (scaled) or a wait."""
        s = self.symbols.get(signal.symbol)
        if s is None:
            return []
        s.policy_silent = False
        proposal = s.proposal
        if proposal is None or proposal[0] != signal.score_ts or s.direction != 0:
            return []  # an answer to a score that proposed nothing (the policy answers every score)
        s.proposal = None
        if signal.timing == "wait":
            self.stats["entries_deferred_by_policy"] += 1
            return []
        ts, qos, components = proposal
        why = f"; policy {signal.policy_version} scale {signal.scale:.2f}"
        intent = self._enter(
            signal.symbol, s, ts, qos, {**components, "policy_scale": signal.scale}, signal.scale, why
        )
        if intent is None:
            return []
        self.stats["entries_by_policy"] += 1
        return [intent]

    def _exit(
        self, symbol: str, s: _Symbol, now: int, qos: float, components: dict[str, float], reason: str
    ) -> OrderIntent:
        intent = self._intent(
            symbol, s, now, "exit", -s.direction, s.quantity, reason, "high", qos, components, target=0.0
        )
        s.exit_intent, s.exited = intent.intent_id, (s.direction, s.quantity)
        s.direction, s.quantity, s.exit_ts = 0, 0.0, now
        s.armed = abs(qos) < self.cfg.rearm_threshold
        s.peak = 0.0
        return intent

    # -- what happened to the intents ----------------------------------------------------------------
    def on_denied(self, symbol: str, intent_id: str, now: int) -> None:
        """The risk gate said no: an entry never happened (flat again, cooling down, not re-armed);
        an exit never happened (the position is still ours to close)."""
        s = self.symbols.get(symbol)
        if s is None:
            return
        if intent_id == s.entry_intent and s.direction:
            s.direction, s.quantity, s.peak, s.exit_ts, s.armed = 0, 0.0, 0.0, now, False
            self.stats["entries_denied"] += 1
        elif intent_id == s.exit_intent and not s.direction:
            s.direction, s.quantity = s.exited
            s.peak = 0.0
            self.stats["exits_denied"] += 1

    def on_protective_exit(self, symbol: str, now: int) -> None:
        """A stop or the session's end closed the position outside QOS's own decisions."""
        s = self.symbols.get(symbol)
        if s is not None and s.direction:
            s.direction, s.quantity, s.peak, s.exit_ts, s.armed = 0, 0.0, 0.0, now, False
            self.stats["protective_exits"] += 1

    def _intent(
        self,
        symbol: str,
        s: _Symbol,
        now: int,
        kind: str,
        side_sign: int,
        quantity: float,
        reason: str,
        urgency: str,
        qos: float,
        components: dict[str, float],
        target: float | None = None,
    ) -> OrderIntent:
        self.stats[f"intents_{kind}"] += 1
        return OrderIntent(
            ts_event=now,
            ts_init=self.clock.now_ns(),
            intent_id=f"{self.namespace}-{symbol}-{now}-{kind}",
            symbol=symbol,
            side="BUY" if side_sign > 0 else "SELL",
            quantity=quantity,
            reason=reason,
            score=qos,
            target_position=s.direction * quantity if target is None else target,
            urgency=urgency,  # type: ignore[arg-type]
            components={**components, "qos": qos},
        )


def _sign(x: float) -> float:
    return 1.0 if x > 0 else -1.0 if x < 0 else 0.0
