import type { Alert } from "../api";
import { fmtTime } from "../format";
import { Empty, Panel } from "./Panel";

export function AlertsPanel({ alerts }: { alerts: Alert[] }) {
  return (
    <Panel testid="panel-alerts" title="Alerts">
      {alerts.length === 0 ? (
        <Empty>no alerts</Empty>
      ) : (
        <ul className="alerts scroll">
          {alerts.map((a, i) => (
            <li key={`${a.ts}-${a.source}-${a.title}-${i}`} data-testid="alert-item" data-severity={a.severity} className={`alert sev-${a.severity}`}>
              <div className="alert-meta">
                <span>{fmtTime(a.ts)}</span>
                <span className={`badge sev-${a.severity}`}>{a.severity}</span>
                <span className="muted">{a.source}</span>
              </div>
              <div className="alert-title">{a.title}</div>
              {a.body ? <div className="alert-body">{a.body}</div> : null}
            </li>
          ))}
        </ul>
      )}
    </Panel>
  );
}
