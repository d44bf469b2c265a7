/**
 * The connection machine, written once for every adapter: what arrives
 * before the session starts or while it is paused, the write queue with its
 * bound and drain, holding and joining writes within a turn, linger on close,
 * and one report of the connection's loss. An adapter gives it a
 * {@linkcode TransportSocket} (its runtime's socket verbs) and tells it its
 * socket's events; the session sees a {@linkcode Connection}.
 *
 * @module
 */

import { DrainSignal } from "./drain_signal.ts";
import { StallWatch } from "./stall_watch.ts";
import type { Connection, ConnectionEvents, SocketAddress, SocketEvents, TransportSocket } from "./transport.ts";
import { type Batched, joinHead, mergeAdjacent, WriteWindow } from "./write_window.ts";

/** What a connection needs of its listener's options. */
export interface ConnectionOptions {
  /** Bytes queued for the peer (the runtime's unsent ones included) above which writers wait. */
  writeHighWaterMark: number;
  /** How long a closed connection's queued bytes may wait for a peer that takes none. */
  lingerMs: number;
}

// Queued chunks are joined into writes of up to this size: one write (and,
// with TCP_NODELAY, one segment) for a packet's header and body, or for the
// many small packets a handler answers in one turn. A header (up to
// SMALL_HEAD bytes) also takes a body of up to WRITE_JOIN_MAX along.
const WRITE_JOIN_MAX = 64 * 1024;
const SMALL_HEAD = 64;
// Joins of JOIN_BUFFER_MIN bytes or more are made in a join buffer the
// connection keeps while its queue is not empty, so one streaming to a slow
// peer reuses it instead of leaving a new one behind each write for the
// collector; emptied queues give theirs back to a small pool.
const JOIN_BUFFER_MIN = 4 * 1024;
const JOIN_BUFFER_SIZE = WRITE_JOIN_MAX + SMALL_HEAD;
const JOIN_POOL_MAX = 16;
const joinPool: Uint8Array[] = [];

// Writes wait while the session says more are coming (its handler has
// received packets it has not taken yet): what it answers to the packets of
// one read then leaves in one write, as they came in. They go once the
// handler has caught up, the queue passes the write bound, or the turn ends.
// Otherwise a connection's first write in a turn goes at once; later small
// ones in the same turn wait for its end and leave joined. Large ones
// (WRITE_JOIN_MAX or more) would not be joined, so they do not wait.
const schedule: (callback: () => void) => unknown =
  (globalThis as { setImmediate?: (callback: () => void) => unknown }).setImmediate ??
    ((callback) => setTimeout(callback, 0));
const writeWindow = new WriteWindow(schedule);

const NO_CHUNKS: Uint8Array[] = [];

/**
 * One connection, on an adapter's socket. The adapter calls the
 * {@linkcode SocketEvents} methods as its socket reports them, from the
 * moment it accepted the connection.
 */
export class SocketConnection implements Connection, SocketEvents, Batched {
  readonly remoteAddress: SocketAddress;
  readonly localAddress: SocketAddress;
  #socket: TransportSocket;
  #options: ConnectionOptions;
  #events: ConnectionEvents | undefined;
  #closed = false; // closed by the core, or its loss reported: no more events
  #gone = false; // the socket is gone (its close event came)
  // Input the session cannot take yet (before start(), while paused), in
  // order: chunks, then the end of stream, then the loss. Made on first use.
  #held: Uint8Array[] = NO_CHUNKS;
  #heldEnd = false;
  #heldLoss = false;
  #failure: Error | undefined; // a failure before start()
  #deliverScheduled = false;
  #paused = false;
  #reading = false; // what the socket was last told
  // Output.
  #queue: Uint8Array[] = NO_CHUNKS;
  #queuedBytes = 0;
  #writing = false; // a write the runtime completes later is under way
  #lastWriteTurn = -1;
  #writeHeld = false; // writes wait for the turn's end, or for the session
  #heldForSession = false;
  #drain: DrainSignal | undefined;
  #stall: StallWatch | undefined;
  #ending = false; // the socket was told to end
  #joinBuffer: Uint8Array | undefined;

