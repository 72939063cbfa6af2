// Small hand-drawn SVG charts: the equity curve and the cumulative depth chart.
import type { PnlPoint } from "../api";
import type { DepthPoint } from "../book";
import { fmtNum, fmtPnl, fmtTime } from "../format";

/** Keeps at most `max` points, always the first and the last. */
export function downsample<T>(xs: T[], max: number): T[] {
  if (xs.length <= max) return xs;
  const step = (xs.length - 1) / (max - 1);
  const out: T[] = [];
  for (let i = 0; i < max; i++) out.push(xs[Math.round(i * step)]);
  return out;
}

const W = 600;
const H = 160;
const PAD = 4;

export function EquityCurve({ points }: { points: PnlPoint[] }) {
  if (points.length < 2) {
    return <div className="empty">equity curve: waiting for P&amp;L points</div>;
  }
  const pts = downsample(points, 600);
  const t0 = pts[0].ts;
  const t1 = pts[pts.length - 1].ts;
  const vals = pts.flatMap((p) => [p.total, p.realized, 0]);
  let lo = Math.min(...vals);
  let hi = Math.max(...vals);
  if (hi - lo < 1e-9) {
    hi += 1;
    lo -= 1;
  }
  const x = (ts: number) => PAD + ((ts - t0) / Math.max(1, t1 - t0)) * (W - 2 * PAD);
  const y = (v: number) => PAD + (1 - (v - lo) / (hi - lo)) * (H - 2 * PAD);
  const line = (f: (p: PnlPoint) => number) =>
    pts.map((p) => `${x(p.ts).toFixed(1)},${y(f(p)).toFixed(1)}`).join(" ");
  const last = pts[pts.length - 1];
  return (
    <figure className="equity" data-testid="equity-curve">
      <svg viewBox={`0 0 ${W} ${H}`} preserveAspectRatio="none" role="img" aria-label="equity curve">
        <line x1={0} x2={W} y1={y(0)} y2={y(0)} className="zero" />
        <polyline points={line((p) => p.realized)} className="realized" fill="none" />
        <polyline
          points={line((p) => p.total)}
          className={last.total >= 0 ? "total up" : "total down"}
          fill="none"
        />
      </svg>
      <figcaption>
        <span>{fmtTime(t0)}</span>
        <span>
          high {fmtPnl(hi)} · low {fmtPnl(lo)} · <span className="legend-total">total</span>{" "}
          <span className="legend-realized">realized</span>
        </span>
        <span>{fmtTime(t1)}</span>
      </figcaption>
    </figure>
  );
}

export function DepthChart({ bids, asks }: { bids: DepthPoint[]; asks: DepthPoint[] }) {
  if (!bids.length && !asks.length) return <div className="empty">no depth</div>;
  const prices = [...bids, ...asks].map((p) => p.price);
  let lo = Math.min(...prices);
  let hi = Math.max(...prices);
  if (hi - lo < 1e-9) {
    hi += 0.01;
    lo -= 0.01;
  }
  const maxCum = Math.max(1, ...bids.map((p) => p.cum), ...asks.map((p) => p.cum));
  const h = 120;
  const x = (p: number) => PAD + ((p - lo) / (hi - lo)) * (W - 2 * PAD);
  const y = (c: number) => PAD + (1 - c / maxCum) * (h - 2 * PAD);
  // step areas from the touch outward
  const area = (pts: DepthPoint[]) => {
    if (!pts.length) return "";
    const parts = [`M${x(pts[0].price).toFixed(1)},${y(0).toFixed(1)}`];
    let prevCum = 0;
    for (const p of pts) {
      parts.push(`L${x(p.price).toFixed(1)},${y(prevCum).toFixed(1)}`);
      parts.push(`L${x(p.price).toFixed(1)},${y(p.cum).toFixed(1)}`);
      prevCum = p.cum;
    }
    parts.push(`L${x(pts[pts.length - 1].price).toFixed(1)},${y(0).toFixed(1)}Z`);
    return parts.join(" ");
  };
  return (
    <figure className="depth" data-testid="depth-chart">
      <svg viewBox={`0 0 ${W} ${h}`} preserveAspectRatio="none" role="img" aria-label="depth chart">
        <path d={area(bids)} className="bid-area" />
        <path d={area(asks)} className="ask-area" />
      </svg>
      <figcaption>
        <span>{fmtNum(lo, 2)}</span>
        <span>cumulative size (max {fmtNum(maxCum, 0)})</span>
        <span>{fmtNum(hi, 2)}</span>
      </figcaption>
    </figure>
  );
}
