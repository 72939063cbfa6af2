"""`make bench`: every benchmark, same-run ratios against its bare baseline, medians of rounds.

Results land in bench/results/*.json; the table printed at the end is what the closing notes quote.
"""

from __future__ import annotations

import argparse
import platform

from bench import hop, md_path, recorder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    ns = parser.parse_args()
    h = hop.run(rounds=ns.rounds, rate=5_000, name="hop_5k")
    h20 = hop.run(rounds=ns.rounds, count=50_000, rate=20_000, name="hop_20k")
    m = md_path.run(rounds=ns.rounds)
    r = recorder.run(rounds=ns.rounds)
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


if __name__ == "__main__":
    main()
