import { describe, expect, it } from "vitest";
import { fmtDate, fmtPnl, fmtTime, pnlClass } from "./format";

describe("formatting", () => {
  it("shows nanosecond times in New York time", () => {
    // 2013-10-08 13:30:00 UTC = 09:30:00 EDT
    const ns = Date.UTC(2013, 9, 8, 13, 30, 0) * 1e6;
    expect(fmtTime(ns)).toBe("09:30:00");
    expect(fmtDate(ns)).toBe("2013-10-08");
    // winter: 2014-01-15 21:00:05 UTC = 16:00:05 EST
    expect(fmtTime(Date.UTC(2014, 0, 15, 21, 0, 5) * 1e6)).toBe("16:00:05");
    // midnight is 00, not 24
    expect(fmtTime(Date.UTC(2013, 9, 8, 4, 0, 0) * 1e6)).toBe("00:00:00");
    expect(fmtTime(0)).toBe("—");
    expect(fmtTime(null)).toBe("—");
  });

  it("signs P&L", () => {
    expect(fmtPnl(1234.5)).toBe("+1,234.50");
    expect(fmtPnl(-12)).toBe("-12.00");
    expect(fmtPnl(0)).toBe("0.00");
    expect(pnlClass(3)).toBe("up");
    expect(pnlClass(-3)).toBe("down");
    expect(pnlClass(0)).toBe("flat");
  });
});
