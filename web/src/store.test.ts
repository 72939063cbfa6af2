import { describe, expect, it } from "vitest";
import type { Book, NewsItem, Order, RiskState } from "./api";
import { applySnapshot, applyWs, initialState, knownSymbols, orderLists, parseWsFrame, reducer, type State } from "./store";

const risk = (mode: RiskState["mode"]): RiskState => ({
  mode,
  mode_reason: mode === "EMERGENCY" ? "kill switch" : "",
  operator_mode: "LIVE",
  causes: mode === "EMERGENCY" ? { kill: "EMERGENCY|operator kill" } : {},
  realized_pnl: 0,
  unrealized_pnl: 0,
  day_peak_pnl: 0,
  gross_exposure: 0,
  net_exposure: 0,
  open_orders: 0,
  consecutive_losses: 0,
  day_trades: 0,
  positions: {},
});

const order = (id: string, status: string, ts: number, fills: Order["fills"] = []): Order => ({
  client_order_id: id,
  symbol: "IBM",
  side: "BUY",
  quantity: 100,
  filled: 0,
  avg_fill_price: 0,
  status,
  order_type: "LMT",
  limit_price: 185.1,
  reason: "entry",
  ts,
  fills,
});

const news = (id: string, ts: number, sentiment: NewsItem["sentiment"] = null): NewsItem => ({
  ts,
  news_id: id,
  headline: `headline ${id}`,
  symbols: ["IBM"],
  source: "file",
  sentiment,
});

describe("WebSocket reducer", () => {
  it("takes the risk state", () => {
    const s = applyWs(initialState, { type: "risk", data: risk("EMERGENCY") });
    expect(s.risk?.mode).toBe("EMERGENCY");
    expect(s.wsMessages).toBe(1);
  });

  it("upserts positions by symbol", () => {
    let s = applyWs(initialState, {
      type: "position",
      data: { symbol: "IBM", quantity: 100, avg_price: 185, mark: 186, unrealized: 100, realized: 0 },
    });
    s = applyWs(s, {
      type: "position",
      data: { symbol: "IBM", quantity: 0, avg_price: 0, mark: 187, unrealized: 0, realized: 200 },
    });
    s = applyWs(s, {
      type: "position",
      data: { symbol: "BAC", quantity: -50, avg_price: 14, mark: 14, unrealized: 0, realized: 0 },
    });
    expect(Object.keys(s.positions).sort()).toEqual(["BAC", "IBM"]);
    expect(s.positions.IBM.realized).toBe(200);
  });

  it("follows an order's lifecycle and its fills, once each", () => {
    const { fills: _omit, ...bare } = order("o1", "SUBMITTED", 10);
    void _omit;
    let s = applyWs(initialState, { type: "order", data: bare });
    expect(orderLists(s).open.map((o) => o.client_order_id)).toEqual(["o1"]);
    const fill = {
      client_order_id: "o1",
      symbol: "IBM",
      side: "BUY" as const,
      quantity: 100,
      price: 185.05,
      ts: 11,
      exec_id: "e1",
      commission: 1,
    };
    s = applyWs(s, { type: "fill", data: fill });
    s = applyWs(s, { type: "fill", data: fill }); // a duplicate
    expect(s.fills).toHaveLength(1);
    expect(s.orders.o1.fills).toHaveLength(1);
    s = applyWs(s, { type: "order", data: { ...bare, status: "FILLED", filled: 100, avg_fill_price: 185.05, ts: 12 } });
    expect(s.orders.o1.fills).toHaveLength(1); // kept across the order update
    const { open, done } = orderLists(s);
    expect(open).toHaveLength(0);
    expect(done.map((o) => o.status)).toEqual(["FILLED"]);
    expect(s.lastTs).toBe(12);
  });

  it("keeps QOS per symbol", () => {
    const q = { symbol: "IBM", score: 0.4, peak: 0.4, regime: "trend", components: { "5m": 0.5 }, ts: 5, entries_stopped: false };
    const s = applyWs(initialState, { type: "qos", data: q });
    expect(s.qos.IBM.score).toBe(0.4);
    expect(knownSymbols(s)).toEqual(["IBM"]);
  });

  it("puts news newest first, deduplicated, and scores it when sentiment arrives", () => {
    let s = applyWs(initialState, { type: "news", data: news("n1", 1) });
    s = applyWs(s, { type: "news", data: news("n2", 2) });
    s = applyWs(s, { type: "news", data: news("n1", 1) });
    expect(s.news.map((n) => n.news_id)).toEqual(["n2", "n1"]);
    s = applyWs(s, { type: "sentiment", data: { news_id: "n1", symbol: "IBM", label: "negative", score: 0.9, polarity: -0.8 } });
    expect(s.news[1].sentiment).toEqual({ label: "negative", score: 0.9, polarity: -0.8 });
    // a re-sent headline without sentiment keeps the one it had
    s = applyWs(s, { type: "news", data: news("n1", 1) });
    expect(s.news.find((n) => n.news_id === "n1")?.sentiment?.label).toBe("negative");
    // sentiment for an unknown headline changes nothing
    const same = applyWs(s, { type: "sentiment", data: { news_id: "zz", symbol: "IBM", label: "positive", score: 1, polarity: 1 } });
    expect(same.news).toBe(s.news);
  });

  it("puts alerts newest first", () => {
    let s = applyWs(initialState, { type: "alert", data: { ts: 1, severity: "info", source: "x", title: "a", body: "" } });
    s = applyWs(s, { type: "alert", data: { ts: 3, severity: "critical", source: "risk", title: "b", body: "" } });
    expect(s.alerts.map((a) => a.title)).toEqual(["b", "a"]);
  });

  it("keeps the latest book and its history", () => {
    const S = 1e9;
    const b = (ts: number): Book => ({ symbol: "IBM", bids: [[1, ts]], asks: [[2, 1]], ts, depth: true });
    let s = applyWs(initialState, { type: "book", data: b(1 * S) });
    s = applyWs(s, { type: "book", data: b(2 * S) });
    s = applyWs(s, { type: "book", data: b(2.5 * S) }); // same second: replaces the last row
    expect(s.books.IBM.ts).toBe(2.5 * S);
    expect(s.bookHistory.IBM.map((x) => x.ts)).toEqual([1 * S, 2.5 * S]);
    expect(s.bookSymbols).toEqual(["IBM"]);
    s = applyWs(s, { type: "book", data: b(1 * S) }); // a stale one
    expect(s.books.IBM.ts).toBe(2.5 * S);
  });

  it("appends P&L points to the equity curve", () => {
    let s = applyWs(initialState, { type: "pnl", data: { ts: 1, realized: 0, unrealized: 5, total: 5 } });
    s = applyWs(s, { type: "pnl", data: { ts: 2, realized: 10, unrealized: -2, total: 8 } });
    s = applyWs(s, { type: "pnl", data: { ts: 2, realized: 10, unrealized: 0, total: 10 } });
    expect(s.pnl?.total).toBe(10);
    expect(s.equity.map((p) => p.total)).toEqual([5, 10]);
  });

  it("ignores unknown message types", () => {
    const s = applyWs(initialState, { type: "nope", data: {} } as never);
    expect(s).toBe(initialState);
  });

  it("parses frames", () => {
    expect(parseWsFrame('{"type":"risk","data":{"mode":"LIVE"}}')?.type).toBe("risk");
    expect(parseWsFrame("not json")).toBeNull();
    expect(parseWsFrame('{"type":"risk"}')).toBeNull();
  });
});

