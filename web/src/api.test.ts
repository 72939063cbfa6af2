import { describe, expect, it } from "vitest";
import { ApiError, GENERAL, canControl, canEditParams, fieldErrors, wsUrl } from "./api";
import { apiWith, COMMAND_OK } from "./test/helpers";

describe("api client", () => {
  it("sends the bearer token on every request", async () => {
    const { api, calls } = apiWith(() => ({ body: { name: "ann", role: "viewer" } }), "s3cret");
    const me = await api.whoami();
    expect(me).toEqual({ name: "ann", role: "viewer" });
    await api.status();
    expect(calls.map((c) => c.url)).toEqual(["/api/whoami", "/api/status"]);
    for (const c of calls) expect(c.headers.Authorization).toBe("Bearer s3cret");
  });

  it("calls onUnauthorized and throws on 401", async () => {
    const { api, onUnauthorized } = apiWith(() => ({ status: 401, body: { detail: "bad token" } }));
    const err = await api.positions().catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(401);
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
  });

  it("calls onRateLimited on 429 and says so", async () => {
    const { api, onRateLimited, onUnauthorized } = apiWith(() => ({ status: 429, body: { detail: "slow down" } }));
    const err = await api.orders().catch((e) => e);
    expect(err.status).toBe(429);
    expect(err.message).toBe("rate limited");
    expect(onRateLimited).toHaveBeenCalledTimes(1);
    expect(onUnauthorized).not.toHaveBeenCalled();
  });

  it("maps a 422 detail to field errors", async () => {
    const detail = [
      { loc: ["values", "max_position"], msg: "must be > 0", type: "value_error" },
      { loc: ["body", "values", "entry_threshold"], msg: "not a number", type: "type_error" },
      { loc: ["values", "limits", "IBM"], msg: "too big", type: "value_error" },
      { loc: ["body"], msg: "bad body", type: "value_error" },
    ];
    const { api, calls } = apiWith(() => ({ status: 422, body: { detail } }));
    const err = await api.putParams("risk", { max_position: -1 }).catch((e) => e);
    expect(calls[0].method).toBe("PUT");
    expect(calls[0].url).toBe("/api/params/risk");
    expect(calls[0].body).toEqual({ values: { max_position: -1 } });
    expect(err).toBeInstanceOf(ApiError);
    expect(err.fieldErrors).toEqual({
      max_position: "must be > 0",
      entry_threshold: "not a number",
      "limits.IBM": "too big",
      [GENERAL]: "bad body",
    });
  });

  it("fieldErrors takes a string detail as a general error and joins repeats", () => {
    expect(fieldErrors("nope")).toEqual({ [GENERAL]: "nope" });
    expect(
      fieldErrors([
        { loc: ["values", "a"], msg: "one", type: "x" },
        { loc: ["values", "a"], msg: "two", type: "x" },
      ]),
    ).toEqual({ a: "one; two" });
    expect(fieldErrors(undefined)).toEqual({});
  });

  it("posts the control commands with the contract's bodies", async () => {
    const { api, calls } = apiWith(() => ({ body: COMMAND_OK }));
    const r = await api.kill(true);
    expect(r.command_id).toBe("c-1");
    await api.resume();
    await api.setMode("OBSERVE");
    await api.flatten();
    await api.strategyStop("IBM");
    await api.strategyStart(null);
    await api.cancelOrder("abc/1");
    await api.replaceOrder("abc", { limit_price: 10.5 });
    expect(calls.map((c) => [c.method, c.url, c.body])).toEqual([
      ["POST", "/api/kill", { flatten: true }],
      ["POST", "/api/resume", {}],
      ["POST", "/api/mode", { mode: "OBSERVE" }],
      ["POST", "/api/flatten", {}],
      ["POST", "/api/strategy/stop", { symbol: "IBM" }],
      ["POST", "/api/strategy/start", { symbol: null }],
      ["POST", "/api/orders/abc%2F1/cancel", {}],
      ["POST", "/api/orders/abc/replace", { limit_price: 10.5 }],
    ]);
    expect(calls[0].headers["Content-Type"]).toBe("application/json");
  });

  it("throws the 403 detail for a viewer's command", async () => {
    const { api } = apiWith(() => ({ status: 403, body: { detail: "viewer may not kill" } }));
    const err = await api.kill(false).catch((e) => e);
    expect(err.status).toBe(403);
    expect(err.message).toContain("viewer may not kill");
  });

  it("builds the book and audit queries", async () => {
    const { api, calls } = apiWith(() => ({ body: {} }));
    await api.book("BRK B");
    await api.bookSymbols();
    await api.audit();
    expect(calls.map((c) => c.url)).toEqual(["/api/book?symbol=BRK%20B", "/api/book", "/api/audit?since=-2h"]);
  });

  it("builds the WebSocket address on the page's origin", () => {
    expect(wsUrl("a b", { protocol: "http:", host: "h:8600" })).toBe("ws://h:8600/api/ws?token=a%20b");
    expect(wsUrl("t", { protocol: "https:", host: "x" })).toBe("wss://x/api/ws?token=t");
  });

  it("gives controls to operators and admins, params editing to admins", () => {
    expect(canControl("viewer")).toBe(false);
    expect(canControl("operator")).toBe(true);
    expect(canControl("admin")).toBe(true);
    expect(canEditParams("operator")).toBe(false);
    expect(canEditParams("admin")).toBe(true);
  });
});
