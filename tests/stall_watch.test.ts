// Unit tests of how a closing connection's queue is watched
// (src/stall_watch.ts): dropped once its queued bytes stand still for a
// whole period, kept while they go down. Real timers of a few milliseconds;
// no sockets.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { StallWatch } from "../src/stall_watch.ts";

const LINGER_MS = 20;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `condition` holds, looking every millisecond, for at most 2 s. */
async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 2_000;
  while (!condition() && Date.now() < deadline) await sleep(1);
}

describe("StallWatch", () => {
  test("calls onStall once the queue has not gone down for a whole period", async () => {
    let stalls = 0;
    const started = Date.now();
    let stalledAfter = 0;
    new StallWatch(() => 1000, () => {
      stalls++;
      stalledAfter = Date.now() - started;
    }, LINGER_MS);
    await until(() => stalls > 0);
    await sleep(LINGER_MS * 3);
    assert.equal(stalls, 1, "once, not again");
    assert.ok(stalledAfter >= LINGER_MS - 2, `not before a whole period (${stalledAfter} ms)`);
  });

  test("keeps waiting while the queue goes down, then calls onStall a whole period after it stopped", async () => {
    const started = Date.now();
    const progressFor = LINGER_MS * 3;
    let queued = 1_000_000;
    let lastProgressAt = 0;
    let stalledAt = -1;
    new StallWatch(() => {
      const now = Date.now() - started;
      if (now < progressFor) {
        queued -= 1000;
        lastProgressAt = now;
      }
      return queued;
    }, () => (stalledAt = Date.now() - started), LINGER_MS);
    await until(() => stalledAt >= 0);
    assert.ok(stalledAt >= progressFor, `not while the queue went down (stalled at ${stalledAt} ms)`);
    assert.ok(
      stalledAt - lastProgressAt >= LINGER_MS - 2,
      `a whole period after the last progress seen (${lastProgressAt} ms), not ${stalledAt} ms`,
    );
  });

  test("stops by itself once nothing is queued, and stop() ends it", async () => {
    let queued = 500;
    let looks = 0;
    let stalls = 0;
    new StallWatch(() => {
      looks++;
      return queued;
    }, () => stalls++, LINGER_MS);
    queued = 0;
    await sleep(LINGER_MS * 4);
    assert.equal(looks, 2, "the constructor's look and one more");
    assert.equal(stalls, 0);

    const stopped = new StallWatch(() => 500, () => stalls++, LINGER_MS);
    stopped.stop();
    await sleep(LINGER_MS * 3);
    assert.equal(stalls, 0);
  });

  test("with a linger of 0, calls onStall at once", () => {
    let stalls = 0;
    new StallWatch(() => 500, () => stalls++, 0);
    assert.equal(stalls, 1);
  });
});
