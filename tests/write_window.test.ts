// Unit tests of what the adapters share for writing (src/write_window.ts):
// the per-turn write window and the merging of adjacent views. No sockets.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { joinHead, mergeAdjacent, WriteWindow } from "../src/write_window.ts";

describe("mergeAdjacent", () => {
  test("merges views that continue one another in the same buffer, without copying", () => {
    const buffer = new Uint8Array(100).map((_, i) => i);
    const queue = [buffer.subarray(10, 20), buffer.subarray(20, 25), buffer.subarray(25, 60), buffer.subarray(70, 80)];
    mergeAdjacent(queue);
    assert.equal(queue.length, 2);
    assert.equal(queue[0].buffer, buffer.buffer);
    assert.equal(queue[0].byteOffset, 10);
    assert.deepEqual(queue[0], buffer.subarray(10, 60));
    assert.deepEqual(queue[1], buffer.subarray(70, 80));
  });

  test("leaves views of other buffers, gaps and reversed order alone", () => {
    const a = new Uint8Array(10);
    const b = new Uint8Array(10);
    for (const queue of [[a, b], [a.subarray(0, 4), a.subarray(5)], [a.subarray(5), a.subarray(0, 5)]]) {
      const before = [...queue];
      mergeAdjacent(queue);
      assert.deepEqual(queue, before);
      queue.forEach((view, i) => assert.equal(view, before[i]));
    }
  });
});

describe("joinHead", () => {
  test("replaces the first chunks with one copy of them and leaves the rest", () => {
    const rest = new Uint8Array([9]);
    const queue = [new Uint8Array([1, 2]), new Uint8Array([3]), new Uint8Array([4, 5, 6]), rest];
    const joined = joinHead(queue, 3, 6);
    assert.deepEqual([...joined], [1, 2, 3, 4, 5, 6]);
    assert.equal(queue.length, 2);
    assert.equal(queue[0], joined);
    assert.equal(queue[1], rest);
  });
});

describe("WriteWindow", () => {
  test("one turn number until the scheduled end of the turn, which flushes each held connection once", () => {
    const scheduled: Array<() => void> = [];
    const window = new WriteWindow((callback) => scheduled.push(callback));
    const flushed: string[] = [];
    const first = window.turn();
    assert.equal(window.turn(), first);
    assert.equal(scheduled.length, 1, "one callback per turn");
    window.hold({ flushBatch: () => flushed.push("a") });
    window.hold({ flushBatch: () => flushed.push("b") });
    scheduled.shift()!();
    assert.deepEqual(flushed, ["a", "b"]);
    assert.notEqual(window.turn(), first);
    assert.equal(scheduled.length, 1);
    scheduled.shift()!();
    assert.deepEqual(flushed, ["a", "b"], "nothing held, nothing flushed");
  });
});
