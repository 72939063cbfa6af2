import { Component, lazy, Suspense, useMemo, useState, type ReactNode } from "react";
import type { Book } from "../api";
import { buildLadder, depthCurves } from "../book";
import { fmtInt, fmtNum, fmtTime } from "../format";
import { DepthChart } from "./charts";
import { Empty, Panel } from "./Panel";

// three.js is big: its chunk loads only when the 3D view is shown.
const Book3D = lazy(() => import("./Book3D"));

class Guard extends Component<{ children: ReactNode }, { error: string | null }> {
  state = { error: null as string | null };
  static getDerivedStateFromError(e: unknown) {
    return { error: String(e) };
  }
  render() {
    return this.state.error ? <div className="empty">3D view unavailable: {this.state.error}</div> : this.props.children;
  }
}

export function LadderView({ book, levels = 10 }: { book: Book; levels?: number }) {
  const l = useMemo(() => buildLadder(book, levels), [book, levels]);
  const row = (r: (typeof l.asks)[number]) => (
    <tr key={`${r.side}-${r.price}`} className={`ladder-${r.side}`} data-testid={`ladder-${r.side}`}>
      <td className="num bidsz">{r.side === "bid" ? fmtInt(r.size) : ""}</td>
      <td className="num price">{fmtNum(r.price)}</td>
      <td className="num asksz">{r.side === "ask" ? fmtInt(r.size) : ""}</td>
      <td className="barcell">
        <span className={`bar ${r.side}`} style={{ width: `${r.frac * 100}%` }} />
      </td>
      <td className="num muted">{fmtInt(r.cum)}</td>
    </tr>
  );
  return (
    <table className="ladder" data-testid="ladder">
      <thead>
        <tr>
          <th className="num">bid</th>
          <th className="num">price</th>
          <th className="num">ask</th>
          <th />
          <th className="num">cum.</th>
        </tr>
      </thead>
      <tbody>
        {l.asks.map(row)}
        <tr className="spread-row">
          <td colSpan={5}>
            spread {l.spread == null ? "—" : fmtNum(l.spread, 2)} · mid {l.mid == null ? "—" : fmtNum(l.mid, 3)}
          </td>
        </tr>
        {l.bids.map(row)}
      </tbody>
    </table>
  );
}

export function BookPanel(props: {
  symbols: string[];
  symbol: string | null;
  onSymbol: (s: string) => void;
  book: Book | null;
  history: Book[];
  show3d?: boolean;
}) {
  const [show3d, setShow3d] = useState(props.show3d ?? true);
  const curves = useMemo(() => (props.book ? depthCurves(props.book, 20) : { bids: [], asks: [] }), [props.book]);
  const b = props.book;
  return (
    <Panel
      testid="panel-book"
      title="Order book"
      className="wide"
      extra={
        <>
          <select
            data-testid="book-symbol"
            value={props.symbol ?? ""}
            onChange={(e) => props.onSymbol(e.target.value)}
          >
            {props.symbols.length === 0 ? <option value="">—</option> : null}
            {props.symbols.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
          <label className="muted">
            <input type="checkbox" checked={show3d} onChange={(e) => setShow3d(e.target.checked)} /> 3D
          </label>
        </>
      }
    >
      {!b ? (
        <Empty>no book yet</Empty>
      ) : (
        <div className="book-grid">
          <div>
            <div className="muted">
              {b.symbol} · {fmtTime(b.ts)} ·{" "}
              {b.depth ? `L2 depth (${b.bids.length}×${b.asks.length})` : <span data-testid="book-top-only">top of book only</span>}
            </div>
            <LadderView book={b} />
          </div>
          <div>
            <DepthChart bids={curves.bids} asks={curves.asks} />
            {show3d ? (
              <Guard>
                <Suspense fallback={<div className="empty">loading 3D view…</div>}>
                  <Book3D history={props.history} />
                </Suspense>
              </Guard>
            ) : null}
          </div>
        </div>
      )}
    </Panel>
  );
}
