import type { QosEntry, QosThresholds } from "./api";

/** Horizon keys ("1m", "5m", "30s", "1h") in time order, then the other inputs (sentiment, ...). */
export function componentOrder(keys: string[]): string[] {
  const secs = (k: string): number | null => {
    const m = /^(\d+(?:\.\d+)?)(s|m|h|d)$/.exec(k);
    if (!m) return null;
    return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as "s" | "m" | "h" | "d"];
  };
  return [...keys].sort((a, b) => {
    const sa = secs(a);
    const sb = secs(b);
    if (sa != null && sb != null) return sa - sb;
    if (sa != null) return -1;
    if (sb != null) return 1;
    return a.localeCompare(b);
  });
}

/**
 * Where QOS would exit a position held in `direction` (+1 long, -1 short), as a score: the
 * aligned score exits once it decays more than exit_decay from the peak or falls under
 * exit_floor, so the exit level is direction * max(peak - exit_decay, exit_floor). Null when flat.
 */
export function exitLevel(q: Pick<QosEntry, "peak">, t: QosThresholds, direction: number): number | null {
  if (!direction) return null;
  const aligned = Math.max(q.peak - t.exit_decay, t.exit_floor);
  return Math.sign(direction) * aligned;
}

/** The state a symbol's score is in relative to the thresholds (for colouring). */
export function qosZone(score: number, t: QosThresholds | null): "entry" | "armed" | "neutral" {
  if (!t) return "neutral";
  if (Math.abs(score) >= t.entry_threshold) return "entry";
  if (Math.abs(score) < t.rearm_threshold) return "armed";
  return "neutral";
}
