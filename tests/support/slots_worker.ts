// A worker thread for tests/shared_slots.test.ts: takes a slot of the shared
// limit `rounds` times (waiting when none is free), holds it a little while
// counting the holders in `live` and their peak, and gives it back.
import { parentPort, workerData } from "node:worker_threads";
import { SharedSlots } from "../../src/shared_slots.ts";

const { slots: buffer, live: liveBuffer, rounds } = workerData as {
  slots: SharedArrayBuffer;
  live: SharedArrayBuffer;
  rounds: number;
};
const slots = new SharedSlots(buffer);
const live = new Int32Array(liveBuffer); // [holders now, their peak, the start signal]

// Start together: tell the test this thread is ready, wait for its signal.
parentPort!.postMessage("ready");
const keepAlive = setInterval(() => {}, 1000);
while (Atomics.load(live, 2) === 0) {
  const wait = (Atomics as unknown as {
    waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: unknown };
  }).waitAsync(live, 2, 0);
  if (wait.async) await wait.value;
}
clearInterval(keepAlive);

for (let round = 0; round < rounds; round++) {
  for (;;) {
    const seen = slots.generation;
    if (slots.tryTake()) break;
    await slots.changed(seen);
  }
  const now = Atomics.add(live, 0, 1) + 1;
  for (let peak = Atomics.load(live, 1); now > peak; peak = Atomics.load(live, 1)) {
    if (Atomics.compareExchange(live, 1, peak, now) === peak) break;
  }
  // Hold it across a turn of the event loop, sometimes a timer's.
  await new Promise((resolve) => (round % 7 === 0 ? setTimeout(resolve, 1) : setImmediate(resolve)));
  Atomics.sub(live, 0, 1);
  slots.release();
}
parentPort!.postMessage("done");
