// Formatting: every timestamp from the API is integer nanoseconds since the epoch (UTC), shown in
// New York time.

const NY_TIME = new Intl.DateTimeFormat("en-US", {
  timeZone: "America/New_York",
  hourCycle: "h23",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

const NY_DATE = new Intl.DateTimeFormat("en-CA", {
  timeZone: "America/New_York",
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
});

export function nsToMs(ns: number): number {
  return Math.floor(ns / 1e6);
}

/** HH:MM:SS in America/New_York; "—" for a missing or zero time. */
export function fmtTime(ns: number | null | undefined): string {
  if (ns == null || !Number.isFinite(ns) || ns <= 0) return "—";
  return NY_TIME.format(new Date(nsToMs(ns)));
}

/** YYYY-MM-DD in America/New_York. */
export function fmtDate(ns: number | null | undefined): string {
  if (ns == null || !Number.isFinite(ns) || ns <= 0) return "—";
  return NY_DATE.format(new Date(nsToMs(ns)));
}

export function fmtNum(x: number | null | undefined, digits = 2): string {
  if (x == null || !Number.isFinite(x)) return "—";
  return x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function fmtInt(x: number | null | undefined): string {
  if (x == null || !Number.isFinite(x)) return "—";
  return Math.round(x).toLocaleString("en-US");
}

/** Money with an explicit sign: +1,234.50 / -12.00. */
export function fmtPnl(x: number | null | undefined): string {
  if (x == null || !Number.isFinite(x)) return "—";
  const s = fmtNum(Math.abs(x), 2);
  return x > 0 ? `+${s}` : x < 0 ? `-${s}` : s;
}

export function pnlClass(x: number | null | undefined): string {
  if (x == null || !Number.isFinite(x) || x === 0) return "flat";
  return x > 0 ? "up" : "down";
}

export function fmtSigned(x: number | null | undefined, digits = 3): string {
  if (x == null || !Number.isFinite(x)) return "—";
  const s = Math.abs(x).toFixed(digits);
  return x > 0 ? `+${s}` : x < 0 ? `-${s}` : s;
}
