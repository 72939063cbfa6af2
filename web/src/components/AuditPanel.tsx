import type { AuditRow } from "../api";
import { Empty, Panel } from "./Panel";

export function AuditPanel({ rows }: { rows: AuditRow[] }) {
  return (
    <Panel testid="panel-audit" title="Audit (2 h)">
      {rows.length === 0 ? (
        <Empty>nothing in the audit trail</Empty>
      ) : (
        <div className="scroll scroll-short">
          <table className="grid compact">
            <tbody>
              {rows.slice(0, 200).map((r, i) => (
                <tr key={`${r.ts}-${i}`}>
                  <td className="mono">{r.ts}</td>
                  <td>{r.kind}</td>
                  <td>{r.who}</td>
                  <td className="reason" title={r.what}>
                    {r.what}
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
