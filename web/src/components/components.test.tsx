import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import type { Book, NewsItem, Role } from "../api";
import { Dashboard } from "../Dashboard";
import { sentimentClass, sentimentColor, sentimentLabel, SENTIMENT_COLORS } from "../sentiment";
import { applyWs, initialState } from "../store";
import { apiWith, COMMAND_OK } from "../test/helpers";
import { BookPanel } from "./BookPanel";
import { ControlsPanel } from "./ControlsPanel";
import { NewsPanel } from "./NewsPanel";
import { ParamsPanel } from "./ParamsPanel";
import { PnlPanel } from "./PnlPanel";
import { PositionsPanel } from "./PositionsPanel";

const item = (id: string, label: "positive" | "negative" | "neutral" | null): NewsItem => ({
  ts: Date.UTC(2013, 9, 8, 14, 0, 0) * 1e6,
  news_id: id,
  headline: `IBM headline ${id}`,
  symbols: ["IBM"],
  source: "file",
  sentiment: label ? { label, score: 0.9, polarity: label === "negative" ? -0.7 : 0.7 } : null,
});

describe("sentiment colouring", () => {
  it("maps labels to classes and colours, neutral until scored", () => {
    expect(sentimentLabel(null)).toBe("neutral");
    expect(sentimentClass({ label: "positive", score: 1, polarity: 1 })).toBe("news-positive");
    expect(sentimentColor({ label: "negative", score: 1, polarity: -1 })).toBe(SENTIMENT_COLORS.negative);
    expect(SENTIMENT_COLORS.positive).not.toBe(SENTIMENT_COLORS.negative);
  });

  it("renders each headline with its sentiment attribute, class and colour", () => {
    render(<NewsPanel news={[item("a", "positive"), item("b", "negative"), item("c", null)]} />);
    const items = screen.getAllByTestId("news-item");
    expect(items.map((e) => e.getAttribute("data-sentiment"))).toEqual(["positive", "negative", "neutral"]);
    expect(items[0].className).toContain("news-positive");
    expect(items[1].className).toContain("news-negative");
    expect(items[2].className).toContain("news-neutral");
    const head = items[1].querySelector(".headline") as HTMLElement;
    expect(head.style.color).toBe("rgb(214, 69, 69)"); // SENTIMENT_COLORS.negative
    expect(screen.getAllByText("10:00:00")).toHaveLength(3); // 14:00 UTC in New York (EDT)
  });
});

describe("positions and P&L", () => {
  it("renders a row per position and the total", () => {
    render(
      <>
        <PositionsPanel positions={[{ symbol: "IBM", quantity: 100, avg_price: 185, mark: 186, unrealized: 100, realized: 0 }]} />
        <PnlPanel
          pnl={{ realized: 10, unrealized: 100, total: 110 }}
          equity={[
            { ts: 1, realized: 0, unrealized: 0, total: 0 },
            { ts: 2, realized: 10, unrealized: 100, total: 110 },
          ]}
        />
      </>,
    );
    expect(screen.getAllByTestId("position-row")).toHaveLength(1);
    expect(screen.getByTestId("pnl-total").textContent).toBe("+110.00");
    expect(screen.getByTestId("equity-curve")).toBeTruthy();
  });
});

function dashboardFor(role: Role) {
  const { api, calls } = apiWith((c) =>
    c.url.startsWith("/api/params/") ? { body: { section: "risk", values: { max_position: 100 }, changed_by: "", changed_at: null } } : undefined,
  );
  const state = applyWs(initialState, {
    type: "risk",
    data: {
      mode: "LIVE",
      mode_reason: "",
      operator_mode: "LIVE",
      causes: {},
      realized_pnl: 0,
      unrealized_pnl: 0,
      day_peak_pnl: 0,
      gross_exposure: 0,
      net_exposure: 0,
      open_orders: 0,
      consecutive_losses: 0,
      day_trades: 0,
      positions: {},
    },
  });
  render(
    <Dashboard api={api} me={{ name: "u", role }} token="t" onLogout={() => {}} live={false} poll={false} initial={state} />,
  );
  return { calls };
}

