// Typed client for the control service's REST API (services/control). Every request carries
// `Authorization: Bearer <token>`; a 401 calls onUnauthorized (the app goes back to the login
// screen), a 429 calls onRateLimited; any non-2xx throws ApiError, whose fieldErrors maps a 422's
// FastAPI-style detail to {field: message}.

export type Role = "viewer" | "operator" | "admin";
export type Mode = "LIVE" | "DEGRADED" | "OBSERVE" | "EMERGENCY";
export type OperatorMode = Exclude<Mode, "EMERGENCY">;
export type Side = "BUY" | "SELL";
export type SentimentLabel = "positive" | "negative" | "neutral";
export type Severity = "info" | "warning" | "critical";
export type ParamSection = "risk" | "qos" | "exits";
export const PARAM_SECTIONS: readonly ParamSection[] = ["risk", "qos", "exits"];

export interface WhoAmI {
  name: string;
  role: Role;
}

export interface ServiceHealth {
  service: string;
  replica: string;
  heartbeat_age_s: number;
  absent: boolean;
}

export interface RiskState {
  mode: Mode;
  mode_reason: string;
  operator_mode: string;
  causes: Record<string, string>;
  realized_pnl: number;
  unrealized_pnl: number;
  day_peak_pnl: number;
  gross_exposure: number;
  net_exposure: number;
  open_orders: number;
  consecutive_losses: number;
  day_trades: number;
  positions: Record<string, number>;
}

export interface LimitUsage {
  used: number;
  limit: number;
}

export interface Status {
  services: ServiceHealth[];
  risk: RiskState | null;
  limits: Record<string, LimitUsage>;
  feeds: Record<string, string>;
  broker: { state: string; detail: string } | null;
  denials: Record<string, number>;
  market_ns: number;
}

export interface Position {
  symbol: string;
  quantity: number;
  avg_price: number;
  mark: number;
  unrealized: number;
  realized: number;
}

export interface PositionsResponse {
  positions: Position[];
  ts: number;
}

export interface Fill {
  exec_id: string;
  quantity: number;
  price: number;
  ts: number;
  commission: number;
}

/** A fill as the WebSocket pushes it (and as the dashboard's fill tape keeps it). */
export interface FillEvent extends Fill {
  client_order_id: string;
  symbol: string;
  side: Side;
}

export interface Order {
  client_order_id: string;
  symbol: string;
  side: Side;
  quantity: number;
  filled: number;
  avg_fill_price: number;
  status: string;
  order_type: string;
  limit_price: number | null;
  reason: string;
  ts: number;
  fills: Fill[];
}

export interface OrdersResponse {
  open: Order[];
  today: Order[];
}

export interface PnlPoint {
  ts: number;
  realized: number;
  unrealized: number;
  total: number;
}

export interface PnlResponse {
  realized: number;
  unrealized: number;
  total: number;
  equity: PnlPoint[];
}

export interface QosEntry {
  symbol: string;
  score: number;
  peak: number;
  regime: string;
  components: Record<string, number>;
  ts: number;
  entries_stopped: boolean;
}

export interface QosThresholds {
  entry_threshold: number;
  rearm_threshold: number;
  exit_decay: number;
  exit_floor: number;
}

export interface QosResponse {
  symbols: QosEntry[];
  thresholds: QosThresholds;
  entries_stopped_all: boolean;
}

export interface ModelInfo {
  horizon: string;
  model_version: string;
  quarantined: boolean;
  last_ts: number;
  predictions: number;
  // Not in the contract; shown when the control service adds them.
  drift?: number | null;
  max_psi?: number | null;
}

export interface ModelsResponse {
  models: ModelInfo[];
}

export interface Intent {
  intent_id: string;
  symbol: string;
  side: string;
  quantity: number;
  reason: string;
  ts: number;
  decision: "approved" | "denied" | "";
  denial: string;
}

export interface SignalsResponse {
  predictions: Record<string, unknown>[];
  external: Record<string, unknown>[];
  intents: Intent[];
}

export interface Alert {
  ts: number;
  severity: Severity;
  source: string;
  title: string;
  body: string;
}

export interface Sentiment {
  label: SentimentLabel;
  score: number;
  polarity: number;
}

export interface NewsItem {
  ts: number;
  news_id: string;
  headline: string;
  symbols: string[];
  source: string;
  sentiment: Sentiment | null;
}

export type Level = [number, number];

export interface Book {
  symbol: string;
  bids: Level[];
  asks: Level[];
  ts: number;
  depth: boolean;
}

export interface AuditRow {
  ts: string;
  kind: string;
  who: string;
  what: string;
}

export interface Ack {
  service: string;
  accepted: boolean;
  summary: string;
}

export interface CommandResult {
  command_id: string;
  acks: Ack[];
  silent: string[];
}

export type ParamValue = unknown;

export interface ParamsResponse {
  section: string;
  values: Record<string, ParamValue>;
  changed_by: string;
  changed_at: number | null;
}

export interface ParamsUpdateResponse {
  section: string;
  values: Record<string, ParamValue>;
  changed: Record<string, [ParamValue, ParamValue]>;
  acks: Ack[];
  silent: string[];
}

export interface ValidationIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
}

/** The key fieldErrors uses for an error that names no field. */
export const GENERAL = "_";

