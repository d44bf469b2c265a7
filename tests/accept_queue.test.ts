// Unit tests of the accept-ahead wait shared by the Node and Bun adapters
// (src/accept_queue.ts): hand-over, waiting, refusal, and the local address
// a listener's connections share. No sockets.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { AcceptQueue, acceptedLocalAddress } from "../src/accept_queue.ts";
import type { ListenOptions, SocketAddress } from "../src/transport.ts";

class Waiting {
  readonly remoteAddress: SocketAddress;
  closed = false;
  constructor(remoteAddress: SocketAddress) {
    this.remoteAddress = remoteAddress;
  }
  close(): void {
    this.closed = true;
  }
}

function queueOf(backlog: number, refused: SocketAddress[] = []): AcceptQueue<Waiting> {
  const options: ListenOptions = {
    hostname: "127.0.0.1",
    port: 0,
    backlog,
    writeHighWaterMark: 65_536,
    lingerMs: 5_000,
    onRefused: (address) => refused.push(address),
  };
  return new AcceptQueue<Waiting>(options);
}

const peer = (port: number) => new Waiting({ hostname: "127.0.0.1", port });

describe("AcceptQueue", () => {
  test("is taking while a take() is pending, and a connection offered then goes to it", async () => {
    const queue = queueOf(2);
    assert.equal(queue.taking, false);
    const taken = queue.take();
    assert.equal(queue.taking, true);
    const first = peer(1);
    queue.offer(first);
    assert.equal(queue.taking, false);
    assert.equal(await taken, first);
    assert.equal(queue.waiting, 0);
  });

  test("keeps connections nobody takes yet in arrival order, up to backlog, and refuses the rest", async () => {
    const refused: SocketAddress[] = [];
    const queue = queueOf(2, refused);
    const [a, b, c] = [peer(1), peer(2), peer(3)];
    for (const connection of [a, b, c]) queue.offer(connection);
    assert.equal(queue.taking, false);
    assert.equal(queue.waiting, 2);
    assert.equal(queue.refused, 1);
    assert.equal(c.closed, true);
    assert.deepEqual(refused, [c.remoteAddress]);
    assert.equal(await queue.take(), a);
    assert.equal(await queue.take(), b);
    assert.equal(queue.waiting, 0);
  });

  test("close() closes the waiting connections and ends a pending take with null", async () => {
    const waitingQueue = queueOf(4);
    const a = peer(1);
    waitingQueue.offer(a);
    waitingQueue.close();
    assert.equal(a.closed, true);
    assert.equal(await waitingQueue.take(), null);
    const takingQueue = queueOf(4);
    const taken = takingQueue.take();
    takingQueue.close();
    assert.equal(await taken, null);
    assert.equal(takingQueue.taking, false);
  });
});

describe("acceptedLocalAddress", () => {
  test("a listener bound to one address gives one frozen copy of it", () => {
    for (const hostname of ["127.0.0.1", "::1", "192.0.2.7"]) {
      const listening = { hostname, port: 4_000 };
      const local = acceptedLocalAddress(listening);
      assert.deepEqual(local, listening);
      assert.notEqual(local, listening);
      assert.equal(Object.isFrozen(local), true);
    }
  });

  test("a listener on every address gives none: each connection is asked", () => {
    for (const hostname of ["0.0.0.0", "::", ""]) {
      assert.equal(acceptedLocalAddress({ hostname, port: 4_000 }), undefined);
    }
  });
});
