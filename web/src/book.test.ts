import { describe, expect, it } from "vitest";
import type { Book } from "./api";
import { buildLadder, depthCurves, depthGrid, pushHistory, sortedSides } from "./book";

const book = (ts: number, bids: [number, number][], asks: [number, number][], symbol = "IBM"): Book => ({
  symbol,
  bids,
  asks,
  ts,
  depth: true,
});

describe("book arithmetic", () => {
  const b = book(1, [[99.98, 200], [100.0, 100], [99.99, 0], [99.97, 400]], [[100.03, 300], [100.02, 50], [100.05, 100]]);

  it("sorts best-first and drops empty levels", () => {
    const s = sortedSides(b);
    expect(s.bids.map((l) => l[0])).toEqual([100.0, 99.98, 99.97]);
    expect(s.asks.map((l) => l[0])).toEqual([100.02, 100.03, 100.05]);
  });

  it("builds the ladder: asks high to low above bids high to low, with cumulative size", () => {
    const l = buildLadder(b, 2);
    expect(l.asks.map((r) => [r.price, r.size, r.cum])).toEqual([
      [100.03, 300, 350],
      [100.02, 50, 50],
    ]);
    expect(l.bids.map((r) => [r.price, r.size, r.cum])).toEqual([
      [100.0, 100, 100],
      [99.98, 200, 300],
    ]);
    expect(l.bestBid).toBe(100.0);
    expect(l.bestAsk).toBe(100.02);
    expect(l.spread).toBeCloseTo(0.02, 10);
    expect(l.mid).toBeCloseTo(100.01, 10);
    // bar widths are relative to the largest size shown (300)
    expect(l.asks[0].frac).toBe(1);
    expect(l.bids[1].frac).toBeCloseTo(200 / 300);
  });

  it("handles a top-of-book-only or one-sided book", () => {
    const top = buildLadder(book(1, [[10, 5]], []));
    expect(top.bestAsk).toBeNull();
    expect(top.spread).toBeNull();
    expect(top.mid).toBe(10);
    const empty = buildLadder(book(1, [], []));
    expect(empty.mid).toBeNull();
    expect(empty.asks).toEqual([]);
  });

  it("computes the cumulative depth curves from the touch outward", () => {
    const d = depthCurves(b);
    expect(d.bids).toEqual([
      { price: 100.0, cum: 100 },
      { price: 99.98, cum: 300 },
      { price: 99.97, cum: 700 },
    ]);
    expect(d.asks).toEqual([
      { price: 100.02, cum: 50 },
      { price: 100.03, cum: 350 },
      { price: 100.05, cum: 450 },
    ]);
  });

  it("keeps a capped, time-ordered history", () => {
    let h: Book[] = [];
    for (let i = 1; i <= 5; i++) h = pushHistory(h, book(i, [[1, i]], []), 3);
    expect(h.map((x) => x.ts)).toEqual([3, 4, 5]);
    h = pushHistory(h, book(5, [[1, 99]], []), 3); // same time: replaced
    expect(h.map((x) => x.bids[0][1])).toEqual([3, 4, 99]);
    h = pushHistory(h, book(2, [[1, 1]], []), 3); // older: ignored
    expect(h.map((x) => x.ts)).toEqual([3, 4, 5]);
  });

  it("keeps one history row per interval of event time", () => {
    let h: Book[] = [];
    for (const ts of [0, 400, 1000, 1300, 1900, 2100]) h = pushHistory(h, book(ts, [[1, ts]], []), 10, 1000);
    // one row per 1000 ns bucket, holding the bucket's latest snapshot
    expect(h.map((x) => x.ts)).toEqual([400, 1900, 2100]);
  });

  it("lays the history out as a depth-over-time grid", () => {
    const h = [book(1, [[10, 5]], [[11, 2]]), book(2, [[9, 4], [10, 8]], [[11, 1]])];
    const g = depthGrid(h);
    expect(g.prices).toEqual([9, 10, 11]);
    expect(g.times).toEqual([1, 2]);
    expect(g.maxSize).toBe(8);
    expect(g.cells).toContainEqual({ t: 0, p: 1, size: 5, side: "bid" });
    expect(g.cells).toContainEqual({ t: 1, p: 0, size: 4, side: "bid" });
    expect(g.cells).toContainEqual({ t: 1, p: 2, size: 1, side: "ask" });
    expect(g.cells).toHaveLength(5);
  });

  it("limits the grid to the levels nearest the latest mid", () => {
    const bids: [number, number][] = Array.from({ length: 30 }, (_, i) => [100 - i, 1]);
    const asks: [number, number][] = Array.from({ length: 30 }, (_, i) => [101 + i, 1]);
    const g = depthGrid([book(1, bids, asks)], 10);
    expect(g.prices).toEqual([96, 97, 98, 99, 100, 101, 102, 103, 104, 105]);
    expect(g.cells).toHaveLength(10);
    expect(depthGrid([]).cells).toEqual([]);
  });
});
