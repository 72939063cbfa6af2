import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { TOKEN_KEY } from "./api";
import { App } from "./App";
import { fakeFetch, type Call } from "./test/helpers";

class NoSocket {
  onopen = null;
  onclose = null;
  onerror = null;
  onmessage = null;
  close() {}
}

function mountWith(respond: (c: Call) => { status?: number; body?: unknown } | undefined) {
  const f = fakeFetch(respond);
  vi.stubGlobal("fetch", f.fetch);
  render(<App />);
  return f.calls;
}

const snapshots = (c: Call) => {
  if (c.url === "/api/whoami") {
    return c.headers.Authorization === "Bearer good" ? { body: { name: "ops", role: "operator" } } : { status: 401, body: { detail: "bad" } };
  }
  if (c.url === "/api/positions") {
    return { body: { positions: [{ symbol: "IBM", quantity: 100, avg_price: 185, mark: 186, unrealized: 100, realized: 0 }], ts: 1 } };
  }
  if (c.url === "/api/pnl") return { body: { realized: 0, unrealized: 100, total: 100, equity: [] } };
  return undefined;
};

describe("login", () => {
  beforeEach(() => vi.stubGlobal("WebSocket", NoSocket));
  afterEach(() => vi.unstubAllGlobals());

  it("refuses a bad token", async () => {
    const calls = mountWith(snapshots);
    fireEvent.change(screen.getByTestId("token"), { target: { value: "bad" } });
    fireEvent.click(screen.getByTestId("login"));
    expect((await screen.findByTestId("login-error")).textContent).toBe("invalid token");
    expect(calls[0].headers.Authorization).toBe("Bearer bad");
    expect(localStorage.getItem(TOKEN_KEY)).toBeNull();
  });

  it("logs in with a good token, keeps it, and shows the dashboard", async () => {
    mountWith(snapshots);
    fireEvent.change(screen.getByTestId("token"), { target: { value: "good" } });
    fireEvent.click(screen.getByTestId("login"));
    await screen.findByTestId("panel-positions");
    expect(localStorage.getItem(TOKEN_KEY)).toBe("good");
    expect(screen.getByTestId("whoami").textContent).toContain("ops");
    await waitFor(() => expect(screen.getAllByTestId("position-row")).toHaveLength(1));
    expect(screen.getByTestId("pnl-total").textContent).toBe("+100.00");
    expect(screen.getByTestId("kill")).toBeTruthy();
    fireEvent.click(screen.getByTestId("logout"));
    expect(screen.getByTestId("token")).toBeTruthy();
    expect(localStorage.getItem(TOKEN_KEY)).toBeNull();
  });

  it("goes back to the login screen on a 401 anywhere", async () => {
    localStorage.setItem(TOKEN_KEY, "good");
    mountWith((c) => (c.url === "/api/whoami" ? snapshots(c) : { status: 401, body: { detail: "revoked" } }));
    await screen.findByTestId("token");
    expect(localStorage.getItem(TOKEN_KEY)).toBeNull();
    expect(screen.getByTestId("login-error").textContent).toMatch(/log in again/);
  });

  it("says 'rate limited' on a 429", async () => {
    localStorage.setItem(TOKEN_KEY, "good");
    mountWith((c) => (c.url === "/api/whoami" ? snapshots(c) : c.url === "/api/status" ? { status: 429, body: { detail: "slow" } } : undefined));
    expect((await screen.findByTestId("rate-limited")).textContent).toBe("rate limited");
    expect(screen.getByTestId("panel-risk")).toBeTruthy();
  });
});
