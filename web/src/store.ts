// The dashboard's state and its reducer: REST snapshots (polled) and WebSocket pushes both land
// here. Pure functions, tested without a browser.
import type {
  Alert,
  Book,
  FillEvent,
  Intent,
  ModelInfo,
  NewsItem,
  Order,
  PnlPoint,
  Position,
  QosEntry,
  QosThresholds,
  RiskState,
  SentimentLabel,
  SignalsResponse,
  Status,
  AuditRow,
  OrdersResponse,
  PnlResponse,
  PositionsResponse,
  QosResponse,
} from "./api";
import { pushHistory } from "./book";

export const CAPS = {
  fills: 300,
  alerts: 200,
  news: 200,
  equity: 5000,
  predictions: 100,
  intents: 200,
  bookHistory: 60,
  /** event-time spacing of the 3D view's rows */
  bookHistoryGapNs: 1e9,
};

export interface State {
  status: Status | null;
  risk: RiskState | null;
  positions: Record<string, Position>;
  orders: Record<string, Order>;
  fills: FillEvent[];
  pnl: { realized: number; unrealized: number; total: number } | null;
  equity: PnlPoint[];
  qos: Record<string, QosEntry>;
  thresholds: QosThresholds | null;
  entriesStoppedAll: boolean;
  models: ModelInfo[];
  alerts: Alert[];
  news: NewsItem[];
  books: Record<string, Book>;
  bookHistory: Record<string, Book[]>;
  bookSymbols: string[];
  predictions: Record<string, unknown>[];
  intents: Intent[];
  audit: AuditRow[];
  /** the latest event time seen (ns): the replayed market's clock */
  lastTs: number;
  wsConnected: boolean;
  wsMessages: number;
}

export const initialState: State = {
  status: null,
  risk: null,
  positions: {},
  orders: {},
  fills: [],
  pnl: null,
  equity: [],
  qos: {},
  thresholds: null,
  entriesStoppedAll: false,
  models: [],
  alerts: [],
  news: [],
  books: {},
  bookHistory: {},
  bookSymbols: [],
  predictions: [],
  intents: [],
  audit: [],
  lastTs: 0,
  wsConnected: false,
  wsMessages: 0,
};

export interface SentimentMsg {
  news_id: string;
  symbol: string;
  label: SentimentLabel;
  score: number;
  polarity: number;
}

export type WsMessage =
  | { type: "risk"; data: RiskState }
  | { type: "position"; data: Position }
  | { type: "order"; data: Omit<Order, "fills"> & { fills?: Order["fills"] } }
  | { type: "fill"; data: FillEvent }
  | { type: "qos"; data: QosEntry }
  | { type: "alert"; data: Alert }
  | { type: "news"; data: NewsItem }
  | { type: "sentiment"; data: SentimentMsg }
  | { type: "book"; data: Book }
  | { type: "pnl"; data: PnlPoint }
  | { type: "prediction"; data: Record<string, unknown> };

export type Snapshot =
  | { kind: "status"; data: Status }
  | { kind: "positions"; data: PositionsResponse }
  | { kind: "orders"; data: OrdersResponse }
  | { kind: "pnl"; data: PnlResponse }
  | { kind: "qos"; data: QosResponse }
  | { kind: "models"; data: { models: ModelInfo[] } }
  | { kind: "signals"; data: SignalsResponse }
  | { kind: "alerts"; data: { alerts: Alert[] } }
  | { kind: "news"; data: { news: NewsItem[] } }
  | { kind: "book"; data: Book }
  | { kind: "bookSymbols"; data: { symbols: string[] } }
  | { kind: "audit"; data: { rows: AuditRow[] } };

export type Action =
  | { type: "ws"; msg: WsMessage }
  | { type: "wsBatch"; msgs: WsMessage[] }
  | { type: "snapshot"; snap: Snapshot }
  | { type: "wsState"; connected: boolean }
  | { type: "reset" };

// -- helpers -------------------------------------------------------------------------------------

const alertKey = (a: Alert) => `${a.ts}|${a.source}|${a.title}`;
const fillKey = (f: { exec_id: string; ts: number }) => f.exec_id || `ts:${f.ts}`;

/** Union by key; the later list's items win; sorted newest first; capped. */
function mergeNewest<T extends { ts: number }>(
  older: T[],
  newer: T[],
  key: (x: T) => string,
  cap: number,
): T[] {
  const byKey = new Map<string, T>();
  for (const x of older) byKey.set(key(x), x);
  for (const x of newer) byKey.set(key(x), x);
  return [...byKey.values()].sort((a, b) => b.ts - a.ts).slice(0, cap);
}

function maxTs(state: State, ts: number | undefined): number {
  return ts != null && Number.isFinite(ts) && ts > state.lastTs ? ts : state.lastTs;
}

