// The parameter form's pure logic: values -> editable strings, edited strings -> the partial
// update to PUT, and which of the API's field errors belong to which input.
import type { ParamValue } from "./api";

export type Draft = Record<string, string | boolean>;

export function toDraftValue(v: ParamValue): string | boolean {
  if (typeof v === "boolean") return v;
  if (typeof v === "number" || typeof v === "string") return String(v);
  if (v === null || v === undefined) return "";
  return JSON.stringify(v);
}

export function toDraft(values: Record<string, ParamValue>): Draft {
  const d: Draft = {};
  for (const [k, v] of Object.entries(values)) d[k] = toDraftValue(v);
  return d;
}

/**
 * Turns an edited string back into a value of its original's type. What does not parse is sent
 * as the raw string, so the API's validation answers it (and the form shows its message).
 */
export function parseDraftValue(original: ParamValue, edited: string | boolean): ParamValue {
  if (typeof edited === "boolean") return edited;
  const t = edited.trim();
  if (typeof original === "number") {
    return t !== "" && Number.isFinite(Number(t)) ? Number(t) : edited;
  }
  if (typeof original === "string") return edited;
  if (original === null && t === "") return null;
  try {
    return JSON.parse(t);
  } catch {
    return edited;
  }
}

/** The keys whose edited value differs from the loaded one, with their parsed new values. */
export function changedValues(original: Record<string, ParamValue>, draft: Draft): Record<string, ParamValue> {
  const out: Record<string, ParamValue> = {};
  for (const [k, edited] of Object.entries(draft)) {
    if (!(k in original)) continue;
    if (edited === toDraftValue(original[k])) continue;
    out[k] = parseDraftValue(original[k], edited);
  }
  return out;
}

/** The field errors that belong to one input: its own key and any nested path under it. */
export function errorsFor(errors: Record<string, string>, key: string): string | null {
  const msgs = Object.entries(errors)
    .filter(([k]) => k === key || k.startsWith(`${key}.`))
    .map(([k, m]) => (k === key ? m : `${k.slice(key.length + 1)}: ${m}`));
  return msgs.length ? msgs.join("; ") : null;
}
