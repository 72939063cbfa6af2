import { useCallback, useState } from "react";
import { ApiError, type CommandResult } from "../api";

export interface CommandOutcome {
  label: string;
  result?: CommandResult;
  error?: string;
}

/** Runs one control command at a time and keeps the last outcome (acks, silent services, error). */
export function useCommand(after?: () => void) {
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<CommandOutcome | null>(null);
  const run = useCallback(
    async (label: string, fn: () => Promise<CommandResult>) => {
      setBusy(true);
      try {
        const result = await fn();
        setOutcome({ label, result });
      } catch (e) {
        setOutcome({ label, error: e instanceof ApiError ? e.message : String(e) });
      } finally {
        setBusy(false);
        after?.();
      }
    },
    [after],
  );
  return { busy, outcome, run };
}

export function CommandOutcomeView({ outcome }: { outcome: CommandOutcome | null }) {
  if (!outcome) return null;
  if (outcome.error) {
    return (
      <div className="outcome error" data-testid="command-error">
        {outcome.label}: {outcome.error}
      </div>
    );
  }
  const r = outcome.result;
  return (
    <div className="outcome" data-testid="command-result">
      <div>
        {outcome.label} <span className="muted">{r?.command_id}</span>
      </div>
      <ul>
        {(r?.acks ?? []).map((a, i) => (
          <li key={i} className={a.accepted ? "ack ok" : "ack no"}>
            {a.accepted ? "✓" : "✗"} {a.service}: {a.summary}
          </li>
        ))}
        {(r?.silent ?? []).map((s) => (
          <li key={`silent-${s}`} className="ack silent">
            … {s}: no answer
          </li>
        ))}
      </ul>
    </div>
  );
}