describe("roles", () => {
  it("shows a viewer no controls and no parameters", () => {
    dashboardFor("viewer");
    for (const id of ["panel-positions", "panel-pnl", "panel-orders", "panel-qos", "panel-risk", "panel-models", "panel-news", "panel-alerts", "panel-book"]) {
      expect(screen.getByTestId(id)).toBeTruthy();
    }
    expect(screen.queryByTestId("panel-controls")).toBeNull();
    expect(screen.queryByTestId("kill")).toBeNull();
    expect(screen.queryByTestId("panel-params")).toBeNull();
    expect(screen.queryAllByRole("button", { name: /cancel|resume|kill/i })).toHaveLength(0);
    expect(screen.getByTestId("risk-mode").textContent).toBe("LIVE");
  });

  it("shows an operator the controls and read-only parameters", async () => {
    dashboardFor("operator");
    expect(screen.getByTestId("panel-controls")).toBeTruthy();
    expect(screen.getByTestId("kill")).toBeTruthy();
    await screen.findByTestId("param-max_position");
    expect((screen.getByTestId("param-max_position") as HTMLInputElement).readOnly).toBe(true);
    expect(screen.queryByTestId("params-save")).toBeNull();
  });

  it("lets an admin edit parameters", async () => {
    dashboardFor("admin");
    expect(screen.getByTestId("kill")).toBeTruthy();
    await screen.findByTestId("params-save");
    expect((screen.getByTestId("param-max_position") as HTMLInputElement).readOnly).toBe(false);
  });
});

describe("kill confirmation", () => {
  const setup = () => {
    const ctx = apiWith(() => ({ body: COMMAND_OK }));
    const refresh = vi.fn();
    render(<ControlsPanel api={ctx.api} symbols={["IBM"]} qos={{}} entriesStoppedAll={false} refresh={refresh} />);
    return { ...ctx, refresh };
  };

  it("does not POST until the kill is confirmed", async () => {
    const { calls, refresh } = setup();
    fireEvent.click(screen.getByTestId("kill"));
    expect(calls).toHaveLength(0);
    expect(screen.getByTestId("kill-dialog")).toBeTruthy();
    fireEvent.click(screen.getByTestId("kill-confirm"));
    await waitFor(() => expect(calls).toHaveLength(1));
    expect(calls[0]).toMatchObject({ method: "POST", url: "/api/kill", body: { flatten: false } });
    await screen.findByTestId("command-result");
    expect(refresh).toHaveBeenCalled();
    expect(screen.getByTestId("kill")).toBeTruthy(); // the dialog closed
  });

  it("sends flatten when ticked, and nothing when cancelled", async () => {
    const { calls } = setup();
    fireEvent.click(screen.getByTestId("kill"));
    fireEvent.click(screen.getByTestId("kill-cancel"));
    expect(calls).toHaveLength(0);
    fireEvent.click(screen.getByTestId("kill"));
    fireEvent.click(screen.getByTestId("kill-flatten"));
    fireEvent.click(screen.getByTestId("kill-confirm"));
    await waitFor(() => expect(calls).toHaveLength(1));
    expect(calls[0].body).toEqual({ flatten: true });
  });

  it("posts resume, mode and per-symbol strategy commands", async () => {
    const { calls } = setup();
    fireEvent.click(screen.getByTestId("resume"));
    await waitFor(() => expect(calls).toHaveLength(1));
    fireEvent.change(screen.getByTestId("mode-select"), { target: { value: "OBSERVE" } });
    fireEvent.click(screen.getByTestId("mode-apply"));
    await waitFor(() => expect(calls).toHaveLength(2));
    fireEvent.click(screen.getByTestId("strategy-stop-IBM"));
    await waitFor(() => expect(calls).toHaveLength(3));
    expect(calls.map((c) => [c.url, c.body])).toEqual([
      ["/api/resume", {}],
      ["/api/mode", { mode: "OBSERVE" }],
      ["/api/strategy/stop", { symbol: "IBM" }],
    ]);
  });

  it("shows the API's refusal", async () => {
    const { api } = apiWith(() => ({ status: 403, body: { detail: "viewers cannot" } }));
    render(<ControlsPanel api={api} symbols={[]} qos={{}} entriesStoppedAll={false} />);
    fireEvent.click(screen.getByTestId("resume"));
    expect((await screen.findByTestId("command-error")).textContent).toContain("viewers cannot");
  });
});

