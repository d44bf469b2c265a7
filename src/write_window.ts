/**
 * The write window of the connection machine (src/connection.ts): one
 * scheduled callback per turn of the event loop. A connection's first write
 * in a turn may go out at once (no added latency); its later writes in the
 * same turn (a handler answering every packet of a chunk) wait and leave
 * together when the turn ends, in one system call instead of one each.
 * Also the helpers its write queue uses. Runtime-neutral: the caller says
 * how to run a callback at the end of the turn (`setImmediate` on all
 * three runtimes).
 *
 * @module
 */

import { contiguousCount, copyChunks } from "./bytes.ts";

/** A connection with writes held back until the end of the turn. */
export interface Batched {
  /** Writes what was held back this turn. */
  flushBatch(): void;
}

/** Counts turns in which something was written, and flushes held writes. */
export class WriteWindow {
  #turn = 0;
  #open = false;
  #batched: Batched[] = [];
  #schedule: (callback: () => void) => unknown;
  #close = (): void => {
    this.#open = false;
    this.#turn++;
    const batched = this.#batched;
    this.#batched = [];
    for (const connection of batched) connection.flushBatch();
  };

  constructor(schedule: (callback: () => void) => unknown) {
    this.#schedule = schedule;
  }

  /**
   * The current turn's number; a connection whose last write had the same
   * number is writing for the second time this turn, and should hold back.
   */
  turn(): number {
    if (!this.#open) {
      this.#open = true;
      this.#schedule(this.#close);
    }
    return this.#turn;
  }

  /** Has `connection.flushBatch()` called when the turn ends. */
  hold(connection: Batched): void {
    this.#batched.push(connection);
  }
}

/**
 * Merges the chunks at the head of a write queue that continue one another
 * in the same buffer into one view, without copying: packets relayed from one
 * received chunk (each behind its own header) leave in one write, as the
 * chunk came in.
 */
export function mergeAdjacent(queue: Uint8Array[]): void {
  const count = contiguousCount(queue);
  if (count < 2) return;
  const first = queue[0];
  const last = queue[count - 1];
  const end = last.byteOffset + last.byteLength;
  queue.splice(0, count, new Uint8Array(first.buffer, first.byteOffset, end - first.byteOffset));
}

/**
 * Replaces the first `count` chunks of a write queue, `length` bytes in all,
 * with one copy of them: one write for many small ones. The copy is made in
 * `into` when given (a buffer of at least `length` bytes that no queued
 * chunk lies in), else in a new buffer.
 */
export function joinHead(queue: Uint8Array[], count: number, length: number, into?: Uint8Array): Uint8Array {
  const joined = copyChunks(queue, count, length, 0, into);
  queue.splice(0, count, joined);
  return joined;
}