describe("snapshots", () => {
  it("replaces positions and takes risk from the status", () => {
    let s: State = applySnapshot(initialState, {
      kind: "positions",
      data: { positions: [{ symbol: "IBM", quantity: 1, avg_price: 1, mark: 1, unrealized: 0, realized: 0 }], ts: 1 },
    });
    expect(Object.keys(s.positions)).toEqual(["IBM"]);
    s = applySnapshot(s, {
      kind: "status",
      data: { services: [], risk: risk("LIVE"), limits: {}, feeds: {}, broker: null, denials: { MAX_POSITION: 2 }, market_ns: 99 },
    });
    expect(s.risk?.mode).toBe("LIVE");
    expect(s.lastTs).toBe(99);
  });

  it("takes orders and their fills from /api/orders", () => {
    const s = applySnapshot(initialState, {
      kind: "orders",
      data: {
        open: [order("o2", "SUBMITTED", 5)],
        today: [order("o1", "FILLED", 3, [{ exec_id: "e1", quantity: 100, price: 1, ts: 4, commission: 0 }])],
      },
    });
    expect(orderLists(s).open.map((o) => o.client_order_id)).toEqual(["o2"]);
    expect(s.fills.map((f) => [f.exec_id, f.client_order_id, f.symbol])).toEqual([["e1", "o1", "IBM"]]);
  });

  it("merges the P&L snapshot with newer pushed points", () => {
    let s = applyWs(initialState, { type: "pnl", data: { ts: 9, realized: 1, unrealized: 1, total: 2 } });
    s = applySnapshot(s, {
      kind: "pnl",
      data: { realized: 0, unrealized: 1, total: 1, equity: [{ ts: 5, realized: 0, unrealized: 1, total: 1 }] },
    });
    expect(s.equity.map((p) => p.ts)).toEqual([5, 9]);
    expect(s.pnl?.total).toBe(2);
  });

  it("keeps the thresholds and the stopped flag from /api/qos", () => {
    const s = applySnapshot(initialState, {
      kind: "qos",
      data: {
        symbols: [],
        thresholds: { entry_threshold: 0.35, rearm_threshold: 0.15, exit_decay: 0.2, exit_floor: 0.05 },
        entries_stopped_all: true,
      },
    });
    expect(s.thresholds?.entry_threshold).toBe(0.35);
    expect(s.entriesStoppedAll).toBe(true);
  });

  it("keeps a scored headline's sentiment when a snapshot lacks it", () => {
    let s = applyWs(initialState, { type: "news", data: news("n1", 1, { label: "positive", score: 1, polarity: 0.5 }) });
    s = applySnapshot(s, { kind: "news", data: { news: [news("n1", 1), news("n0", 0)] } });
    expect(s.news.map((n) => [n.news_id, n.sentiment?.label ?? null])).toEqual([
      ["n1", "positive"],
      ["n0", null],
    ]);
  });

  it("applies a batch of pushes in order", () => {
    const s = reducer(initialState, {
      type: "wsBatch",
      msgs: [
        { type: "risk", data: risk("LIVE") },
        { type: "risk", data: risk("EMERGENCY") },
        { type: "pnl", data: { ts: 1, realized: 0, unrealized: 1, total: 1 } },
      ],
    });
    expect(s.risk?.mode).toBe("EMERGENCY");
    expect(s.pnl?.total).toBe(1);
    expect(s.wsMessages).toBe(3);
  });

  it("resets and tracks the socket", () => {
    let s = reducer(initialState, { type: "wsState", connected: true });
    expect(s.wsConnected).toBe(true);
    s = reducer(s, { type: "reset" });
    expect(s).toBe(initialState);
  });
});