describe("parameter editing", () => {
  it("sends only the changed keys and shows each field's error next to its input", async () => {
    const values = { max_position: 100, max_daily_loss: 500, allow_short: false, name: "x" };
    const { api, calls } = apiWith((c) => {
      if (c.method === "GET") return { body: { section: "risk", values, changed_by: "", changed_at: null } };
      return {
        status: 422,
        body: { detail: [{ loc: ["body", "values", "max_position"], msg: "Input should be greater than 0", type: "greater_than" }] },
      };
    });
    render(<ParamsPanel api={api} editable={true} />);
    const input = (await screen.findByTestId("param-max_position")) as HTMLInputElement;
    expect(input.value).toBe("100");
    fireEvent.change(input, { target: { value: "-5" } });
    fireEvent.click(screen.getByTestId("param-allow_short"));
    fireEvent.click(screen.getByTestId("params-save"));
    const err = await screen.findByTestId("param-error-max_position");
    expect(err.textContent).toBe("Input should be greater than 0");
    // next to its own input
    expect(err.parentElement?.contains(screen.getByTestId("param-max_position"))).toBe(true);
    expect(screen.queryByTestId("param-error-max_daily_loss")).toBeNull();
    const put = calls.find((c) => c.method === "PUT");
    expect(put?.url).toBe("/api/params/risk");
    expect(put?.body).toEqual({ values: { max_position: -5, allow_short: true } });
  });

  it("shows what changed after a save", async () => {
    let values: Record<string, unknown> = { entry_threshold: 0.35 };
    const { api } = apiWith((c) => {
      if (c.method === "GET") return { body: { section: "qos", values, changed_by: "", changed_at: null } };
      values = { entry_threshold: 0.4 };
      return { body: { section: "qos", values, changed: { entry_threshold: [0.35, 0.4] }, acks: [{ service: "qos", accepted: true, summary: "applied" }], silent: [] } };
    });
    render(<ParamsPanel api={api} editable={true} initialSection="qos" />);
    fireEvent.change(await screen.findByTestId("param-entry_threshold"), { target: { value: "0.4" } });
    fireEvent.click(screen.getByTestId("params-save"));
    const saved = await screen.findByTestId("params-saved");
    expect(saved.textContent).toContain("entry_threshold: 0.35 → 0.4");
    expect(saved.textContent).toContain("qos: applied");
  });

  it("says so when nothing changed", async () => {
    const { api, calls } = apiWith(() => ({ body: { section: "risk", values: { a: 1 }, changed_by: "", changed_at: null } }));
    render(<ParamsPanel api={api} editable={true} />);
    await screen.findByTestId("param-a");
    fireEvent.click(screen.getByTestId("params-save"));
    expect((await screen.findByTestId("params-message")).textContent).toBe("nothing changed");
    expect(calls.filter((c) => c.method === "PUT")).toHaveLength(0);
  });
});

describe("order book panel", () => {
  const book: Book = { symbol: "IBM", bids: [[185.0, 300], [184.99, 100]], asks: [[185.02, 200]], ts: 1, depth: true };

  it("renders the ladder and the depth chart, and the 3D view falls back without WebGL", async () => {
    render(<BookPanel symbols={["IBM"]} symbol="IBM" onSymbol={() => {}} book={book} history={[book]} show3d={true} />);
    expect(screen.getAllByTestId("ladder-bid")).toHaveLength(2);
    expect(screen.getAllByTestId("ladder-ask")).toHaveLength(1);
    expect(screen.getByTestId("depth-chart")).toBeTruthy();
    await screen.findByTestId("book-3d", {}, { timeout: 15000 });
    expect(screen.getByText(/3D view unavailable/)).toBeTruthy();
  }, 20000);

  it("says when only the top of the book is known", () => {
    render(<BookPanel symbols={["IBM"]} symbol="IBM" onSymbol={() => {}} book={{ ...book, depth: false }} history={[]} show3d={false} />);
    expect(screen.getByTestId("book-top-only")).toBeTruthy();
  });
});
