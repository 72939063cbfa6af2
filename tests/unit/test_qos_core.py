"""QOS on scripted prediction sequences: entry, hold, decay exit, no flip-flop, safety."""

from __future__ import annotations

from proto.base import Event
from proto.orders import OrderIntent
from proto.signals import Prediction, QosScore
from services.qos.core import QosCore
from tests.kit.clocks import MINUTE as MIN
from tests.kit.clocks import OPEN as T0
from tests.kit.scripts import HORIZONS, minute, qos


def test_entry_hold_decay_exit_and_no_flip_flop() -> None:
    core = qos()
    script = [0.1, 0.2, 0.6, 0.7, 0.8, 0.75, 0.7, 0.6, 0.3, -0.6, -0.7, -0.6, 0.1, 0.0]
    actions, intents = [], []
    for m, signal in enumerate(script):
        score, new = minute(core, m, signal)
        assert score is not None
        actions.append(score.action)
        intents += new
    # 0.6 with all horizons agreeing is QOS 0.6 > 0.35: enter long at minute 2. The peak is 0.8 at
    # minute 4; 0.75 and 0.7 stay within 0.15 of it (hold); 0.6 at minute 7 is 0.2 below: exit.
    # At minutes 9-11 the signal says short, but the symbol is not re-armed (|QOS| did not fall
    # below 0.2 since the exit) and is cooling down: no flip-flop.
    assert actions[:3] == ["hold", "hold", "enter"]
    assert actions[3:7] == ["hold"] * 4
    assert actions[7] == "exit"
    assert actions[8:] == ["hold"] * 6
    assert [(i.side, i.target_position) for i in intents] == [("BUY", 100.0), ("SELL", 0.0)]
    assert intents[0].quantity == 100 and intents[0].urgency == "normal" and intents[1].urgency == "high"
    assert "entry" in intents[0].reason and "decayed" in intents[1].reason
    assert intents[0].components["qos"] > 0.35 and set(HORIZONS) <= set(intents[0].components)


def test_rearmed_after_calm_and_cooldown_then_short() -> None:
    core = qos(cooldown_s=120.0)
    for m, s in enumerate([0.6, 0.7, 0.3]):  # enter, peak, exit at minute 2
        minute(core, m, s)
    intents = []
    for m, s in enumerate([0.1, -0.6, -0.7], start=3):  # calm re-arms; minute 5 is past cool-down
        intents += minute(core, m, s)[1]
    assert [(i.side, i.target_position) for i in intents] == [("SELL", -100.0)]


def test_short_entries_can_be_switched_off() -> None:
    core = qos(allow_short=False)
    assert all(not minute(core, m, -0.9)[1] for m in range(5))


def test_quarantined_horizons_do_not_count_and_dead_inputs_close_the_position() -> None:
    core = qos()
    score, intents = minute(core, 0, 0.9, quarantined=frozenset({"5m", "15m"}))
    assert score is not None and set(score.weights) == {"30m", "60m"}
    assert abs(sum(score.weights.values()) - 1) < 1e-12
    assert intents and intents[0].side == "BUY"  # the two live horizons agree strongly
    _, intents = minute(core, 3, 0.9, quarantined=frozenset(HORIZONS))
    assert [(i.side, i.target_position) for i in intents] == [("SELL", 0.0)]
    assert "no live inputs" in intents[0].reason


