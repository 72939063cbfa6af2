import { describe, expect, it } from "vitest";
import { driftAlerts, modelHealth } from "./components/ModelsPanel";
import { splitCause, usageFrac } from "./components/RiskPanel";
import { changedValues, errorsFor, parseDraftValue, toDraft } from "./params";
import { componentOrder, exitLevel, qosZone } from "./qos";

const T = { entry_threshold: 0.35, rearm_threshold: 0.15, exit_decay: 0.2, exit_floor: 0.05 };

describe("QOS helpers", () => {
  it("orders horizons by length, other inputs after", () => {
    expect(componentOrder(["sentiment", "60m", "5m", "1h", "30s", "1m", "external"])).toEqual([
      "30s",
      "1m",
      "5m",
      "60m",
      "1h",
      "external",
      "sentiment",
    ]);
  });

  it("places the exit level from the peak, the decay and the floor", () => {
    expect(exitLevel({ peak: 0.6 }, T, 1)).toBeCloseTo(0.4);
    expect(exitLevel({ peak: 0.2 }, T, 1)).toBeCloseTo(0.05); // the floor
    expect(exitLevel({ peak: 0.6 }, T, -1)).toBeCloseTo(-0.4);
    expect(exitLevel({ peak: 0.6 }, T, 0)).toBeNull();
  });

  it("zones a score against the thresholds", () => {
    expect(qosZone(0.4, T)).toBe("entry");
    expect(qosZone(-0.36, T)).toBe("entry");
    expect(qosZone(0.1, T)).toBe("armed");
    expect(qosZone(0.2, T)).toBe("neutral");
    expect(qosZone(0.9, null)).toBe("neutral");
  });
});

describe("parameter form logic", () => {
  const values = { n: 1.5, s: "abc", b: true, list: [1, 2], obj: { IBM: 10 } };

  it("round-trips values through the draft", () => {
    const d = toDraft(values);
    expect(d).toEqual({ n: "1.5", s: "abc", b: true, list: "[1,2]", obj: '{"IBM":10}' });
    expect(changedValues(values, d)).toEqual({});
  });

  it("sends only what changed, typed like the original", () => {
    const d = { ...toDraft(values), n: "2", b: false, obj: '{"IBM": 20}' };
    expect(changedValues(values, d)).toEqual({ n: 2, b: false, obj: { IBM: 20 } });
  });

  it("sends unparseable input raw, for the API to refuse", () => {
    expect(parseDraftValue(1, "abc")).toBe("abc");
    expect(parseDraftValue(1, " ")).toBe(" ");
    expect(parseDraftValue([1], "[1,")).toBe("[1,");
  });

  it("finds a field's errors, nested ones included", () => {
    const e = { a: "bad a", "obj.IBM": "too big", ab: "other" };
    expect(errorsFor(e, "a")).toBe("bad a");
    expect(errorsFor(e, "obj")).toBe("IBM: too big");
    expect(errorsFor(e, "zz")).toBeNull();
  });
});

describe("risk and model helpers", () => {
  it("splits a cause into its mode and reason", () => {
    expect(splitCause("DEGRADED|stale quote BAC")).toEqual({ mode: "DEGRADED", why: "stale quote BAC" });
    expect(splitCause("plain")).toEqual({ mode: "", why: "plain" });
  });

  it("measures limit usage", () => {
    expect(usageFrac({ used: 5, limit: 10 })).toBe(0.5);
    expect(usageFrac({ used: -500, limit: -1000 })).toBe(0.5);
    expect(usageFrac({ used: 5, limit: 0 })).toBe(0);
  });

  it("rates model health and finds drift alerts by horizon", () => {
    const m = { horizon: "5m", model_version: "v1", quarantined: false, last_ts: 1e12, predictions: 1 };
    expect(modelHealth(m, 1e12 + 1e9)).toBe("ok");
    expect(modelHealth(m, 1e12 + 600e9)).toBe("stale");
    expect(modelHealth({ ...m, quarantined: true }, 0)).toBe("quarantined");
    expect(modelHealth({ ...m, last_ts: 0 }, 5)).toBe("idle");
    const alerts = [
      { ts: 1, severity: "warning" as const, source: "fastlane", title: "fast-lane model 15m v2 quarantined: input drift", body: "" },
      { ts: 2, severity: "info" as const, source: "x", title: "5m something else", body: "" },
    ];
    expect(driftAlerts(alerts, "15m")).toHaveLength(1);
    expect(driftAlerts(alerts, "5m")).toHaveLength(0);
  });
});
