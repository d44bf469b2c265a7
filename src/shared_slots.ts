/**
 * One exact session limit shared by threads: the count of sessions running
 * in a whole group of servers and its `max`, in a `SharedArrayBuffer` that
 * every thread of the group holds, changed only with `Atomics`. A slot is
 * taken with a compare-and-swap, so at no moment do more than `max` holders
 * have one, however many threads race for it; a thread that finds none
 * waits (`Atomics.waitAsync`, without blocking its event loop) until a slot
 * is given back anywhere or `max` changes. Runtime-neutral: Node, Deno and
 * Bun have `SharedArrayBuffer` and `Atomics.waitAsync` in their threads.
 *
 * @module
 */

// Cells of the shared Int32Array, then one per holder (a worker thread):
// the slots it holds, so that a holder that dies can have them given back.
const USED = 0; // slots taken now
const MAX = 1; // the limit
const GENERATION = 2; // bumped whenever a slot may have become free
const SEQUENCE = 3; // the group's event order (session starts and ends)
const IDS = 4; // the last session id given out in the group
const CELLS = 5;

type WaitAsync = (
  array: Int32Array,
  index: number,
  value: number,
  timeoutMs?: number,
) => { async: boolean; value: Promise<"ok" | "timed-out"> | "not-equal" | "timed-out" };

// A pending Atomics.waitAsync does not keep a thread's event loop alive (a
// worker with nothing else to do would exit): a timer does, meanwhile.
const KEEP_ALIVE_MS = 2 ** 30;

/** The limit a group of threads shares; each thread makes one over the same buffer. */
export class SharedSlots {
  /** The shared memory: hand it to the other threads (postMessage, workerData). */
  readonly buffer: SharedArrayBuffer;
  #cells: Int32Array;
  // The cell counting this view's holder's slots, or -1 (not counted).
  #held: number;

  /**
   * @param from The limit, for a new group (the main thread), or the buffer
   * of an existing one (a worker thread).
   * @param holders For a new group: how many holders have their slots counted.
   * @param holder For a view of an existing group: whose slots it counts (0 to holders - 1).
   */
  constructor(from: number | SharedArrayBuffer, holders = 0, holder?: number) {
    if (typeof from === "number") {
      this.buffer = new SharedArrayBuffer((CELLS + holders) * Int32Array.BYTES_PER_ELEMENT);
      this.#cells = new Int32Array(this.buffer);
      Atomics.store(this.#cells, MAX, from);
    } else {
      this.buffer = from;
      this.#cells = new Int32Array(from);
    }
    this.#held = holder === undefined ? -1 : CELLS + holder;
  }

  /** Slots taken now, in the whole group. */
  get used(): number {
    return Atomics.load(this.#cells, USED);
  }

  /** The group's limit. */
  get max(): number {
    return Atomics.load(this.#cells, MAX);
  }

  /** Takes a slot if one is free; never more than `max` are taken at once. */
  tryTake(): boolean {
    const cells = this.#cells;
    for (;;) {
      const used = Atomics.load(cells, USED);
      if (used >= Atomics.load(cells, MAX)) return false;
      if (Atomics.compareExchange(cells, USED, used, used + 1) === used) break;
    }
    // Counted as the holder's after it is taken: a holder ending in between
    // can leak a slot, never free one it did not take.
    if (this.#held >= 0) Atomics.add(cells, this.#held, 1);
    return true;
  }

  /** Gives a slot back and wakes the threads waiting for one. */
  release(): void {
    if (this.#held >= 0) Atomics.sub(this.#cells, this.#held, 1);
    Atomics.sub(this.#cells, USED, 1);
    this.#changed();
  }

  /** Slots that holder `holder` has now. */
  heldBy(holder: number): number {
    return Atomics.load(this.#cells, CELLS + holder);
  }

  /**
   * Gives back every slot of a holder that ended without giving them back
   * (a worker that died), and wakes the waiters; returns how many.
   */
  releaseHolder(holder: number): number {
    const count = Atomics.exchange(this.#cells, CELLS + holder, 0);
    if (count > 0) {
      Atomics.sub(this.#cells, USED, count);
      this.#changed();
    }
    return count;
  }

  /**
   * The next number of the group's event order. A session's end takes its
   * number before its slot is given back, a start after its slot is taken,
   * so the end of a session comes before the start that took its slot.
   */
  nextSequence(): number {
    return Atomics.add(this.#cells, SEQUENCE, 1);
  }

  /** A session id unique in the group (from 1). */
  nextId(): number {
    return Atomics.add(this.#cells, IDS, 1) + 1;
  }

  /** Changes the limit; raising it wakes the waiters. Running holders keep their slots. */
  setMax(max: number): void {
    Atomics.store(this.#cells, MAX, max);
    this.#changed();
  }

  /**
   * Resolves once a slot may have become free (a release or a new `max`
   * since `seen`, a value of {@linkcode SharedSlots.generation}), or after
   * `timeoutMs`: the caller then tries again. Never blocks the thread.
   */
  changed(seen: number, timeoutMs: number = KEEP_ALIVE_MS): Promise<void> {
    const waitAsync = (Atomics as unknown as { waitAsync?: WaitAsync }).waitAsync;
    if (waitAsync === undefined) {
      return new Promise((resolve) => setTimeout(resolve, 5)); // polled where waitAsync is missing
    }
    const result = waitAsync(this.#cells, GENERATION, seen, timeoutMs);
    if (!result.async) return Promise.resolve();
    const keepAlive = setTimeout(() => {}, timeoutMs);
    return (result.value as Promise<unknown>).then(() => clearTimeout(keepAlive));
  }

  /** The current generation, to pass to {@linkcode SharedSlots.changed} after a failed take. */
  get generation(): number {
    return Atomics.load(this.#cells, GENERATION);
  }

  #changed(): void {
    Atomics.add(this.#cells, GENERATION, 1);
    Atomics.notify(this.#cells, GENERATION);
  }
}
