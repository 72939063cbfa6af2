import { useCallback, useEffect, useMemo, useReducer, useRef, useState } from "react";
import { canControl, canEditParams, wsUrl, type Api, type WhoAmI } from "./api";
import { AlertsPanel } from "./components/AlertsPanel";
import { AuditPanel } from "./components/AuditPanel";
import { BookPanel } from "./components/BookPanel";
import { ControlsPanel } from "./components/ControlsPanel";
import { ModelsPanel } from "./components/ModelsPanel";
import { NewsPanel } from "./components/NewsPanel";
import { OrdersPanel } from "./components/OrdersPanel";
import { ParamsPanel } from "./components/ParamsPanel";
import { PnlPanel } from "./components/PnlPanel";
import { PositionsPanel } from "./components/PositionsPanel";
import { QosPanel } from "./components/QosPanel";
import { FleetPanel, RiskPanel } from "./components/RiskPanel";
import { SignalsPanel } from "./components/SignalsPanel";
import { fmtDate, fmtTime } from "./format";
import { initialState, knownSymbols, orderLists, positionList, reducer, type Snapshot, type State, type WsMessage } from "./store";
import { LiveFeed } from "./ws";

export interface DashboardProps {
  api: Api;
  me: WhoAmI;
  token: string;
  onLogout: () => void;
  /** open the WebSocket (off in unit tests) */
  live?: boolean;
  /** poll the REST snapshots (off in unit tests) */
  poll?: boolean;
  initial?: State;
}

type Kind = Snapshot["kind"];

const WS_BATCH_MS = 100;

