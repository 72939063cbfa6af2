import { vi } from "vitest";
import { createApi } from "../api";

export interface Call {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: unknown;
}

type Responder = (call: Call) => { status?: number; body?: unknown } | undefined;

/** A fetch double: records each call and answers from `respond` (200 {} by default). */
export function fakeFetch(respond: Responder = () => undefined) {
  const calls: Call[] = [];
  const fn = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const call: Call = {
      method: init?.method ?? "GET",
      url: String(input),
      headers: (init?.headers ?? {}) as Record<string, string>,
      body: init?.body ? JSON.parse(String(init.body)) : undefined,
    };
    calls.push(call);
    const r = respond(call) ?? {};
    const status = r.status ?? 200;
    const body = r.body === undefined ? {} : r.body;
    return new Response(JSON.stringify(body), {
      status,
      headers: { "Content-Type": "application/json" },
    });
  });
  return { fetch: fn as unknown as typeof fetch, calls };
}

export const COMMAND_OK = { command_id: "c-1", acks: [{ service: "risk", accepted: true, summary: "ok" }], silent: [] };

export function apiWith(respond: Responder = () => undefined, token = "tok") {
  const f = fakeFetch(respond);
  const onUnauthorized = vi.fn();
  const onRateLimited = vi.fn();
  const api = createApi({ getToken: () => token, fetchImpl: f.fetch, onUnauthorized, onRateLimited });
  return { api, calls: f.calls, onUnauthorized, onRateLimited, fetch: f.fetch };
}