def test_disagreeing_horizons_are_damped_and_regime_tilts_weights() -> None:
    core = qos()
    agree, _ = minute(core, 0, 0.5)
    assert agree is not None and abs(agree.score - 0.5) < 1e-9
    mixed = qos()
    out: list[Event] = []
    for h, s in zip(HORIZONS, (0.5, 0.5, -0.5, -0.5), strict=True):
        out += mixed.on_prediction(
            Prediction(
                ts_event=T0,
                ts_init=0,
                symbol="IBM",
                horizon=h,
                model_version="v",
                probability=0.5,
                expected_return=0.0,
                signal=s,
                price=100.0,
                batch=4,
            )
        )
    score = next(e for e in out if isinstance(e, QosScore))
    # raw = 0.5*(0.4+0.3) - 0.5*(0.2+0.1) = 0.2; agreement |0.7-0.3| = 0.4 -> 0.2 * 0.7 = 0.14
    assert abs(score.score - 0.14) < 1e-9
    tilted = qos(regime_tilt=0.5)
    trend, _ = minute(tilted, 0, 0.5, regime="up/mid")
    calm = qos(regime_tilt=0.5)
    ranging, _ = minute(calm, 0, 0.5, regime="range/mid")
    assert trend is not None and ranging is not None
    assert trend.weights["60m"] > 0.1 > ranging.weights["60m"]


def test_trailing_hit_rate_moves_weights() -> None:
    core = qos(hit_rate_halflife=2)
    # 5m keeps saying up while the price falls: its hit rate, then its weight, drops.
    for m in range(0, 40):
        minute(core, m, 0.1, price=100.0 - m * 0.1)
    score, _ = minute(core, 40, 0.1, price=96.0)
    assert score is not None and score.weights["5m"] < 0.4


def test_stale_predictions_do_not_count() -> None:
    core = qos(stale_after_s=60.0)
    minute(core, 0, 0.9, horizons=("60m",))
    score, _ = minute(core, 5, 0.9, horizons=("5m",))
    assert score is not None and set(score.weights) == {"5m"}


def test_a_denied_entry_leaves_the_symbol_flat_and_a_denied_exit_keeps_the_position() -> None:
    core = qos(cooldown_s=60.0)
    _, intents = minute(core, 0, 0.6)
    assert intents[0].side == "BUY"
    core.on_denied("IBM", intents[0].intent_id, T0)
    assert core.symbols["IBM"].direction == 0 and core.stats["entries_denied"] == 1
    _, again = minute(core, 1, 0.6)
    assert again == []  # not re-armed: no hammering the gate with the same entry
    minute(core, 2, 0.1)  # calm re-arms
    _, entry = minute(core, 3, 0.6)
    _, exit_ = minute(core, 5, -0.2)
    assert exit_ and exit_[0].side == "SELL"
    core.on_denied("IBM", exit_[0].intent_id, T0 + 5 * MIN)
    assert core.symbols["IBM"].direction == 1 and core.symbols["IBM"].quantity == 100
    core.on_protective_exit("IBM", T0 + 6 * MIN)
    assert core.symbols["IBM"].direction == 0 and entry


def headline(core: QosCore, m: float, polarity: float) -> list[Event]:
    from proto.news import SentimentScore

    p_pos, p_neg = max(polarity, 0.0), max(-polarity, 0.0)
    return core.on_sentiment(
        SentimentScore(
            ts_event=T0 + int(m * MIN),
            ts_init=0,
            news_id=f"n{m}",
            symbol="IBM",
            polarity=polarity,
            label="positive" if polarity > 0 else "negative",
            probabilities=[p_neg, 1 - p_pos - p_neg, p_pos],
        )
    )


def test_a_headline_moves_qos_at_once_and_decays_with_its_half_life() -> None:
    weights = {"5m": 0.4, "15m": 0.3, "30m": 0.2, "60m": 0.1, "sentiment": 0.5}
    core = qos(weights=weights, sentiment_half_life_s=600.0)
    score, _ = minute(core, 0, 0.3)
    assert score is not None and score.action == "hold" and "sentiment" not in score.weights
    out = headline(core, 0.5, 0.9)  # a strongly positive headline half a minute later
    scores = [e for e in out if isinstance(e, QosScore)]
    assert len(scores) == 1 and scores[0].ts_event == T0 + MIN // 2
    news = scores[0]
    assert abs(news.weights["sentiment"] - 0.5 / 1.5) < 1e-9  # normalized over the live inputs
    assert abs(news.components["sentiment"] - 0.9 / 3) < 1e-9
    assert news.score > score.score >= 0.3 * 0.99  # the headline alone lifted QOS...
    assert news.action == "enter" and any(isinstance(e, OrderIntent) for e in out)  # ...into a trade
    assert core.symbols["IBM"].sentiment == 0.9
    # Ten minutes later (one half-life) the same horizons give half the sentiment component.
    later, _ = minute(core, 10.5, 0.3)
    assert later is not None
    assert abs(later.components["sentiment"] - 0.5 * 0.9 * later.weights["sentiment"]) < 1e-6