export function Dashboard(props: DashboardProps) {
  const { api, me } = props;
  const [state, dispatch] = useReducer(reducer, props.initial ?? initialState);
  const [bookSymbol, setBookSymbol] = useState<string | null>(null);
  const [apiError, setApiError] = useState<string | null>(null);
  const inflight = useRef(new Set<string>());
  const live = props.live ?? true;
  const polling = props.poll ?? true;

  const fetchers = useMemo<Record<Exclude<Kind, "book">, () => Promise<unknown>>>(
    () => ({
      status: api.status,
      positions: api.positions,
      orders: api.orders,
      pnl: api.pnl,
      qos: api.qos,
      models: api.models,
      signals: api.signals,
      alerts: api.alerts,
      news: api.news,
      bookSymbols: api.bookSymbols,
      audit: () => api.audit("-2h"),
    }),
    [api],
  );

  const pull = useCallback(
    async (kind: Exclude<Kind, "book">) => {
      if (inflight.current.has(kind)) return;
      inflight.current.add(kind);
      try {
        const data = await fetchers[kind]();
        dispatch({ type: "snapshot", snap: { kind, data } as Snapshot });
        setApiError(null);
      } catch (e) {
        setApiError(`${kind}: ${e instanceof Error ? e.message : String(e)}`);
      } finally {
        inflight.current.delete(kind);
      }
    },
    [fetchers],
  );

  const refreshFast = useCallback(() => {
    for (const k of ["status", "positions", "orders", "pnl", "qos"] as const) void pull(k);
  }, [pull]);

  // REST snapshots: the fallback when the WebSocket is down, and the first picture
  useEffect(() => {
    if (!polling) return;
    const slow = () => {
      for (const k of ["models", "signals", "alerts", "news", "bookSymbols"] as const) void pull(k);
    };
    refreshFast();
    slow();
    void pull("audit");
    const fastMs = state.wsConnected ? 8000 : 3000;
    const t1 = setInterval(refreshFast, fastMs);
    const t2 = setInterval(slow, state.wsConnected ? 15000 : 6000);
    const t3 = setInterval(() => void pull("audit"), 30000);
    return () => {
      clearInterval(t1);
      clearInterval(t2);
      clearInterval(t3);
    };
  }, [polling, pull, refreshFast, state.wsConnected]);

  // the selected symbol's book
  const symbols = state.bookSymbols;
  const withBook = symbols.find((s) => state.books[s]);
  useEffect(() => {
    // first pick: a symbol that already has a book, else the first one listed
    if (!bookSymbol && symbols.length) setBookSymbol(withBook ?? symbols[0]);
  }, [bookSymbol, symbols, withBook]);
  useEffect(() => {
    if (!polling || !bookSymbol) return;
    let alive = true;
    const get = async () => {
      if (inflight.current.has("book")) return;
      inflight.current.add("book");
      try {
        const b = await api.book(bookSymbol);
        if (alive && b && b.symbol) dispatch({ type: "snapshot", snap: { kind: "book", data: b } });
      } catch {
        /* the next poll tries again */
      } finally {
        inflight.current.delete("book");
      }
    };
    void get();
    const t = setInterval(get, 2000);
    return () => {
      alive = false;
      clearInterval(t);
    };
  }, [api, bookSymbol, polling]);

  // the live feed
  const { token, onLogout } = props;
  useEffect(() => {
    if (!live) return;
    // pushes are applied in batches, at most ~10 renders a second however fast they come
    let queue: WsMessage[] = [];
    let timer: ReturnType<typeof setTimeout> | null = null;
    const flush = () => {
      timer = null;
      const msgs = queue;
      queue = [];
      if (msgs.length) dispatch({ type: "wsBatch", msgs });
    };
    const feed = new LiveFeed({
      url: () => wsUrl(token),
      onMessage: (msg) => {
        queue.push(msg);
        if (!timer) timer = setTimeout(flush, WS_BATCH_MS);
      },
      onState: (connected) => dispatch({ type: "wsState", connected }),
      onAuthClose: onLogout,
    });
    feed.start();
    return () => {
      feed.stop();
      if (timer) clearTimeout(timer);
    };
  }, [live, token, onLogout]);

  const controls = canControl(me.role);
  const { open, done } = orderLists(state);
  const positions = positionList(state);
  const qosEntries = Object.values(state.qos).sort((a, b) => a.symbol.localeCompare(b.symbol));
  const posQty: Record<string, number> = {};
  for (const p of positions) posQty[p.symbol] = p.quantity;
  const nowNs = state.lastTs;
  const mode = state.risk?.mode ?? "UNKNOWN";

  return (
    <div className={`dashboard role-${me.role}`}>
      <header className="topbar">
        <span className="brand">tradefleet</span>
        <span className={`mode mode-${mode.toLowerCase()}`} data-testid="topbar-mode">
          {mode}
        </span>
        <span className="clock" data-testid="market-clock" title="market time (New York)">
          {nowNs ? `${fmtDate(nowNs)} ${fmtTime(nowNs)} NY` : "—"}
        </span>
        <span className={state.wsConnected ? "ws up" : "ws down"} data-testid="ws-state">
          {state.wsConnected ? "live" : "polling"}
        </span>
        {apiError ? (
          <span className="api-error" title={apiError}>
            {apiError}
          </span>
        ) : null}
        <span className="spacer" />
        <span className="who" data-testid="whoami">
          {me.name} <span className={`badge role role-${me.role}`}>{me.role}</span>
        </span>
        <button data-testid="logout" onClick={onLogout}>
          Log out
        </button>
      </header>
      <main className="panels">
        <PnlPanel pnl={state.pnl} equity={state.equity} dayPeak={state.risk?.day_peak_pnl ?? null} />
        <RiskPanel risk={state.risk} limits={state.status?.limits ?? {}} denials={state.status?.denials ?? {}} />
        {controls ? (
          <ControlsPanel
            api={api}
            symbols={knownSymbols(state)}
            qos={state.qos}
            entriesStoppedAll={state.entriesStoppedAll}
            operatorMode={state.risk?.operator_mode}
            refresh={refreshFast}
          />
        ) : null}
        <PositionsPanel positions={positions} />
        <OrdersPanel open={open} done={done} fills={state.fills} api={api} controls={controls} refresh={refreshFast} />
        <QosPanel entries={qosEntries} thresholds={state.thresholds} entriesStoppedAll={state.entriesStoppedAll} positions={posQty} />
        <NewsPanel news={state.news} />
        <AlertsPanel alerts={state.alerts} />
        <BookPanel
          symbols={symbols}
          symbol={bookSymbol}
          onSymbol={setBookSymbol}
          book={bookSymbol ? (state.books[bookSymbol] ?? null) : null}
          history={bookSymbol ? (state.bookHistory[bookSymbol] ?? []) : []}
          show3d={live}
        />
        <ModelsPanel models={state.models} alerts={state.alerts} nowNs={nowNs} />
        <SignalsPanel intents={state.intents} />
        {controls ? <ParamsPanel api={api} editable={canEditParams(me.role)} /> : null}
        <FleetPanel status={state.status} />
        <AuditPanel rows={state.audit} />
      </main>
    </div>
  );
}
