import { useState } from "react";
import type { Api, OperatorMode, QosEntry } from "../api";
import { CommandOutcomeView, useCommand } from "./command";
import { Panel } from "./Panel";

const MODES: OperatorMode[] = ["LIVE", "DEGRADED", "OBSERVE"];

export function ControlsPanel(props: {
  api: Api;
  symbols: string[];
  qos: Record<string, QosEntry>;
  entriesStoppedAll: boolean;
  operatorMode?: string;
  refresh?: () => void;
}) {
  const { api } = props;
  const cmd = useCommand(props.refresh);
  const [confirmKill, setConfirmKill] = useState(false);
  const [flattenOnKill, setFlattenOnKill] = useState(false);
  const [confirmFlatten, setConfirmFlatten] = useState(false);
  const [mode, setMode] = useState<OperatorMode>(
    MODES.includes(props.operatorMode as OperatorMode) ? (props.operatorMode as OperatorMode) : "LIVE",
  );

  return (
    <Panel testid="panel-controls" title="Controls">
      <div className="controls-row">
        {!confirmKill ? (
          <button className="danger big" data-testid="kill" disabled={cmd.busy} onClick={() => setConfirmKill(true)}>
            KILL
          </button>
        ) : (
          <div className="confirm" role="alertdialog" aria-label="confirm kill" data-testid="kill-dialog">
            <div>
              <b>Kill switch:</b> deny every new intent, cancel open orders, enter EMERGENCY.
            </div>
            <label>
              <input
                type="checkbox"
                data-testid="kill-flatten"
                checked={flattenOnKill}
                onChange={(e) => setFlattenOnKill(e.target.checked)}
              />{" "}
              also flatten every position
            </label>
            <div className="confirm-buttons">
              <button
                className="danger"
                data-testid="kill-confirm"
                disabled={cmd.busy}
                onClick={() => {
                  setConfirmKill(false);
                  void cmd.run(flattenOnKill ? "kill + flatten" : "kill", () => api.kill(flattenOnKill));
                }}
              >
                Confirm kill
              </button>
              <button data-testid="kill-cancel" onClick={() => setConfirmKill(false)}>
                Cancel
              </button>
            </div>
          </div>
        )}
        <button data-testid="resume" disabled={cmd.busy} onClick={() => void cmd.run("resume", () => api.resume())}>
          Resume
        </button>
        <span className="mode-set">
          <select data-testid="mode-select" value={mode} onChange={(e) => setMode(e.target.value as OperatorMode)}>
            {MODES.map((m) => (
              <option key={m} value={m}>
                {m}
              </option>
            ))}
          </select>
          <button data-testid="mode-apply" disabled={cmd.busy} onClick={() => void cmd.run(`mode ${mode}`, () => api.setMode(mode))}>
            Set mode
          </button>
        </span>
        {!confirmFlatten ? (
          <button className="warn" data-testid="flatten" disabled={cmd.busy} onClick={() => setConfirmFlatten(true)}>
            Flatten…
          </button>
        ) : (
          <span className="confirm inline">
            flatten every position?{" "}
            <button
              className="warn"
              data-testid="flatten-confirm"
              onClick={() => {
                setConfirmFlatten(false);
                void cmd.run("flatten", () => api.flatten());
              }}
            >
              Confirm
            </button>
            <button onClick={() => setConfirmFlatten(false)}>Cancel</button>
          </span>
        )}
      </div>
      <h3>strategy</h3>
      <table className="grid compact" data-testid="strategy-table">
        <tbody>
          <tr data-testid="strategy-row" data-symbol="*">
            <td className="sym">all symbols</td>
            <td>{props.entriesStoppedAll ? <span className="badge warn">stopped</span> : <span className="badge ok">running</span>}</td>
            <td className="actions">
              <button onClick={() => void cmd.run("start all", () => api.strategyStart(null))}>start</button>
              <button onClick={() => void cmd.run("stop all", () => api.strategyStop(null))}>stop</button>
            </td>
          </tr>
          {props.symbols.map((s) => {
            const stopped = props.qos[s]?.entries_stopped;
            return (
              <tr key={s} data-testid="strategy-row" data-symbol={s}>
                <td className="sym">{s}</td>
                <td>{stopped ? <span className="badge warn">stopped</span> : <span className="badge ok">running</span>}</td>
                <td className="actions">
                  <button data-testid={`strategy-start-${s}`} onClick={() => void cmd.run(`start ${s}`, () => api.strategyStart(s))}>
                    start
                  </button>
                  <button data-testid={`strategy-stop-${s}`} onClick={() => void cmd.run(`stop ${s}`, () => api.strategyStop(s))}>
                    stop
                  </button>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <CommandOutcomeView outcome={cmd.outcome} />
    </Panel>
  );
}
