"""The TCA feedback loop's effect on cost (not a timing: the run is deterministic, one is enough):
the shipped recorded day, the same schedule of market orders, worked with feedback off and on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import save
from tradefleet.costlab import compare

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "lean"


def run(date: str = "20131008", symbols: tuple[str, ...] = ("IBM", "BAC")) -> dict[str, Any]:
    runs = compare(SAMPLE, date, list(symbols))
    off, on = runs["off"], runs["on"]
    result = {
        "date": date,
        "symbols": list(symbols),
        "orders": len(off.reports),
        "off_cost_bps": off.mean_cost_bps,
        "on_cost_bps": on.mean_cost_bps,
        "on_limit_share": sum(r.order_type == "LMT" for r in on.reports) / max(len(on.reports), 1),
        "off": off.summary(),
        "on": on.summary(),
        "per_symbol": {
            s: {
                name: sum(r.cost_bps for r in run.reports if r.symbol == s)
                / max(sum(r.symbol == s for r in run.reports), 1)
                for name, run in runs.items()
            }
            for s in symbols
        },
    }
    save("tca_feedback", result)
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
