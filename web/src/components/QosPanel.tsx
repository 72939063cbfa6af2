import type { QosEntry, QosThresholds } from "../api";
import { fmtSigned, fmtTime } from "../format";
import { componentOrder, exitLevel, qosZone } from "../qos";
import { Empty, Panel } from "./Panel";

const pct = (v: number) => `${((Math.max(-1, Math.min(1, v)) + 1) / 2) * 100}%`;

function ScoreBar(props: { score: number; t: QosThresholds | null; exit: number | null }) {
  const s = Math.max(-1, Math.min(1, props.score));
  const left = s >= 0 ? 50 : 50 + s * 50;
  const width = Math.abs(s) * 50;
  const t = props.t;
  return (
    <div className="scorebar" title={`score ${fmtSigned(props.score)}`}>
      <div className={`fill ${s >= 0 ? "pos" : "neg"}`} style={{ left: `${left}%`, width: `${width}%` }} />
      <div className="mark zero" style={{ left: "50%" }} />
      {t ? (
        <>
          <div className="mark entry" style={{ left: pct(t.entry_threshold) }} title="entry" />
          <div className="mark entry" style={{ left: pct(-t.entry_threshold) }} title="entry" />
          <div className="mark rearm" style={{ left: pct(t.rearm_threshold) }} title="re-arm" />
          <div className="mark rearm" style={{ left: pct(-t.rearm_threshold) }} title="re-arm" />
        </>
      ) : null}
      {props.exit != null ? <div className="mark exit" style={{ left: pct(props.exit) }} title="exit" /> : null}
    </div>
  );
}

function Components({ c }: { c: Record<string, number> }) {
  const keys = componentOrder(Object.keys(c ?? {}));
  if (!keys.length) return null;
  return (
    <div className="components">
      {keys.map((k) => {
        const v = c[k];
        const w = Math.min(1, Math.abs(v)) * 50;
        return (
          <div key={k} className="component" title={`${k} ${fmtSigned(v)}`}>
            <span className="ck">{k}</span>
            <span className="cbar">
              <span
                className={v >= 0 ? "pos" : "neg"}
                style={{ left: v >= 0 ? "50%" : `${50 - w}%`, width: `${w}%` }}
              />
            </span>
            <span className="cv">{fmtSigned(v, 2)}</span>
          </div>
        );
      })}
    </div>
  );
}

export function QosPanel(props: {
  entries: QosEntry[];
  thresholds: QosThresholds | null;
  entriesStoppedAll: boolean;
  positions: Record<string, number>;
}) {
  const t = props.thresholds;
  return (
    <Panel
      testid="panel-qos"
      title="QOS"
      extra={
        t ? (
          <span className="muted" data-testid="qos-thresholds">
            entry ≥ {t.entry_threshold} · re-arm &lt; {t.rearm_threshold} · exit decay {t.exit_decay} · floor{" "}
            {t.exit_floor}
            {props.entriesStoppedAll ? <b className="warn"> · entries stopped (all)</b> : null}
          </span>
        ) : null
      }
    >
      {props.entries.length === 0 ? (
        <Empty>no QOS scores yet</Empty>
      ) : (
        props.entries.map((q) => {
          const dir = Math.sign(props.positions[q.symbol] ?? 0);
          const exit = t ? exitLevel(q, t, dir) : null;
          return (
            <div key={q.symbol} className={`qos-row zone-${qosZone(q.score, t)}`} data-testid="qos-row" data-symbol={q.symbol}>
              <div className="qos-head">
                <span className="sym">{q.symbol}</span>
                <span className="score">{fmtSigned(q.score)}</span>
                <span className="muted">peak {fmtSigned(q.peak)}</span>
                <span className="regime">{q.regime}</span>
                {exit != null ? <span className="muted">exit at {fmtSigned(exit)}</span> : null}
                {q.entries_stopped ? <span className="badge warn">entries stopped</span> : null}
                <span className="muted right">{fmtTime(q.ts)}</span>
              </div>
              <ScoreBar score={q.score} t={t} exit={exit} />
              <Components c={q.components} />
            </div>
          );
        })
      )}
    </Panel>
  );
}