/**
 * Maps a 422 body's `detail` to {field: message}. A FastAPI body error's loc is
 * ["body", "values", "key"]; the contract's is ["values", "key"]; both give "key". Errors that
 * name no field (or a string detail) go under GENERAL. Several messages for one field are joined.
 */
export function fieldErrors(detail: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  const add = (key: string, msg: string) => {
    out[key] = out[key] ? `${out[key]}; ${msg}` : msg;
  };
  if (typeof detail === "string") {
    add(GENERAL, detail);
    return out;
  }
  if (!Array.isArray(detail)) {
    if (detail != null) add(GENERAL, JSON.stringify(detail));
    return out;
  }
  for (const raw of detail) {
    const issue = raw as Partial<ValidationIssue>;
    const msg = typeof issue?.msg === "string" ? issue.msg : JSON.stringify(raw);
    let loc = Array.isArray(issue?.loc) ? issue.loc.map(String) : [];
    if (loc[0] === "body") loc = loc.slice(1);
    if (loc[0] === "values") loc = loc.slice(1);
    add(loc.length ? loc.join(".") : GENERAL, msg);
  }
  return out;
}

export class ApiError extends Error {
  readonly status: number;
  readonly detail: unknown;
  readonly fieldErrors: Record<string, string>;

  constructor(status: number, detail: unknown, message?: string) {
    super(message ?? ApiError.describe(status, detail));
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.fieldErrors = status === 422 ? fieldErrors(detail) : {};
  }

  static describe(status: number, detail: unknown): string {
    if (status === 429) return "rate limited";
    if (typeof detail === "string" && detail) return `${status}: ${detail}`;
    if (status === 401) return "401: not authenticated";
    if (status === 403) return "403: not allowed";
    if (status === 422) return "422: invalid values";
    return `HTTP ${status}`;
  }
}

export interface ApiOptions {
  getToken: () => string | null;
  onUnauthorized?: () => void;
  onRateLimited?: () => void;
  baseUrl?: string;
  fetchImpl?: typeof fetch;
}

export type Api = ReturnType<typeof createApi>;

export function createApi(opts: ApiOptions) {
  const base = opts.baseUrl ?? "";
  const doFetch: typeof fetch = opts.fetchImpl ?? ((input, init) => fetch(input, init));

  async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: "application/json" };
    const token = opts.getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await doFetch(base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let data: unknown = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    if (!res.ok) {
      if (res.status === 401) opts.onUnauthorized?.();
      if (res.status === 429) opts.onRateLimited?.();
      const detail =
        data && typeof data === "object" && "detail" in data
          ? (data as { detail: unknown }).detail
          : data;
      throw new ApiError(res.status, detail);
    }
    return data as T;
  }

  const get = <T>(path: string) => request<T>("GET", path);
  const post = <T = CommandResult>(path: string, body: unknown = {}) =>
    request<T>("POST", path, body);
  const enc = encodeURIComponent;

  return {
    request,
    whoami: () => get<WhoAmI>("/api/whoami"),
    status: () => get<Status>("/api/status"),
    positions: () => get<PositionsResponse>("/api/positions"),
    orders: () => get<OrdersResponse>("/api/orders"),
    pnl: () => get<PnlResponse>("/api/pnl"),
    qos: () => get<QosResponse>("/api/qos"),
    models: () => get<ModelsResponse>("/api/models"),
    signals: () => get<SignalsResponse>("/api/signals"),
    alerts: () => get<{ alerts: Alert[] }>("/api/alerts"),
    news: () => get<{ news: NewsItem[] }>("/api/news"),
    book: (symbol: string) => get<Book>(`/api/book?symbol=${enc(symbol)}`),
    bookSymbols: () => get<{ symbols: string[] }>("/api/book"),
    tca: () => get<{ reports: unknown[]; aggregates: Record<string, unknown> }>("/api/tca"),
    audit: (since = "-2h") => get<{ rows: AuditRow[] }>(`/api/audit?since=${enc(since)}`),
    kill: (flatten: boolean) => post("/api/kill", { flatten }),
    resume: () => post("/api/resume", {}),
    setMode: (mode: OperatorMode) => post("/api/mode", { mode }),
    flatten: () => post("/api/flatten", {}),
    strategyStop: (symbol: string | null) => post("/api/strategy/stop", { symbol }),
    strategyStart: (symbol: string | null) => post("/api/strategy/start", { symbol }),
    cancelOrder: (id: string) => post(`/api/orders/${enc(id)}/cancel`, {}),
    replaceOrder: (id: string, change: { quantity?: number; limit_price?: number }) =>
      post(`/api/orders/${enc(id)}/replace`, change),
    getParams: (section: ParamSection) => get<ParamsResponse>(`/api/params/${section}`),
    putParams: (section: ParamSection, values: Record<string, ParamValue>) =>
      request<ParamsUpdateResponse>("PUT", `/api/params/${section}`, { values }),
  };
}

/** The WebSocket address on the page's own origin (ws: or wss: as the page is http: or https:). */
export function wsUrl(token: string, loc: { protocol: string; host: string } = window.location): string {
  const proto = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${loc.host}/api/ws?token=${encodeURIComponent(token)}`;
}

export const TOKEN_KEY = "tradefleet.token";

export function loadToken(): string | null {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function saveToken(token: string | null): void {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage unavailable: the session lasts as long as the page */
  }
}

export function canControl(role: Role | undefined): boolean {
  return role === "operator" || role === "admin";
}

export function canEditParams(role: Role | undefined): boolean {
  return role === "admin";
}
