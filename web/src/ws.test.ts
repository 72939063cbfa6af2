import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { backoffDelay, LiveFeed } from "./ws";

class FakeSocket {
  static all: FakeSocket[] = [];
  onopen: (() => void) | null = null;
  onclose: ((ev: { code: number }) => void) | null = null;
  onerror: (() => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  closed = false;
  constructor(public url: string) {
    FakeSocket.all.push(this);
  }
  close() {
    this.closed = true;
  }
}

describe("live feed", () => {
  beforeEach(() => {
    FakeSocket.all = [];
    vi.useFakeTimers();
  });
  afterEach(() => vi.useRealTimers());

  const make = () => {
    const onMessage = vi.fn();
    const onState = vi.fn();
    const onAuthClose = vi.fn();
    const feed = new LiveFeed({
      url: () => "ws://h/api/ws?token=t",
      onMessage,
      onState,
      onAuthClose,
      makeSocket: (u) => new FakeSocket(u) as unknown as WebSocket,
      minDelayMs: 100,
      maxDelayMs: 1000,
    });
    return { feed, onMessage, onState, onAuthClose };
  };

  it("dispatches parsed frames and reconnects with backoff after a close", () => {
    const { feed, onMessage, onState } = make();
    feed.start();
    expect(FakeSocket.all).toHaveLength(1);
    const ws = FakeSocket.all[0];
    expect(ws.url).toBe("ws://h/api/ws?token=t");
    ws.onopen!();
    expect(onState).toHaveBeenLastCalledWith(true);
    ws.onmessage!({ data: '{"type":"risk","data":{"mode":"EMERGENCY"}}' });
    ws.onmessage!({ data: "garbage" });
    expect(onMessage).toHaveBeenCalledTimes(1);
    expect(onMessage.mock.calls[0][0]).toEqual({ type: "risk", data: { mode: "EMERGENCY" } });
    ws.onclose!({ code: 1006 });
    expect(onState).toHaveBeenLastCalledWith(false);
    expect(FakeSocket.all).toHaveLength(1);
    vi.advanceTimersByTime(200);
    expect(FakeSocket.all).toHaveLength(2);
    // a second failure waits longer
    FakeSocket.all[1].onclose!({ code: 1006 });
    vi.advanceTimersByTime(120);
    expect(FakeSocket.all).toHaveLength(2);
    vi.advanceTimersByTime(200);
    expect(FakeSocket.all).toHaveLength(3);
    feed.stop();
    expect(FakeSocket.all[2].closed).toBe(true);
    vi.advanceTimersByTime(10000);
    expect(FakeSocket.all).toHaveLength(3);
  });

  it("stops on an auth close", () => {
    const { feed, onAuthClose } = make();
    feed.start();
    FakeSocket.all[0].onclose!({ code: 4401 });
    expect(onAuthClose).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(10000);
    expect(FakeSocket.all).toHaveLength(1);
  });

  it("backs off exponentially up to the cap", () => {
    const mid = () => 0.5;
    expect(backoffDelay(0, 500, 15000, mid)).toBe(500);
    expect(backoffDelay(1, 500, 15000, mid)).toBe(1000);
    expect(backoffDelay(10, 500, 15000, mid)).toBe(15000);
  });
});