def test_unweighted_sentiment_is_kept_but_never_moves_qos() -> None:
    core = qos()  # sentiment weight 0
    minute(core, 0, 0.3)
    assert headline(core, 0.5, -0.9) == []
    score, _ = minute(core, 1, 0.3)
    assert score is not None and "sentiment" not in score.components
    assert core.stats["sentiment_in"] == 1 and core.symbols["IBM"].sentiment == -0.9


def test_headlines_add_up_and_saturate() -> None:
    weights = {"5m": 1.0, "sentiment": 1.0}
    core = qos(weights=weights)
    for i in range(3):
        headline(core, i * 0.01, 0.6)
    assert core.symbols["IBM"].sentiment == 1.0  # clipped to [-1, 1]
    headline(core, 0.05, -0.5)
    assert 0.45 < core.symbols["IBM"].sentiment < 0.5


def external(core: QosCore, at_minutes: float, signal: float) -> list[Event]:
    from proto.signals import ExternalSignal

    ts = T0 + int(at_minutes * MIN)
    return core.on_external(
        ExternalSignal(ts_event=ts, ts_init=ts, symbol="IBM", source="desk", signal=signal, issued_by="t")
    )


def test_an_outside_models_signal_is_an_input_of_its_own_weight_until_its_ttl() -> None:
    weights = {"5m": 0.4, "15m": 0.3, "30m": 0.2, "60m": 0.1, "external": 1.0}
    core = qos(weights=weights, external_ttl_s=120.0)
    minute(core, 0, 0.2)
    out = external(core, 0.5, 0.8)
    (score,) = [e for e in out if isinstance(e, QosScore)]
    assert abs(score.weights["external"] - 0.5) < 1e-9 and abs(score.components["external"] - 0.4) < 1e-9
    assert score.action == "enter"  # the outside conviction lifted QOS past the threshold
    later, _ = minute(core, 3, 0.2)  # 2.5 minutes on: past its ttl, it no longer counts
    assert later is not None and "external" not in later.weights
    unweighted = qos()
    assert external(unweighted, 0, 0.9) == [] and unweighted.stats["external_in"] == 1


def test_entries_off_stops_entries_per_symbol_or_all_and_exits_go_on() -> None:
    from libs.common.config import QosSettings

    core = qos()
    minute(core, 0, 0.6)  # long IBM
    assert core.reconfigure(core.cfg.model_copy(update={"entries_off": ["*"]})) == ""
    _, exits = minute(core, 1, -0.6)  # the exit still goes out
    assert [i.side for i in exits] == ["SELL"]
    for m in range(2, 12):
        _, intents = minute(core, m, [0.0, 0.7][m % 2])
        assert not intents
    assert core.stats["entries_stopped"] >= 1
    assert core.reconfigure(core.cfg.model_copy(update={"entries_off": ["BAC"]})) == ""
    entered = [i for m in range(12, 16) for i in minute(core, m, 0.7)[1]]
    assert [i.side for i in entered] == ["BUY"]  # IBM is on again
    # the horizons are the shape of the state: they cannot change live
    refused = core.reconfigure(QosSettings(weights={"5m": 1.0}))
    assert refused.startswith("the weighted horizons cannot change live")
