// Unit tests of the accept loop (src/accept_loop.ts) with a fake listener
// and fake timers: no sockets, no waiting on real time.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ACCEPT_SKIPS_PER_TURN, AcceptLoop, type AcceptTimers } from "../src/accept_loop.ts";
import type { Connection, Listener } from "../src/transport.ts";

/** Timers that fire only when the test says so, recording each delay. */
class FakeTimers implements AcceptTimers {
  readonly delays: number[] = [];
  #pending: Array<() => void> = [];
  setTimeout(callback: () => void, delayMs: number): unknown {
    this.delays.push(delayMs);
    this.#pending.push(callback);
    return undefined;
  }
  get pending(): number {
    return this.#pending.length;
  }
  fire(): void {
    const callbacks = this.#pending.splice(0);
    for (const callback of callbacks) callback();
  }
}

/** A listener whose accept() fails with the codes queued, then hands out connections. */
function failingListener(codes: string[]): Listener & { calls: number } {
  const listener = {
    localAddress: { hostname: "127.0.0.1", port: 1 },
    refused: 0,
    waiting: 0,
    calls: 0,
    accept(): Promise<Connection | null> {
      listener.calls++;
      const code = codes.shift();
      if (code === undefined) return Promise.resolve({ close() {} } as unknown as Connection);
      return Promise.reject(Object.assign(new Error(`accept ${code}`), { code }));
    },
    close: () => Promise.resolve(),
  };
  return listener;
}

/** A loop over `listener` that takes one connection and reports failures, on fake timers. */
function loopOver(listener: Listener): {
  loop: AcceptLoop;
  timers: FakeTimers;
  reported: unknown[];
  accepted: Connection[];
} {
  const timers = new FakeTimers();
  const reported: unknown[] = [];
  const accepted: Connection[] = [];
  const loop = new AcceptLoop({
    listener: () => listener,
    hasRoom: () => accepted.length === 0,
    accepted: (connection) => accepted.push(connection),
    failed: (error) => reported.push(error),
  }, timers);
  return { loop, timers, reported, accepted };
}

/** Lets promise callbacks run (no timers involved). */
async function drain(): Promise<void> {
  for (let i = 0; i < 2000; i++) await null;
}

describe("the accept loop", () => {
  test("backs off on a want of resources: 50 ms doubling to 1 s, no accept before its timer", async () => {
    const listener = failingListener(Array(7).fill("EMFILE"));
    const { loop, timers, reported, accepted } = loopOver(listener);
    loop.next();
    for (let failure = 1; failure <= 7; failure++) {
      await drain();
      assert.equal(listener.calls, failure, "no accept while the back-off timer waits");
      assert.equal(timers.pending, 1);
      loop.next(); // e.g. a session ended: still no accept before the timer
      await drain();
      assert.equal(listener.calls, failure);
      timers.fire();
    }
    await drain();
    assert.deepEqual(timers.delays, [50, 100, 200, 400, 800, 1000, 1000]);
    assert.equal(reported.length, 7);
    assert.equal(accepted.length, 1, "served once the failures stop");
    assert.equal(loop.connectionErrors, 0);
  });

  test("skips a failure of one connection at once, unreported, yielding to a timer now and then", async () => {
    const count = ACCEPT_SKIPS_PER_TURN * 2 + 5;
    const listener = failingListener(Array(count).fill("ENOTCONN"));
    const { loop, timers, reported, accepted } = loopOver(listener);
    loop.next();
    while (accepted.length === 0) {
      await drain();
      timers.fire();
    }
    assert.equal(loop.connectionErrors, count);
    assert.deepEqual(reported, []);
    assert.deepEqual(timers.delays, [0, 0], "a zero-delay timer after every run of skips");
  });

  test("accepts only while a slot is free and the server has a listener", async () => {
    const listener = failingListener([]);
    let room = false;
    let listening: Listener | undefined = listener;
    const loop = new AcceptLoop({
      listener: () => listening,
      hasRoom: () => room,
      accepted: () => (room = false),
      failed: () => {},
    }, new FakeTimers());
    loop.next();
    await drain();
    assert.equal(listener.calls, 0, "no slot");
    room = true;
    listening = undefined;
    loop.next();
    await drain();
    assert.equal(listener.calls, 0, "no listener (suspended)");
    listening = listener;
    loop.next();
    loop.next();
    await drain();
    assert.equal(listener.calls, 1, "one accept at a time, then no slot");
  });
});
