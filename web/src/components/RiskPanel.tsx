import type { LimitUsage, RiskState, Status } from "../api";
import { fmtInt, fmtNum, fmtPnl, pnlClass } from "../format";
import { Empty, Panel } from "./Panel";

/** A cause is "MODE|why": the mode it asks for and the reason. */
export function splitCause(v: string): { mode: string; why: string } {
  const i = v.indexOf("|");
  return i < 0 ? { mode: "", why: v } : { mode: v.slice(0, i), why: v.slice(i + 1) };
}

export function usageFrac(u: LimitUsage): number {
  if (!Number.isFinite(u.limit) || u.limit === 0) return 0;
  return Math.abs(u.used) / Math.abs(u.limit);
}

export function RiskPanel(props: {
  risk: RiskState | null;
  limits: Record<string, LimitUsage>;
  denials: Record<string, number>;
}) {
  const r = props.risk;
  const causes = Object.entries(r?.causes ?? {});
  const limits = Object.entries(props.limits ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const denials = Object.entries(props.denials ?? {}).sort((a, b) => b[1] - a[1]);
  return (
    <Panel testid="panel-risk" title="Risk">
      <div className="risk-head">
        <span data-testid="risk-mode" className={`mode mode-${(r?.mode ?? "unknown").toLowerCase()}`}>
          {r?.mode ?? "UNKNOWN"}
        </span>
        <span className="mode-reason" data-testid="risk-reason">
          {r?.mode_reason}
        </span>
        {r?.operator_mode ? <span className="muted">operator: {r.operator_mode}</span> : null}
      </div>
      {causes.length ? (
        <ul className="causes" data-testid="risk-causes">
          {causes.map(([k, v]) => {
            const c = splitCause(v);
            return (
              <li key={k}>
                <span className={`mode small mode-${c.mode.toLowerCase()}`}>{c.mode || "?"}</span> <b>{k}</b> {c.why}
              </li>
            );
          })}
        </ul>
      ) : null}
      {r ? (
        <div className="kv">
          <span>realized</span>
          <b className={pnlClass(r.realized_pnl)}>{fmtPnl(r.realized_pnl)}</b>
          <span>unrealized</span>
          <b className={pnlClass(r.unrealized_pnl)}>{fmtPnl(r.unrealized_pnl)}</b>
          <span>gross exp.</span>
          <b>{fmtNum(r.gross_exposure, 0)}</b>
          <span>net exp.</span>
          <b>{fmtNum(r.net_exposure, 0)}</b>
          <span>open orders</span>
          <b>{fmtInt(r.open_orders)}</b>
          <span>day trades</span>
          <b>{fmtInt(r.day_trades)}</b>
          <span>consec. losses</span>
          <b>{fmtInt(r.consecutive_losses)}</b>
          <span>day peak</span>
          <b>{fmtPnl(r.day_peak_pnl)}</b>
        </div>
      ) : (
        <Empty>no risk state yet</Empty>
      )}
      <h3>limits</h3>
      {limits.length === 0 ? (
        <Empty>no limits reported</Empty>
      ) : (
        <div className="limits" data-testid="risk-limits">
          {limits.map(([name, u]) => {
            const f = usageFrac(u);
            return (
              <div key={name} className="limit" title={`${u.used} / ${u.limit}`}>
                <span className="lname">{name}</span>
                <span className="lbar">
                  <span
                    className={f >= 1 ? "over" : f >= 0.8 ? "near" : "ok"}
                    style={{ width: `${Math.min(1, f) * 100}%` }}
                  />
                </span>
                <span className="lval">
                  {fmtNum(u.used, Number.isInteger(u.used) ? 0 : 2)} / {fmtNum(u.limit, Number.isInteger(u.limit) ? 0 : 2)}
                </span>
              </div>
            );
          })}
        </div>
      )}
      <h3>denials</h3>
      {denials.length === 0 ? (
        <Empty>no denials</Empty>
      ) : (
        <table className="grid compact" data-testid="risk-denials">
          <tbody>
            {denials.map(([code, n]) => (
              <tr key={code}>
                <td className="mono">{code}</td>
                <td className="num">{fmtInt(n)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Panel>
  );
}

export function FleetPanel({ status }: { status: Status | null }) {
  const services = [...(status?.services ?? [])].sort(
    (a, b) => a.service.localeCompare(b.service) || a.replica.localeCompare(b.replica),
  );
  const feeds = Object.entries(status?.feeds ?? {}).sort(([a], [b]) => a.localeCompare(b));
  return (
    <Panel testid="panel-fleet" title="Fleet">
      {status?.broker ? (
        <div className="broker">
          broker: <b className={`broker-${status.broker.state}`}>{status.broker.state}</b>{" "}
          <span className="muted">{status.broker.detail}</span>
        </div>
      ) : null}
      <div className="services">
        {services.map((s) => {
          const cls = s.absent ? "down" : s.heartbeat_age_s > 10 ? "stale" : "up";
          return (
            <span key={`${s.service}/${s.replica}`} className={`svc ${cls}`} title={`heartbeat ${fmtNum(s.heartbeat_age_s, 1)} s ago`}>
              {s.service}
              {s.replica && s.replica !== "0" ? `/${s.replica}` : ""}
            </span>
          );
        })}
        {services.length === 0 ? <Empty>no services reported</Empty> : null}
      </div>
      {feeds.length ? (
        <div className="feeds">
          {feeds.map(([k, v]) => (
            <span key={k} className={`feed feed-${v.toLowerCase()}`}>
              {k}: {v}
            </span>
          ))}
        </div>
      ) : null}
    </Panel>
  );
}
