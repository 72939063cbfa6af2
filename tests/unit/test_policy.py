"""The RL policy's contract with QOS (proposal, answer, wait, silence), its observation and book,
the environment (gymnasium's checker, on the backtest cores), and a tiny training run that learns
a scripted toy signal end to end, exported to ONNX and served without stable-baselines3."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from proto.execution import Fill
from proto.features import FeatureVector
from proto.orders import OrderIntent
from proto.signals import PolicySignal, QosScore
from tests.kit import stubs
from tests.kit.clocks import MINUTE as MIN
from tests.kit.clocks import OPEN as T0
from tests.kit.scripts import minute, qos

pytest.importorskip("gymnasium")


def answer(score: QosScore, scale: float, timing: str) -> PolicySignal:
    return PolicySignal(
        ts_event=score.ts_event,
        ts_init=0,
        symbol=score.symbol,
        score_ts=score.ts_event,
        scale=scale,
        timing=timing,  # type: ignore[arg-type]
        policy_version="p1",
        proposal=1 if score.score > 0 else -1,
    )


def test_qos_proposes_and_the_policy_sizes_the_entry() -> None:
    core = qos(policy="on")
    score, intents = minute(core, 0, 0.6)
    assert score is not None and score.action == "propose" and intents == []
    out = core.on_policy(answer(score, 0.5, "enter"))
    assert len(out) == 1 and isinstance(out[0], OrderIntent)
    # half of $10,000 at $100: 50 shares; the intent is the proposal's, at its time
    assert out[0].quantity == 50 and out[0].ts_event == T0 and out[0].side == "BUY"
    assert "policy p1 scale 0.50" in out[0].reason and out[0].components["policy_scale"] == 0.5
    # exits never wait for the policy
    minute(core, 1, 0.8)
    score, intents = minute(core, 3, 0.2)
    assert score is not None and score.action == "exit" and intents[0].quantity == 50


def test_a_wait_keeps_the_symbol_armed_and_qos_proposes_again() -> None:
    core = qos(policy="on")
    first, _ = minute(core, 0, 0.6)
    assert first is not None
    assert core.on_policy(answer(first, 1.0, "wait")) == []
    assert core.stats["entries_deferred_by_policy"] == 1
    second, _ = minute(core, 1, 0.6)
    assert second is not None and second.action == "propose"
    # an answer to an older score is not an answer to this proposal
    assert core.on_policy(answer(first, 1.0, "enter")) == []
    entered = core.on_policy(answer(second, 1.0, "enter"))
    assert entered and entered[0].quantity == 100 and entered[0].ts_event == T0 + MIN


def test_a_scale_below_one_share_enters_nothing() -> None:
    core = qos(policy="on")
    score, _ = minute(core, 0, 0.6)
    assert score is not None
    assert core.on_policy(answer(score, 0.001, "enter")) == []
    assert core.stats["policy_sized_below_one_share"] == 1
    again, _ = minute(core, 1, 0.6)
    assert again is not None and again.action == "propose"  # still armed, still flat


def test_a_silent_policy_falls_back_to_the_rules_or_holds() -> None:
    rules = qos(policy="on", policy_fallback="rules")
    minute(rules, 0, 0.6)  # proposed, never answered
    score, intents = minute(rules, 1, 0.6)
    assert score is not None and score.action == "enter" and intents[0].quantity == 100
    assert rules.stats["policy_silent"] == 1 and rules.stats["entries_by_rules_policy_silent"] == 1

    hold = qos(policy="on", policy_fallback="hold")
    for m in range(4):
        score, intents = minute(hold, m, 0.6)
        assert score is not None and score.action == "propose" and intents == []
    assert hold.stats["policy_silent"] == 3
    # the policy is back: its answer to the open proposal enters
    assert hold.on_policy(answer(score, 1.0, "enter"))


def test_the_book_follows_fills_marks_and_the_days_drawdown() -> None:
    from models.policy.observation import SymbolBook

    book = SymbolBook()
    ts = T0

    def fill(side: str, qty: float, price: float, commission: float = 1.0) -> Fill:
        return stubs.fill("IBM", side, qty, price, ts, exec_id=f"e{side}{qty}{price}", commission=commission)

    book.on_fill(fill("BUY", 100, 100.0))
    book.on_mark(101.0, ts)
    assert book.unrealized() == pytest.approx(100.0) and book.equity() == pytest.approx(99.0)
    book.on_mark(100.5, ts)
    assert book.drawdown() == pytest.approx(50.0)
    book.on_fill(fill("SELL", 150, 100.5))  # closes 100 (+50), opens 50 short at 100.5
    assert book.realized == pytest.approx(50.0 - 2.0) and book.quantity == -50 and book.avg_price == 100.5
    assert book.round_trips == 1
    book.on_mark(100.0, ts + 86_400 * 10**9)  # the next day: the day's P&L starts again
    assert book.realized == 0.0 and book.round_trips == 0 and book.unrealized() == pytest.approx(25.0)


def test_the_observation_has_the_specs_layout_and_no_nan() -> None:
    from models.policy.observation import ObservationBuilder
    from services.policy.runtime import fleet_spec
    from tests.unit.policy_toy import toy_settings

    spec = fleet_spec(toy_settings())
    builder = ObservationBuilder(spec)
    names = spec.names()
    assert len(names) == spec.size == len(set(names))
    vector = FeatureVector(
        ts_event=T0 + 30 * MIN,
        ts_init=0,
        symbol="IBM",
        timeframe="1m",
        feature_set=spec.feature_set,
        values=[math.nan] * len(spec.feature_names),
        price=100.0,
    )
    assert builder.on_vector(vector)
    assert not builder.on_vector(FeatureVector(**{**_fields(vector), "feature_set": "other"}))
    score = QosScore(
        ts_event=T0 + 30 * MIN, ts_init=0, symbol="IBM", score=-0.5, peak=0.0, regime="", action="propose"
    )
    obs = builder.observe(score)
    assert obs.shape == (spec.size,) and np.isfinite(obs).all()
    assert obs[names.index("qos_proposal")] == -1.0 and obs[names.index("qos_score")] == -0.5
    # 10:00 New York (T0 is 09:30 on 2013-10-08): 30 of the session's 390 minutes
    assert obs[names.index("session_fraction")] == pytest.approx(30 / 390)


def _fields(v: FeatureVector) -> dict[str, object]:
    return {f: getattr(v, f) for f in v.__struct_fields__}


@pytest.fixture(scope="module")
def toy() -> tuple[object, list[object]]:
    from tests.unit.policy_toy import toy_settings, toy_tape

    settings = toy_settings()
    return settings, [toy_tape(settings, d) for d in ("20131008", "20131009", "20131010")]


def test_the_environment_passes_gymnasiums_checker(toy: tuple[object, list[object]]) -> None:
    from gymnasium.utils.env_checker import check_env

    from models.policy.env import SymbolDayEnv

    settings, tapes = toy
    env = SymbolDayEnv(tapes[:1], settings)  # type: ignore[arg-type]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a checker warning (e.g. unbounded spaces) fails too
            check_env(env, skip_render_check=True)
        obs, info = env.reset(seed=3)
        assert env.observation_space.contains(obs) and info["tape"] == "TOY@20131008"
    finally:
        env.close()


def test_the_environment_trades_through_the_risk_gate_and_the_simbroker(
    toy: tuple[object, list[object]],
) -> None:
    """Fixed actors on the toy day: entering every proposal wins in the morning and loses in the
    afternoon until the risk gate's loss cool-down stops it; waiting never trades."""
    from models.policy.env import SymbolDayEnv
    from models.policy.train import play, rules_actor

    settings, tapes = toy
    env = SymbolDayEnv(tapes[:1], settings)  # type: ignore[arg-type]
    try:
        never = play(env, lambda o: np.zeros(2, np.float32), [0])[0]
        always = play(env, rules_actor, [0])[0]
        morning = play(env, lambda o: np.full(2, float(o[-1] < 0.5), np.float32), [0])[0]
    finally:
        env.close()
    assert never["entries"] == 0 and never["pnl_bps"] == 0.0 and never["decisions"] > 100
    assert always["entries"] > 30
    # every morning round trip gains about 5 minutes x 8 bps, less the spread and commissions
    assert morning["entries"] == 20 and morning["pnl_bps"] > 20 * 20
    assert morning["reward"] > always["reward"] + 100


