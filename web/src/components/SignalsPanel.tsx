import type { Intent } from "../api";
import { fmtInt, fmtTime } from "../format";
import { Empty, Panel } from "./Panel";

export function SignalsPanel({ intents }: { intents: Intent[] }) {
  return (
    <Panel testid="panel-signals" title="Intents & risk decisions">
      {intents.length === 0 ? (
        <Empty>no intents yet</Empty>
      ) : (
        <div className="scroll scroll-short">
          <table className="grid">
            <thead>
              <tr>
                <th>time</th>
                <th>sym</th>
                <th>side</th>
                <th className="num">qty</th>
                <th>decision</th>
                <th>reason</th>
              </tr>
            </thead>
            <tbody>
              {intents.slice(0, 100).map((i) => (
                <tr key={i.intent_id} data-testid="intent-row" data-decision={i.decision}>
                  <td>{fmtTime(i.ts)}</td>
                  <td className="sym">{i.symbol}</td>
                  <td className={i.side === "BUY" ? "long" : "short"}>{i.side}</td>
                  <td className="num">{fmtInt(i.quantity)}</td>
                  <td className={`decision decision-${i.decision || "pending"}`}>
                    {i.decision || "pending"}
                    {i.denial ? <span className="mono"> {i.denial}</span> : null}
                  </td>
                  <td className="reason" title={i.reason}>
                    {i.reason}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Panel>
  );
}
