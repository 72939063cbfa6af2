import type { Position } from "../api";
import { fmtInt, fmtNum, fmtPnl, pnlClass } from "../format";
import { Empty, Panel } from "./Panel";

export function PositionsPanel({ positions }: { positions: Position[] }) {
  return (
    <Panel testid="panel-positions" title="Positions">
      {positions.length === 0 ? (
        <Empty>no positions</Empty>
      ) : (
        <table className="grid">
          <thead>
            <tr>
              <th>symbol</th>
              <th className="num">qty</th>
              <th className="num">avg</th>
              <th className="num">mark</th>
              <th className="num">unrealized</th>
              <th className="num">realized</th>
            </tr>
          </thead>
          <tbody>
            {positions.map((p) => (
              <tr key={p.symbol} data-testid="position-row" data-symbol={p.symbol}>
                <td className="sym">{p.symbol}</td>
                <td className={`num ${p.quantity > 0 ? "long" : p.quantity < 0 ? "short" : ""}`}>
                  {fmtInt(p.quantity)}
                </td>
                <td className="num">{fmtNum(p.avg_price)}</td>
                <td className="num">{fmtNum(p.mark)}</td>
                <td className={`num ${pnlClass(p.unrealized)}`}>{fmtPnl(p.unrealized)}</td>
                <td className={`num ${pnlClass(p.realized)}`}>{fmtPnl(p.realized)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Panel>
  );
}
