// Order-book arithmetic for the ladder, the depth chart and the 3D depth-over-time view. Pure.
import type { Book, Level } from "./api";

export interface LadderRow {
  side: "bid" | "ask";
  price: number;
  size: number;
  /** size summed from the touch out to this level (inclusive) */
  cum: number;
  /** size / the largest size shown, for the bar width */
  frac: number;
}

export interface Ladder {
  /** asks, highest price first (so the best ask sits just above the best bid) */
  asks: LadderRow[];
  /** bids, best (highest) first */
  bids: LadderRow[];
  bestBid: number | null;
  bestAsk: number | null;
  spread: number | null;
  mid: number | null;
}

export interface DepthPoint {
  price: number;
  cum: number;
}

function clean(levels: Level[] | undefined): Level[] {
  return (levels ?? []).filter(
    (l) => Array.isArray(l) && Number.isFinite(l[0]) && Number.isFinite(l[1]) && l[1] > 0,
  );
}

/** Bids best-first (descending), asks best-first (ascending), empty and bad levels dropped. */
export function sortedSides(book: Pick<Book, "bids" | "asks">): { bids: Level[]; asks: Level[] } {
  const bids = clean(book.bids).sort((a, b) => b[0] - a[0]);
  const asks = clean(book.asks).sort((a, b) => a[0] - b[0]);
  return { bids, asks };
}

function cumulate(levels: Level[]): DepthPoint[] {
  let cum = 0;
  return levels.map(([price, size]) => {
    cum += size;
    return { price, cum };
  });
}

export function buildLadder(book: Pick<Book, "bids" | "asks">, levels = 10): Ladder {
  const { bids, asks } = sortedSides(book);
  const b = bids.slice(0, levels);
  const a = asks.slice(0, levels);
  const maxSize = Math.max(1e-12, ...b.map((l) => l[1]), ...a.map((l) => l[1]));
  const bidCum = cumulate(b);
  const askCum = cumulate(a);
  const bidRows: LadderRow[] = b.map(([price, size], i) => ({
    side: "bid",
    price,
    size,
    cum: bidCum[i].cum,
    frac: size / maxSize,
  }));
  const askRows: LadderRow[] = a
    .map(([price, size], i): LadderRow => ({
      side: "ask",
      price,
      size,
      cum: askCum[i].cum,
      frac: size / maxSize,
    }))
    .reverse();
  const bestBid = b.length ? b[0][0] : null;
  const bestAsk = a.length ? a[0][0] : null;
  const spread = bestBid != null && bestAsk != null ? bestAsk - bestBid : null;
  const mid = bestBid != null && bestAsk != null ? (bestBid + bestAsk) / 2 : (bestBid ?? bestAsk);
  return { asks: askRows, bids: bidRows, bestBid, bestAsk, spread, mid };
}

/** Cumulative depth from the touch outward: bids by falling price, asks by rising price. */
export function depthCurves(
  book: Pick<Book, "bids" | "asks">,
  levels = 20,
): { bids: DepthPoint[]; asks: DepthPoint[] } {
  const { bids, asks } = sortedSides(book);
  return { bids: cumulate(bids.slice(0, levels)), asks: cumulate(asks.slice(0, levels)) };
}

/**
 * Appends a snapshot to a symbol's history, one row per `gapNs` of event time (the latest
 * snapshot in it), `cap` rows at most; a snapshot older than the last is dropped.
 */
export function pushHistory(history: Book[] | undefined, book: Book, cap = 60, gapNs = 0): Book[] {
  const h = history ? [...history] : [];
  const last = h[h.length - 1];
  const bucket = (ts: number) => (gapNs > 0 ? Math.floor(ts / gapNs) : ts);
  if (last && book.ts < last.ts) return h; // an older snapshot (a late poll) adds nothing
  if (last && bucket(book.ts) === bucket(last.ts)) h[h.length - 1] = book;
  else h.push(book);
  return h.length > cap ? h.slice(h.length - cap) : h;
}

export interface DepthCell {
  /** snapshot index, oldest 0 */
  t: number;
  /** price level index, lowest price 0 */
  p: number;
  size: number;
  side: "bid" | "ask";
}

export interface DepthGrid {
  prices: number[];
  times: number[];
  cells: DepthCell[];
  maxSize: number;
}

/**
 * The depth-over-time grid the 3D view draws: one row per snapshot, one column per price level
 * (the union of the levels seen, limited to the `maxLevels` nearest the latest mid).
 */
export function depthGrid(history: Book[], maxLevels = 40): DepthGrid {
  if (!history.length) return { prices: [], times: [], cells: [], maxSize: 0 };
  const all = new Set<number>();
  for (const b of history) {
    for (const [p] of clean(b.bids)) all.add(p);
    for (const [p] of clean(b.asks)) all.add(p);
  }
  let prices = [...all].sort((a, b) => a - b);
  if (prices.length > maxLevels) {
    const mid = buildLadder(history[history.length - 1], 1).mid ?? prices[prices.length >> 1];
    prices = prices
      .map((p) => ({ p, d: Math.abs(p - mid) }))
      .sort((a, b) => a.d - b.d || a.p - b.p)
      .slice(0, maxLevels)
      .map((x) => x.p)
      .sort((a, b) => a - b);
  }
  const index = new Map(prices.map((p, i) => [p, i]));
  const cells: DepthCell[] = [];
  let maxSize = 0;
  history.forEach((b, t) => {
    const { bids, asks } = sortedSides(b);
    for (const [price, size] of bids) {
      const p = index.get(price);
      if (p === undefined) continue;
      cells.push({ t, p, size, side: "bid" });
      maxSize = Math.max(maxSize, size);
    }
    for (const [price, size] of asks) {
      const p = index.get(price);
      if (p === undefined) continue;
      cells.push({ t, p, size, side: "ask" });
      maxSize = Math.max(maxSize, size);
    }
  });
  return { prices, times: history.map((b) => b.ts), cells, maxSize };
}
