"""`make bench`: every benchmark, same-run ratios against its bare baseline, medians of rounds.

Results land in bench/results/*.json; the table printed at the end is what the closing notes quote.
"""

from __future__ import annotations

import argparse
import platform

from bench import (
    alerts_latency,
    backtest_peers,
    drift,
    features,
    hop,
    md_path,
    order_path,
    policy,
    recorder,
    risk,
    sentiment,
    soak,
    spine_latency,
    sustained,
    tca_feedback,
    ws_fanout,
    zoo,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    # The soak is the one long bench: an hour of the whole fleet on a paced replay (0: skip it).
    parser.add_argument("--soak-minutes", type=float, default=60.0)
    # Sustained load: the whole fleet on a replay paced at 10k events/s for 5 minutes (0: skip).
    parser.add_argument("--sustained-minutes", type=float, default=5.0)
    ns = parser.parse_args()
    h = hop.run(rounds=ns.rounds, rate=5_000, name="hop_5k")
    h20 = hop.run(rounds=ns.rounds, count=50_000, rate=20_000, name="hop_20k")
    m = md_path.run(rounds=ns.rounds)
    r = recorder.run(rounds=ns.rounds)
    f = features.run(rounds=ns.rounds)
    sl = spine_latency.run(rounds=ns.rounds)
    rk = risk.run(rounds=ns.rounds)
    dr = drift.run(rounds=max(ns.rounds, 5))
    zo = zoo.run(rounds=max(ns.rounds, 5))
    op = order_path.run(rounds=ns.rounds)
    tf = tca_feedback.run()
    st = sentiment.run(rounds=ns.rounds)
    bp = backtest_peers.run(rounds=ns.rounds)
    pl = policy.run(rounds=ns.rounds)
    al = alerts_latency.run(rounds=ns.rounds)
    # Two pairs of whole fleet runs (~35 s each here): 3 would pass the 5 minutes a bench may take.
    wf = ws_fanout.run(rounds=min(ns.rounds, 2))
    su = sustained.run(rate=10_000.0, minutes=ns.sustained_minutes) if ns.sustained_minutes > 0 else None
    sk = soak.run(minutes=ns.soak_minutes, on_sample=None) if ns.soak_minutes > 0 else None
    print(f"\n== tradefleet bench ({platform.node()}, {ns.rounds} rounds, medians) ==")
    print(
        f"hop      runtime {h['runtime_cpu_us_per_msg']:.1f} us CPU/msg"
        f" vs bare nats-py {h['bare_cpu_us_per_msg']:.1f}"
        f" -> ratio {h['cpu_ratio_median_of_rounds']:.3f} (target <= 1.10);"
        f" latency p50 {h['runtime_p50_us']:.0f} vs {h['bare_p50_us']:.0f} us,"
        f" p99 {h['runtime_p99_us']:.0f} vs {h['bare_p99_us']:.0f} us"
    )
    print(
        f"hop 20k  runtime {h20['runtime_cpu_us_per_msg']:.1f} us CPU/msg"
        f" vs bare nats-py {h20['bare_cpu_us_per_msg']:.1f} -> ratio of medians"
        f" {h20['runtime_cpu_us_per_msg'] / h20['bare_cpu_us_per_msg']:.3f},"
        f" median of round ratios {h20['cpu_ratio_median_of_rounds']:.3f}"
    )
    print(
        f"md path  batched {m['batched_input_ticks_per_s']:,.0f} input ticks/s,"
        f" {m['batched_events_per_s']:,.0f} events/s received, lost {m['batched_lost']:.0f};"
        f" unbatched {m['unbatched_input_ticks_per_s']:,.0f} ticks/s,"
        f" {m['unbatched_events_per_s']:,.0f} events/s"
        f" (batching x{m['batching_speedup_events']:.2f}; target >= 200k ticks/s)"
    )
    print(
        f"recorder {r['recorder_rows_per_s']:,.0f} rows/s vs bare binary COPY {r['bare_rows_per_s']:,.0f}"
        f" -> ratio {r['ratio']:.3f} (target >= 0.90)"
    )
    e = f["engines"]
    print(
        f"features {f['ours_us_per_tick']:.2f} us/tick (all {f['timeframes']} timeframes, target < 10)"
        f" vs TA-Lib window recompute per tick {f['talib_us_per_tick']:.1f} us"
        f" -> x{f['tick_ratio_median_of_rounds']:.0f}; per bar close {f['bar_ours_us']:.1f} vs"
        f" {f['bar_talib_us']:.1f} us"
    )
    print(
        f"fastlane single row p50/p99: lightgbm {e['lightgbm']['p50_us']:.1f}/"
        f"{e['lightgbm']['p99_us']:.1f} us,"
        f" lleaves {e['lleaves']['p50_us']:.1f}/{e['lleaves']['p99_us']:.1f},"
        f" onnx {e['onnx']['p50_us']:.1f}/{e['onnx']['p99_us']:.1f}"
        f" -> lleaves x{f['lleaves_speedup_p99']:.1f} at p99 (target p99 < 20 us and >= x3)"
    )
    print(
        f"spine    tick -> decision p99 grouped {sl['grouped']['md_to_decision_p99_us']:.0f} us"
        f" (in-process {sl['grouped']['in_process_p99_us']:.0f} us), separate"
        f" {sl['separate']['md_to_decision_p99_us']:.0f} us,"
        f" one bare hop {sl['bare']['bare_hop_p99_us']:.0f} us"
        f" at {sl['rate_ticks_per_s']:,.0f} ticks/s -> grouped x{sl['grouped_md_p99_over_bare_p99']:.2f}"
    )
    print(
        f"risk     every rule per intent p50 {rk['p50_us']:.1f} us, p99 {rk['p99_us']:.1f} us"
        f" (50 positions, quotes and ATR held; bare event construction {rk['bare_p50_us']:.2f} us);"
        f" with correlation and VaR limits p50 {rk['portfolio_p50_us']:.0f} us between closes,"
        f" {rk['portfolio_after_close_p50_us'] / 1000:.2f} ms on the first intent after a close"
    )
    print(
        f"drift    per scored vector {dr['like_with_like_us']:.1f} us like with like vs"
        f" {dr['whole_day_us']:.1f} us whole-day ({dr['like_with_like_over_whole_day']:.2f}x),"
        f" bare binning {dr['bare_binning_us']:.1f} us"
    )
    print(
        f"zoo      one row p99: lleaves {zo['lightgbm_lleaves']['p99_us']:.1f} us, logistic ONNX"
        f" {zo['logistic_onnx']['p99_us']:.1f}, MLP ONNX {zo['mlp_onnx']['p99_us']:.1f}, sequence ONNX"
        f" with its window {zo['sequence_onnx_with_window']['p99_us']:.1f}; the horizon's"
        f" blend {zo['zoo_blend']['p99_us']:.1f} us ({zo['zoo_blend_without_sequence']['p99_us']:.1f} without"
        f" the sequence model) vs one model {zo['single_model_scorer']['p99_us']:.1f}"
        f" (x{zo['blend_over_single_p99']:.2f}; {zo['blend_p99_share_of_budget']:.0%} of the 100 us budget)"
    )
    print(
        f"orders   intent -> approved p50 {op['approved_p50_us'] / 1000:.2f} ms, p99"
        f" {op['approved_p99_us'] / 1000:.2f}; -> submitted (journaled) p50"
        f" {op['submitted_p50_us'] / 1000:.2f} ms, p99 {op['submitted_p99_us'] / 1000:.2f};"
        f" bare 2 JetStream hops p50"
        f" {op['bare_2js_p50_us'] / 1000:.2f} ms -> x{op['submitted_p50_over_bare']:.2f}"
    )
    print(
        f"fills    tick -> fill p50 {op['tick_to_fill_p50_us'] / 1000:.2f} ms, p99"
        f" {op['tick_to_fill_p99_us'] / 1000:.2f}; bare core -> JetStream hop p50"
        f" {op['bare_core_js_p50_us'] / 1000:.2f} ms -> x{op['tick_to_fill_p50_over_bare']:.2f}"
    )
    print(
        f"tca      same {tf['orders']} market orders on the recorded day: all-in cost feedback off"
        f" {tf['off_cost_bps']:.2f} bps, on {tf['on_cost_bps']:.2f} bps"
        f" ({tf['on_limit_share']:.0%} worked as limits)"
    )
    sm, sh = st["model"], st["headline_to_intent"]
    loaded = [n for n in ("onnx-int8", "onnx", "torch") if n not in sm["refused"]]
    print(
        "sentiment per headline p50/p99: "
        + ", ".join(f"{n} {sm[n]['p50_us'] / 1000:.2f}/{sm[n]['p99_us'] / 1000:.2f} ms" for n in loaded)
        + f", bare {sm['bare']['p50_us'] / 1000:.2f}/{sm['bare']['p99_us'] / 1000:.2f} ms"
        + " (bare: frozen fp32 MiniLM via sentence-transformers; "
        + ", ".join(f"{n}/bare p50 x{sm[n]['p50_over_bare_p50']:.2f}" for n in loaded)
        + (f"; refused here: {', '.join(sm['refused'])}" if sm["refused"] else "")
        + ");"
        f" headline -> QOS p50 {sh['to_qos_p50_us'] / 1000:.1f} ms, -> intent p50"
        f" {sh['to_intent_p50_us'] / 1000:.1f} ms p99 {sh['to_intent_p99_us'] / 1000:.1f} ms"
        f" (bare JetStream hop {sh['bare_js_hop_p50_us'] / 1000:.2f} ms)"
    )
    eng = bp["engines"]
    print(
        f"backtest same {bp['events']:,} ticks, EMA cross: ours {eng['ours']['ticks_per_s_median']:,}/s,"
        f" NautilusTrader {eng['nautilus_trader']['ticks_per_s_median']:,}/s,"
        f" backtrader {eng['backtrader']['ticks_per_s_median']:,}/s (trades only)"
        f" -> x{bp['ours_vs_backtrader']} backtrader (target > 1), x{bp['ours_vs_nautilus']} Nautilus"
        f" (target >= 0.5); full spine {eng['ours_full_spine']['ticks_per_s_median']:,} ticks/s"
    )
    print(
        f"policy   actor (numpy) p50/p99 {pl['actor_numpy']['p50_us']:.1f}/"
        f"{pl['actor_numpy']['p99_us']:.1f} us"
        f" warm, {pl['actor_numpy_cold']['p50_us']:.1f}/{pl['actor_numpy_cold']['p99_us']:.1f} cold"
        f" (target p99 <= 200); bare ONNX Runtime {pl['bare_onnx']['p50_us']:.1f}/"
        f"{pl['bare_onnx']['p99_us']:.1f} warm, {pl['bare_onnx_cold']['p50_us']:.1f}/"
        f"{pl['bare_onnx_cold']['p99_us']:.1f} cold; whole decision per QOS score (observation + actor"
        f" + answer) {pl['service']['p50_us']:.1f}/{pl['service']['p99_us']:.1f} warm,"
        f" {pl['service_cold']['p50_us']:.1f}/{pl['service_cold']['p99_us']:.1f} cold"
        + (
            f"; stable-baselines3 predict {pl['sb3_predict']['p50_us']:.0f}/{pl['sb3_predict']['p99_us']:.0f}"
            if "sb3_predict" in pl
            else ""
        )
    )
    print(
        f"alerts   critical alert -> fake Telegram p50 {al['critical_p50_us'] / 1000:.1f} ms,"
        f" p99 {al['critical_p99_us'] / 1000:.1f} ms with the fleet replaying at full speed"
        f" ({al['rounds_while_replaying']} of {len(al['rounds'])} rounds still replaying at their end);"
        f" bare JetStream hop p50 {al['bare_p50_us'] / 1000:.2f} ms, p99 {al['bare_p99_us'] / 1000:.2f}"
        f" -> x{al['critical_p50_over_bare']:.1f} at p50, x{al['critical_p99_over_bare']:.1f} at p99;"
        f" warning p50 {al['warning_p50_us'] / 1e6:.2f} s (its 2 s burst hold, by design)"
    )
    print(
        f"ws       {wf['clients']} WebSocket clients during the full-speed replay: delivered"
        f" {wf['per_client_msgs_per_s']:,.0f} msgs/s per client, {wf['total_msgs_per_s']:,.0f} in total,"
        f" dropped {wf['clients_dropped']:g}; QOS score -> client p50"
        f" {wf['qos_to_client_p50_us'] / 1e6:.2f} s; tick -> intent p50"
        f" {wf['intent_p50_us_clients'] / 1000:.1f} vs {wf['intent_p50_us_bare'] / 1000:.1f} ms without"
        f" (x{wf['intent_p50_us_ratio']:.2f}), p99 {wf['intent_p99_us_clients'] / 1000:.1f} vs"
        f" {wf['intent_p99_us_bare'] / 1000:.1f} (x{wf['intent_p99_us_ratio']:.2f}); tick -> QOS p50"
        f" x{wf['qos_p50_us_ratio']:.2f}, p99 x{wf['qos_p99_us_ratio']:.2f}"
    )
    if su is not None:
        print(sustained.report(su))
    if sk is not None:
        print(soak_line(sk))


def soak_line(sk: dict) -> str:
    """RSS start -> end per process (and any that kept rising), the spine's stages p50/p99 first
    vs last sample, the worst event-loop lag."""
    procs = sk["processes"]
    rss = ", ".join(
        f"{n} {p['rss_start_mib']:.0f}->{p['rss_end_mib']:.0f}"
        for n, p in procs.items()
        if n in ("md-gateway", "features", "fastlane", "qos", "risk", "execution", "recorder")
    )
    stages = "; ".join(
        f"{st} {v['first']['p50_us'] / 1000:.2f}/{v['first']['p99_us'] / 1000:.2f} ->"
        f" {v['last']['p50_us'] / 1000:.2f}/{v['last']['p99_us'] / 1000:.2f} ms"
        for st, v in soak.spine_stages(sk["stages"]).items()
    )
    lag = max((v["p99_median_of_samples"] for v in sk["loop_lag_ms"].values()), default=float("nan"))
    return (
        f"soak     {sk['minutes']:g} min at {sk['speed']:g}x: RSS MiB start->end {rss};"
        f" rising: {', '.join(sk['rising']) or 'none'}; stages p50/p99 first -> last: {stages};"
        f" worst loop lag p99 (median of samples) {lag:.1f} ms"
    )


if __name__ == "__main__":
    main()