function withBook(state: State, book: Book): State {
  if (!book || !book.symbol) return state;
  const prev = state.books[book.symbol];
  const books = prev && prev.ts > book.ts ? state.books : { ...state.books, [book.symbol]: book };
  return {
    ...state,
    books,
    bookHistory: {
      ...state.bookHistory,
      [book.symbol]: pushHistory(state.bookHistory[book.symbol], book, CAPS.bookHistory, CAPS.bookHistoryGapNs),
    },
    bookSymbols: state.bookSymbols.includes(book.symbol)
      ? state.bookSymbols
      : [...state.bookSymbols, book.symbol].sort(),
    lastTs: maxTs(state, book.ts),
  };
}

function appendEquity(equity: PnlPoint[], p: PnlPoint): PnlPoint[] {
  const last = equity[equity.length - 1];
  if (last && p.ts < last.ts) return equity;
  const next = last && last.ts === p.ts ? [...equity.slice(0, -1), p] : [...equity, p];
  return next.length > CAPS.equity ? next.slice(next.length - CAPS.equity) : next;
}

function fillsOf(orders: Order[]): FillEvent[] {
  const out: FillEvent[] = [];
  for (const o of orders) {
    for (const f of o.fills ?? []) {
      out.push({ ...f, client_order_id: o.client_order_id, symbol: o.symbol, side: o.side });
    }
  }
  return out;
}

// -- WebSocket messages ---------------------------------------------------------------------------

export function applyWs(state: State, msg: WsMessage): State {
  const s = { ...state, wsMessages: state.wsMessages + 1 };
  const d = msg.data as never;
  switch (msg.type) {
    case "risk":
      return { ...s, risk: msg.data };
    case "position": {
      const p = msg.data;
      return { ...s, positions: { ...s.positions, [p.symbol]: p } };
    }
    case "order": {
      const o = msg.data;
      const prev = s.orders[o.client_order_id];
      const fills = o.fills ?? prev?.fills ?? [];
      return {
        ...s,
        orders: { ...s.orders, [o.client_order_id]: { ...prev, ...o, fills } },
        lastTs: maxTs(s, o.ts),
      };
    }
    case "fill": {
      const f = msg.data;
      const prev = s.orders[f.client_order_id];
      let orders = s.orders;
      if (prev && !prev.fills.some((x) => x.exec_id === f.exec_id)) {
        const fill = {
          exec_id: f.exec_id,
          quantity: f.quantity,
          price: f.price,
          ts: f.ts,
          commission: f.commission,
        };
        orders = { ...orders, [prev.client_order_id]: { ...prev, fills: [...prev.fills, fill] } };
      }
      return {
        ...s,
        orders,
        fills: mergeNewest(s.fills, [f], fillKey, CAPS.fills),
        lastTs: maxTs(s, f.ts),
      };
    }
    case "qos": {
      const q = msg.data;
      return { ...s, qos: { ...s.qos, [q.symbol]: q }, lastTs: maxTs(s, q.ts) };
    }
    case "alert":
      return { ...s, alerts: mergeNewest(s.alerts, [msg.data], alertKey, CAPS.alerts) };
    case "news": {
      const n = msg.data;
      const prev = s.news.find((x) => x.news_id === n.news_id);
      const item = prev && !n.sentiment && prev.sentiment ? { ...n, sentiment: prev.sentiment } : n;
      return {
        ...s,
        news: mergeNewest(s.news, [item], (x) => x.news_id, CAPS.news),
        lastTs: maxTs(s, n.ts),
      };
    }
    case "sentiment": {
      const m = msg.data;
      let hit = false;
      const news = s.news.map((n) => {
        if (n.news_id !== m.news_id) return n;
        hit = true;
        return { ...n, sentiment: { label: m.label, score: m.score, polarity: m.polarity } };
      });
      return hit ? { ...s, news } : s;
    }
    case "book":
      return withBook(s, msg.data);
    case "pnl": {
      const p = msg.data;
      return {
        ...s,
        pnl: { realized: p.realized, unrealized: p.unrealized, total: p.total },
        equity: appendEquity(s.equity, p),
        lastTs: maxTs(s, p.ts),
      };
    }
    case "prediction":
      return { ...s, predictions: [msg.data, ...s.predictions].slice(0, CAPS.predictions) };
    default:
      void d;
      return state; // an unknown type: ignored
  }
}

// -- REST snapshots -------------------------------------------------------------------------------

