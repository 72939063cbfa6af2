// The live feed: one WebSocket to /api/ws?token=..., reconnected with capped exponential backoff
// (and jitter) whenever it closes, until stop().
import { parseWsFrame, type WsMessage } from "./store";

export interface LiveFeedOptions {
  url: () => string;
  onMessage: (msg: WsMessage) => void;
  onState?: (connected: boolean) => void;
  /** the server closed with 4401/1008 (a bad token): the app logs out */
  onAuthClose?: () => void;
  makeSocket?: (url: string) => WebSocket;
  minDelayMs?: number;
  maxDelayMs?: number;
}

export function backoffDelay(attempt: number, minMs = 500, maxMs = 15000, rand = Math.random): number {
  const base = Math.min(maxMs, minMs * 2 ** Math.max(0, attempt));
  return Math.round(base * (0.75 + 0.5 * rand()));
}

export class LiveFeed {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(private readonly opts: LiveFeedOptions) {}

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
      try {
        ws.close();
      } catch {
        /* already closed */
      }
    }
    this.opts.onState?.(false);
  }

  private connect(): void {
    if (this.stopped) return;
    let ws: WebSocket;
    try {
      ws = (this.opts.makeSocket ?? ((u: string) => new WebSocket(u)))(this.opts.url());
    } catch {
      this.schedule();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.opts.onState?.(true);
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data !== "string") return;
      const msg = parseWsFrame(ev.data);
      if (msg) this.opts.onMessage(msg);
    };
    ws.onerror = () => {
      /* onclose follows */
    };
    ws.onclose = (ev: CloseEvent) => {
      this.ws = null;
      this.opts.onState?.(false);
      if (ev.code === 4401 || ev.code === 1008) {
        this.opts.onAuthClose?.();
        return;
      }
      this.schedule();
    };
  }

  private schedule(): void {
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt++, this.opts.minDelayMs, this.opts.maxDelayMs);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
