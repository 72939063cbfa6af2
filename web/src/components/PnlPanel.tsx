import type { PnlPoint } from "../api";
import { fmtPnl, pnlClass } from "../format";
import { EquityCurve } from "./charts";
import { Panel } from "./Panel";

export function PnlPanel(props: {
  pnl: { realized: number; unrealized: number; total: number } | null;
  equity: PnlPoint[];
  dayPeak?: number | null;
}) {
  const p = props.pnl;
  return (
    <Panel testid="panel-pnl" title="P&L">
      <div className="pnl-figures">
        <div className="figure big">
          <label>total</label>
          <span data-testid="pnl-total" className={pnlClass(p?.total)}>
            {fmtPnl(p?.total)}
          </span>
        </div>
        <div className="figure">
          <label>realized</label>
          <span data-testid="pnl-realized" className={pnlClass(p?.realized)}>
            {fmtPnl(p?.realized)}
          </span>
        </div>
        <div className="figure">
          <label>unrealized</label>
          <span data-testid="pnl-unrealized" className={pnlClass(p?.unrealized)}>
            {fmtPnl(p?.unrealized)}
          </span>
        </div>
        {props.dayPeak != null ? (
          <div className="figure">
            <label>day peak</label>
            <span className={pnlClass(props.dayPeak)}>{fmtPnl(props.dayPeak)}</span>
          </div>
        ) : null}
      </div>
      <EquityCurve points={props.equity} />
    </Panel>
  );
}