export function applySnapshot(state: State, snap: Snapshot): State {
  switch (snap.kind) {
    case "status": {
      const st = snap.data;
      return {
        ...state,
        status: st,
        risk: st.risk ?? state.risk,
        lastTs: maxTs(state, st.market_ns),
      };
    }
    case "positions": {
      const positions: Record<string, Position> = {};
      for (const p of snap.data.positions ?? []) positions[p.symbol] = p;
      return { ...state, positions };
    }
    case "orders": {
      const all = [...(snap.data.today ?? []), ...(snap.data.open ?? [])];
      const orders: Record<string, Order> = {};
      for (const o of all) orders[o.client_order_id] = { ...o, fills: o.fills ?? [] };
      // orders the WebSocket brought that the snapshot does not know yet stay
      for (const [id, o] of Object.entries(state.orders)) {
        if (!orders[id] && o.ts > Math.max(0, ...all.map((x) => x.ts))) orders[id] = o;
      }
      return {
        ...state,
        orders,
        fills: mergeNewest(state.fills, fillsOf(all), fillKey, CAPS.fills),
      };
    }
    case "pnl": {
      const p = snap.data;
      const snapEq = (p.equity ?? []).slice(-CAPS.equity);
      const lastSnap = snapEq[snapEq.length - 1]?.ts ?? 0;
      // keep pushed points newer than the snapshot's last
      const tail = state.equity.filter((x) => x.ts > lastSnap);
      const equity = [...snapEq, ...tail].slice(-CAPS.equity);
      const newest = tail[tail.length - 1];
      const pnl = newest
        ? { realized: newest.realized, unrealized: newest.unrealized, total: newest.total }
        : { realized: p.realized, unrealized: p.unrealized, total: p.total };
      return { ...state, pnl, equity };
    }
    case "qos": {
      const qos: Record<string, QosEntry> = { ...state.qos };
      for (const q of snap.data.symbols ?? []) {
        const prev = qos[q.symbol];
        if (!prev || prev.ts <= q.ts) qos[q.symbol] = q;
      }
      return {
        ...state,
        qos,
        thresholds: snap.data.thresholds ?? state.thresholds,
        entriesStoppedAll: !!snap.data.entries_stopped_all,
      };
    }
    case "models":
      return { ...state, models: snap.data.models ?? [] };
    case "signals":
      return {
        ...state,
        intents: [...(snap.data.intents ?? [])].sort((a, b) => b.ts - a.ts).slice(0, CAPS.intents),
        predictions: (snap.data.predictions ?? []).slice(0, CAPS.predictions),
      };
    case "alerts":
      return {
        ...state,
        alerts: mergeNewest(state.alerts, snap.data.alerts ?? [], alertKey, CAPS.alerts),
      };
    case "news": {
      const incoming = (snap.data.news ?? []).map((n) => {
        const prev = state.news.find((x) => x.news_id === n.news_id);
        return !n.sentiment && prev?.sentiment ? { ...n, sentiment: prev.sentiment } : n;
      });
      return { ...state, news: mergeNewest(state.news, incoming, (x) => x.news_id, CAPS.news) };
    }
    case "book":
      return withBook(state, snap.data);
    case "bookSymbols": {
      const set = new Set([...state.bookSymbols, ...(snap.data.symbols ?? [])]);
      return { ...state, bookSymbols: [...set].sort() };
    }
    case "audit":
      return { ...state, audit: snap.data.rows ?? [] };
    default:
      return state;
  }
}

export function reducer(state: State, action: Action): State {
  switch (action.type) {
    case "ws":
      return applyWs(state, action.msg);
    case "wsBatch":
      return action.msgs.reduce(applyWs, state);
    case "snapshot":
      return applySnapshot(state, action.snap);
    case "wsState":
      return { ...state, wsConnected: action.connected };
    case "reset":
      return initialState;
    default:
      return state;
  }
}

/** Parses one WebSocket text frame; null for anything that is not {"type": str, "data": obj}. */
export function parseWsFrame(text: string): WsMessage | null {
  try {
    const m = JSON.parse(text) as { type?: unknown; data?: unknown };
    if (!m || typeof m.type !== "string" || m.data == null || typeof m.data !== "object") return null;
    return m as WsMessage;
  } catch {
    return null;
  }
}

// -- selectors ------------------------------------------------------------------------------------

export function positionList(state: State): Position[] {
  return Object.values(state.positions).sort((a, b) => a.symbol.localeCompare(b.symbol));
}

export function orderLists(state: State): { open: Order[]; done: Order[] } {
  const all = Object.values(state.orders).sort((a, b) => b.ts - a.ts);
  return { open: all.filter(isOpenOrder), done: all.filter((o) => !isOpenOrder(o)) };
}

/** proto/execution.py's TERMINAL_STATUSES: nothing moves an order out of these. */
export const TERMINAL_STATUSES = new Set(["FILLED", "CANCELLED", "REJECTED"]);

export function isOpenOrder(o: Pick<Order, "status">): boolean {
  return !TERMINAL_STATUSES.has((o.status ?? "").toUpperCase());
}

/** Every symbol the dashboard knows of (QOS, positions, books), for the per-symbol controls. */
export function knownSymbols(state: State): string[] {
  const set = new Set<string>([
    ...Object.keys(state.qos),
    ...Object.keys(state.positions),
    ...state.bookSymbols,
  ]);
  return [...set].sort();
}