def test_a_tiny_ppo_run_learns_the_toy_signal_and_serves_it_from_onnx(
    toy: tuple[object, list[object]], tmp_path: Path
) -> None:
    from models.policy import registry
    from models.policy.serving import decode_action, load_active
    from models.policy.train import PolicyTrainConfig, train

    settings, tapes = toy
    cfg = PolicyTrainConfig(timesteps=2048, n_envs=2, n_steps=64, eval_every=1024)
    result = train(tapes[:2], tapes[2:], settings, cfg, tmp_path, progress=False)  # type: ignore[arg-type]
    ev = result["evaluation"]
    # the rules enter every proposal and give the afternoon back; the policy learned to wait
    assert ev["policy"]["mean_reward"] > ev["rules"]["mean_reward"] + 50
    assert ev["policy"]["total_pnl_bps"] > 0
    assert result["promotion"]["promoted"] and registry.active_version(tmp_path) == result["version"]
    assert (Path(result["folder"]) / "report.html").read_text().count("<img") == 1
    served = load_active(tmp_path)  # probes checked: the ONNX graph reproduces SB3's actions
    assert served is not None and served.version == result["version"]
    # the served graph, on the held-out day through the environment: enters in the morning, not after
    from models.policy.env import SymbolDayEnv

    env = SymbolDayEnv(tapes[2:], settings)  # type: ignore[arg-type]
    taken: dict[bool, list[bool]] = {True: [], False: []}
    try:
        obs, _ = env.reset(options={"tape": 0})
        done = False
        while not done:
            scale, timing = decode_action(served.act(obs))
            taken[bool(obs[-1] < 0.5)].append(timing == "enter" and scale * 10_000 / 100 >= 1)
            obs, _, done, _, _ = env.step(served.act(obs))
    finally:
        env.close()
    # (a tiny budget: it has learned to skip the afternoon, and to take part of the morning)
    assert sum(taken[True]) >= 5 and sum(taken[False]) <= sum(taken[True]) / 5


@pytest.mark.parametrize("algorithm", ["sac", "ddpg"])
def test_sac_and_ddpg_train_and_their_squashed_actors_export(
    algorithm: str, toy: tuple[object, list[object]], tmp_path: Path
) -> None:
    """The off-policy options: a few hundred steps, then the export (tanh-squashed actor rescaled
    to the action space) must reproduce SB3's actions, and the gate says why it did not promote."""
    from models.policy import registry
    from models.policy.serving import load_version
    from models.policy.train import PolicyTrainConfig, train

    settings, tapes = toy
    cfg = PolicyTrainConfig(algorithm=algorithm, timesteps=300, n_envs=1, batch_size=32, promote="never")
    result = train(tapes[:1], tapes[2:], settings, cfg, tmp_path, progress=False)  # type: ignore[arg-type]
    served = load_version(tmp_path, result["version"])
    assert served.meta["algorithm"] == algorithm and len(served.meta["probes"]["obs"]) == 32
    assert registry.active_version(tmp_path) is None and not result["promotion"]["promoted"]
    assert all(0.0 <= a <= 1.0 for row in served.meta["probes"]["actions"] for a in row)
