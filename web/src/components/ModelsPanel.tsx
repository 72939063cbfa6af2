import type { Alert, ModelInfo } from "../api";
import { fmtInt, fmtNum, fmtTime } from "../format";
import { Empty, Panel } from "./Panel";

const STALE_NS = 5 * 60 * 1e9;

export function modelHealth(m: ModelInfo, nowNs: number): "quarantined" | "stale" | "idle" | "ok" {
  if (m.quarantined) return "quarantined";
  if (!m.last_ts) return "idle";
  if (nowNs > 0 && nowNs - m.last_ts > STALE_NS) return "stale";
  return "ok";
}

/** Drift alerts (the fast lane's "input drift" quarantine alerts) that name this horizon. */
export function driftAlerts(alerts: Alert[], horizon: string): Alert[] {
  const re = new RegExp(`\\b${horizon.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\b`);
  return alerts.filter((a) => /drift/i.test(`${a.title} ${a.body}`) && re.test(a.title));
}

export function ModelsPanel(props: { models: ModelInfo[]; alerts: Alert[]; nowNs: number }) {
  return (
    <Panel testid="panel-models" title="Models">
      {props.models.length === 0 ? (
        <Empty>no models reported</Empty>
      ) : (
        <table className="grid">
          <thead>
            <tr>
              <th>horizon</th>
              <th>version</th>
              <th>health</th>
              <th>drift</th>
              <th className="num">predictions</th>
              <th>last</th>
            </tr>
          </thead>
          <tbody>
            {props.models.map((m) => {
              const h = modelHealth(m, props.nowNs);
              const drift = driftAlerts(props.alerts, m.horizon);
              const psi = m.max_psi ?? m.drift;
              return (
                <tr key={`${m.horizon}-${m.model_version}`} data-testid="model-row" data-quarantined={m.quarantined}>
                  <td className="sym">{m.horizon}</td>
                  <td className="mono">{m.model_version}</td>
                  <td>
                    <span className={`badge health-${h}`}>{h}</span>
                  </td>
                  <td title={drift[0]?.body ?? ""}>
                    {psi != null ? `PSI ${fmtNum(psi, 3)} ` : ""}
                    {drift.length ? <span className="badge warn">drift alert {fmtTime(drift[0].ts)}</span> : psi == null ? <span className="muted">none</span> : null}
                  </td>
                  <td className="num">{fmtInt(m.predictions)}</td>
                  <td>{fmtTime(m.last_ts)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </Panel>
  );
}
