// The limit a group of threads shares (src/shared_slots.ts): alone, and with
// real worker threads racing for its slots.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Worker } from "node:worker_threads";
import { SharedSlots } from "../src/shared_slots.ts";

test("slots: at most max are taken; a release or a higher max lets the next one in", async () => {
  const slots = new SharedSlots(2);
  assert.equal(slots.tryTake(), true);
  assert.equal(slots.tryTake(), true);
  assert.equal(slots.tryTake(), false);
  assert.equal(slots.used, 2);
  const seen = slots.generation;
  const woken = slots.changed(seen);
  slots.release();
  await woken;
  assert.equal(slots.tryTake(), true);
  const again = slots.changed(slots.generation);
  slots.setMax(3);
  await again;
  assert.equal(slots.tryTake(), true);
  assert.equal(slots.tryTake(), false);
  slots.setMax(1); // lower: holders keep their slots, no one new gets one
  slots.release();
  slots.release();
  assert.equal(slots.tryTake(), false);
  assert.equal(slots.used, 1);
});

test("slots: another thread's view of the same buffer is the same limit", () => {
  const slots = new SharedSlots(1);
  const other = new SharedSlots(slots.buffer);
  assert.equal(other.max, 1);
  assert.equal(slots.tryTake(), true);
  assert.equal(other.tryTake(), false);
  other.release();
  assert.equal(slots.used, 0);
});

test("slots: a holder's slots are counted, and given back at once when it is gone", () => {
  const group = new SharedSlots(3, 2);
  const first = new SharedSlots(group.buffer, 0, 0);
  const second = new SharedSlots(group.buffer, 0, 1);
  assert.equal(first.tryTake(), true);
  assert.equal(first.tryTake(), true);
  assert.equal(second.tryTake(), true);
  assert.equal(second.tryTake(), false);
  assert.deepEqual([group.heldBy(0), group.heldBy(1)], [2, 1]);
  first.release();
  assert.equal(group.heldBy(0), 1);
  assert.equal(group.releaseHolder(1), 1);
  assert.equal(group.releaseHolder(1), 0);
  assert.deepEqual([group.used, group.heldBy(1)], [1, 0]);
  assert.deepEqual([group.nextSequence(), first.nextSequence(), second.nextSequence()], [0, 1, 2]);
  assert.deepEqual([first.nextId(), second.nextId()], [1, 2]);
});

test("slots: four threads racing for 3 slots never hold more than 3 at once", { timeout: 60_000 }, async () => {
  const slots = new SharedSlots(3);
  const live = new SharedArrayBuffer(3 * Int32Array.BYTES_PER_ELEMENT);
  const rounds = 300;
  const workers = Array.from({ length: 4 }, () =>
    new Worker(new URL("./support/slots_worker.ts", import.meta.url), {
      workerData: { slots: slots.buffer, live, rounds },
    })
  );
  try {
    const messages = (expected: string) =>
      Promise.all(workers.map((worker) =>
        new Promise<void>((resolve, reject) => {
          const onMessage = (message: unknown) => {
            if (message !== expected) return;
            worker.off("message", onMessage);
            resolve();
          };
          worker.on("message", onMessage);
          worker.once("error", reject);
          worker.once("exit", (code) => reject(new Error(`worker exited with ${code} before '${expected}'`)));
        })
      ));
    await messages("ready");
    const flags = new Int32Array(live);
    Atomics.store(flags, 2, 1);
    Atomics.notify(flags, 2);
    await messages("done");
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  const [now, peak] = new Int32Array(live);
  assert.equal(now, 0);
  assert.equal(slots.used, 0, "every slot came back");
  assert.ok(peak <= 3, `peak ${peak} holders for 3 slots`);
  assert.equal(peak, 3, "the threads did race for the slots");
});