  constructor(socket: TransportSocket, options: ConnectionOptions) {
    this.#socket = socket;
    this.#options = options;
    this.remoteAddress = socket.remoteAddress;
    this.localAddress = socket.localAddress;
  }

  // --- Connection: what the core and the session call.

  get encrypted(): boolean {
    return this.#socket.encrypted === true;
  }

  get alpnProtocol(): string | null {
    return this.#socket.alpnProtocol ?? null;
  }

  handshake(): Promise<Error | null> {
    // What a reader before it (a PROXY header's) read past its end is the
    // start of the handshake: the socket takes it back.
    const prefix = this.#held;
    this.#held = NO_CHUNKS;
    return this.#socket.handshake?.(prefix) ?? Promise.resolve(null);
  }

  handOver(rest: Uint8Array): void {
    if (this.#closed) return;
    this.#events = undefined;
    // Until the next start() (which reads again, on a TLS connection from
    // the TLS socket that takes over).
    this.#read(false);
    if (rest.length > 0) {
      if (this.#held === NO_CHUNKS) this.#held = [];
      this.#held.unshift(rest);
    }
  }

  start(events: ConnectionEvents): void {
    if (this.#events !== undefined || this.#closed) return;
    this.#events = events;
    if (this.#failure !== undefined || this.#held.length > 0 || this.#heldEnd || this.#heldLoss) {
      this.#scheduleDeliver();
    } else {
      this.#read(true);
    }
  }

  pause(): void {
    this.#paused = true;
    this.#read(false);
  }

  resume(): void {
    if (!this.#paused || this.#closed) return;
    this.#paused = false;
    if (this.#events === undefined) return;
    if (this.#held.length > 0 || this.#heldEnd) this.#scheduleDeliver();
    else this.#read(true);
  }

  write(data: Uint8Array, more?: Uint8Array, moreToCome?: boolean): Promise<void> | undefined {
    if (this.#closed) return undefined;
    if (this.#gone) {
      this.#lose();
      return undefined;
    }
    this.#enqueue(data);
    if (more !== undefined) this.#enqueue(more);
    const turn = writeWindow.turn();
    const first = this.#lastWriteTurn !== turn;
    this.#lastWriteTurn = turn;
    const over = this.#pending() > this.#options.writeHighWaterMark;
    if (moreToCome === true && !over) {
      this.#heldForSession = true;
      this.#hold();
    } else if (first || over || this.#heldForSession || data.length + (more?.length ?? 0) >= WRITE_JOIN_MAX) {
      this.flushBatch();
    } else {
      this.#hold();
    }
    if (this.#closed) return undefined; // the write found the socket gone
    if (this.#pending() <= this.#options.writeHighWaterMark) return undefined;
    return (this.#drain ??= new DrainSignal()).wait();
  }

  setNoDelay(noDelay: boolean): void {
    if (!this.#gone) this.#socket.setNoDelay(noDelay);
  }

  setKeepAlive(keepAlive: boolean, initialDelayMs: number): void {
    if (!this.#gone) this.#socket.setKeepAlive(keepAlive, initialDelayMs);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#dropHeld();
    // Writers waiting for the peer: the connection is closed.
    this.#drain?.wake();
    if (this.#gone) return;
    this.#writeHeld = this.#heldForSession = false;
    this.#pump();
    if (this.#gone || (this.#ending && this.#socket.unsent() === 0)) return;
    // The core closes right after a handler's last send: let the queued
    // bytes reach the peer as long as it keeps taking them. Reading (and
    // dropping) meanwhile keeps a peer that is blocked sending able to read.
    this.#read(true);
    const socket = this.#socket;
    const unsent = () => this.#queuedBytes + socket.unsent();
    this.#stall = new StallWatch(unsent, () => socket.destroy(), this.#options.lingerMs);
  }

  // --- SocketEvents: what the adapter reports.

  data(chunk: Uint8Array): boolean {
    if (this.#closed) return false;
    const events = this.#events;
    if (events === undefined || this.#paused || this.#held.length > 0) {
      if (this.#held === NO_CHUNKS) this.#held = [];
      this.#held.push(chunk);
      return false;
    }
    return events.data(chunk) === true;
  }

  end(): void {
    if (this.#closed || this.#heldEnd) return;
    const events = this.#events;
    if (events === undefined || this.#held.length > 0) this.#heldEnd = true;
    else events.end();
  }

  error(error: Error): void {
    if (this.#closed) return;
    const events = this.#events;
    if (events === undefined) {
      // Reported by start(); what was held goes with the socket.
      this.#failure ??= error;
      this.#held = NO_CHUNKS;
      this.#heldEnd = false;
      return;
    }
    this.#fail(events, error);
  }

  gone(): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#stall?.stop();
    this.#queue = NO_CHUNKS;
    this.#queuedBytes = 0;
    this.#joinBuffer = undefined;
    this.#lose();
    this.#drain?.wake();
  }

  drained(): void {
    this.#pump();
    this.#wakeWriters();
  }

  /** Writes what was held back: the turn ended, or the session caught up. */
  flushBatch(): void {
    this.#writeHeld = this.#heldForSession = false;
    this.#pump();
  }

  // --- Input.

  #read(on: boolean): void {
    if (this.#reading === on || this.#gone) return;
    this.#reading = on;
    this.#socket.setReading(on);
  }

  #scheduleDeliver(): void {
    if (this.#deliverScheduled) return;
    this.#deliverScheduled = true;
    // On a microtask: not inside the core's start() or resume() call, and
    // still before the runtime can deliver anything newer (that is held).
    queueMicrotask(() => this.#deliver());
  }

  /** Delivers what was held, in order, while the session takes it. */
  #deliver(): void {
    this.#deliverScheduled = false;
    const events = this.#events;
    if (events === undefined || this.#closed) return;
    if (this.#failure !== undefined) {
      this.#fail(events, this.#failure);
      return;
    }
    const held = this.#held;
    while (held.length > 0) {
      // Paused, closed, or handed over to the next reader.
      if (this.#closed || this.#paused || this.#events !== events) return;
      events.data(held.shift()!);
    }
    if (this.#events !== events) return;
    if (this.#held === held) this.#held = NO_CHUNKS;
    if (this.#heldEnd && !this.#closed) {
      this.#heldEnd = false;
      events.end();
    }
    if (this.#heldLoss) this.#lose();
    else if (!this.#closed) this.#read(true);
  }

  /**
   * The socket is gone, with no error told: the session gets what was held
   * for it (paused or not: nothing more will come), then the loss. Before
   * start(), that waits for start().
   */
  #lose(): void {
    if (this.#closed) return;
    const events = this.#events;
    if (events === undefined) {
      this.#heldLoss = true;
      return;
    }
    const held = this.#held;
    this.#held = NO_CHUNKS;
    for (const chunk of held) {
      if (this.#closed) return;
      events.data(chunk);
    }
    if (this.#closed) return;
    this.#closed = true;
    this.#dropHeld();
    events.lost();
  }

  #fail(events: ConnectionEvents, error: Error): void {
    this.#closed = true;
    this.#dropHeld();
    this.#drain?.wake();
    if (!this.#gone) this.#socket.destroy();
    events.error(error);
  }

  /** Forgets what was held for the session: it will get none of it. */
  #dropHeld(): void {
    this.#held = NO_CHUNKS;
    this.#heldEnd = this.#heldLoss = false;
    this.#failure = undefined;
  }

  // --- Output.

  /** Bytes counted against the write bound: queued here, and held by the runtime. */
  #pending(): number {
    return this.#queuedBytes + this.#socket.buffered();
  }

  #enqueue(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.#queue === NO_CHUNKS) this.#queue = [];
    this.#queue.push(chunk);
    this.#queuedBytes += chunk.length;
  }

  /** Holds the queue until flushed, at the latest when the turn ends. */
  #hold(): void {
    if (this.#writeHeld) return;
    this.#writeHeld = true;
    writeWindow.hold(this);
  }

  /** Writes the queue out for as long as the runtime takes it. */
  #pump(): void {
    const socket = this.#socket;
    const queue = this.#queue;
    while (this.#canWrite()) {
      let length: number;
      let written: number | Promise<number>;
      if (queue.length > 1 && socket.writev !== undefined) {
        length = this.#queuedBytes;
        written = socket.writev(queue);
      } else {
        const chunk = this.#nextChunk();
        length = chunk.length;
        written = socket.write(chunk);
      }
      if (typeof written !== "number") {
        this.#writeLater(written);
        return;
      }
      const taken = this.#taken(written);
      if (taken < 0 || taken < length) return; // gone, or the runtime takes no more: drained() follows
    }
    if (queue.length === 0) this.#emptied();
  }

  #canWrite(): boolean {
    return this.#queue.length > 0 && !this.#writing && !this.#gone && !(this.#writeHeld && !this.#closed);
  }

  /** The next chunk to write: adjacent views merged, small chunks joined. */
  #nextChunk(): Uint8Array {
    const queue = this.#queue;
    if (queue.length > 1) mergeAdjacent(queue);
    // The rest of a partly written join is written as it is: joining it
    // again would copy the join buffer onto itself.
    return queue.length > 1 && queue[0].length < WRITE_JOIN_MAX && queue[0].buffer !== this.#joinBuffer?.buffer
      ? this.#join()
      : queue[0];
  }

  /** Writes that the runtime completes later: one at a time, in one loop. */
  async #writeLater(written: Promise<number>): Promise<void> {
    this.#writing = true;
    for (;;) {
      let taken: number;
      try {
        taken = await written;
      } catch (error) {
        // Cut short by our own close, or the socket failed (a reset peer).
        this.#writing = false;
        if (!this.#gone) this.error(error instanceof Error ? error : new Error(String(error)));
        return;
      }
      if (this.#taken(taken) < 0) break;
      this.#writing = false;
      if (!this.#canWrite()) break;
      this.#writing = true;
      const next = this.#socket.write(this.#nextChunk());
      if (typeof next === "number") {
        this.#writing = false;
        if (this.#taken(next) < 0) return;
        break;
      }
      written = next;
    }
    this.#writing = false;
    this.#pump();
  }

  /** Takes `taken` bytes off the queue's head; returns it, or -1 once the socket is gone. */
  #taken(taken: number): number {
    if (this.#gone) return -1;
    if (taken < 0) {
      this.gone();
      return -1;
    }
    const queue = this.#queue;
    this.#queuedBytes -= taken;
    let rest = taken;
    while (rest > 0) {
      const head = queue[0];
      if (head.length > rest) {
        queue[0] = head.subarray(rest);
        break;
      }
      rest -= head.length;
      queue.shift();
    }
    this.#wakeWriters();
    return taken;
  }

  /** Wakes writers waiting for the peer once the bytes pending are within the bound. */
  #wakeWriters(): void {
    if (this.#drain?.waiting && !this.#closed && this.#pending() <= this.#options.writeHighWaterMark) {
      this.#drain.wake();
    }
  }

  /** The queue is empty: the join buffer goes back, and a closing connection ends. */
  #emptied(): void {
    const joinBuffer = this.#joinBuffer;
    if (joinBuffer !== undefined) {
      if (joinPool.length < JOIN_POOL_MAX) joinPool.push(joinBuffer);
      this.#joinBuffer = undefined;
    }
    if (this.#closed && !this.#ending && !this.#gone) {
      this.#ending = true;
      this.#socket.end();
    }
  }

  /**
   * Joins whole chunks at the head of the queue into one of up to
   * WRITE_JOIN_MAX bytes (a header also takes a body of up to that along).
   * Larger chunks go out as they are, uncopied.
   */
  #join(): Uint8Array {
    const queue = this.#queue;
    let count = 1;
    let length = queue[0].length;
    while (count < queue.length) {
      const next = queue[count].length;
      if (length + next > WRITE_JOIN_MAX && (length >= SMALL_HEAD || next > WRITE_JOIN_MAX)) break;
      length += next;
      count++;
    }
    if (count === 1) return queue[0];
    if (length < JOIN_BUFFER_MIN) return joinHead(queue, count, length);
    this.#joinBuffer ??= joinPool.pop() ?? new Uint8Array(JOIN_BUFFER_SIZE);
    return joinHead(queue, count, length, this.#joinBuffer);
  }
}
