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

// Cells of the shared Int32Array.
const USED = 0; // slots taken now
const MAX = 1; // the limit
const GENERATION = 2; // bumped whenever a slot may have become free
const CELLS = 3;

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

  /**
   * @param from The limit, for a new group (the main thread), or the buffer
   * of an existing one (a worker thread).
   */
  constructor(from: number | SharedArrayBuffer) {
    if (typeof from === "number") {
      this.buffer = new SharedArrayBuffer(CELLS * Int32Array.BYTES_PER_ELEMENT);
      this.#cells = new Int32Array(this.buffer);
      Atomics.store(this.#cells, MAX, from);
    } else {
      this.buffer = from;
      this.#cells = new Int32Array(from);
    }
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
      if (Atomics.compareExchange(cells, USED, used, used + 1) === used) return true;
    }
  }

  /** Gives a slot back and wakes the threads waiting for one. */
  release(): void {
    Atomics.sub(this.#cells, USED, 1);
    this.#changed();
  }

  /**
   * Gives back every slot of a thread that ended without giving them back
   * (a worker that died), and wakes the waiters.
   */
  releaseMany(count: number): void {
    if (count <= 0) return;
    Atomics.sub(this.#cells, USED, count);
    this.#changed();
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
