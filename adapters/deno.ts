// Deno's API: https://docs.deno.com/api/deno/~/Deno.listen and
// https://docs.deno.com/api/deno/~/Deno.Conn

/**
 * The Deno adapter: pico-socket-server's transport on `Deno.listen`.
 *
 * Deno accepts only when asked, so connections the core has not asked for
 * wait in the kernel's accept backlog, un-served, exactly as proc_socket_server's did
 * (`backlog` becomes Deno's `tcpBacklog`, which the kernel caps at its
 * `somaxconn`; past it Linux drops new handshakes, which peers retry);
 * `refused` and `waiting` stay `0` because the kernel neither refuses nor
 * counts them for us. Reads go straight from `conn.read()` into buffers
 * handed to the core (no Web Streams); writes go through a queue because
 * `conn.write()` is asynchronous and may write part of a buffer. `close()`
 * first sends what was already written, unless the peer takes none of it for
 * 5 seconds.
 *
 * @example Serving with the Deno adapter explicitly
 * ```ts
 * import { startServer } from "@pico/socket-server";
 * import { denoTransport } from "@pico/socket-server/deno";
 * const server = await startServer({
 *   port: 0,
 *   max: 10,
 *   transport: denoTransport,
 *   handler: async (session) => {
 *     for await (const packet of session) await session.send(packet);
 *   },
 * });
 * await server.stop();
 * ```
 *
 * @module
 */

import type {
  Connection,
  ConnectionEvents,
  ListenOptions,
  Listener,
  SocketAddress,
  Transport,
} from "../src/transport.ts";
import { DrainSignal } from "../src/drain_signal.ts";
import { listenFailure } from "../src/listen_failure.ts";
import { StallWatch } from "../src/stall_watch.ts";
import { type Batched, joinHead, mergeAdjacent, WriteWindow } from "../src/write_window.ts";

// Local shapes of the few Deno APIs used, so that no Deno types are needed
// (the package type-checks under Node and Bun too).
interface DenoNetAddr {
  hostname: string;
  port: number;
}
interface DenoTcpConn {
  readonly remoteAddr: DenoNetAddr;
  readonly localAddr: DenoNetAddr;
  read(buffer: Uint8Array): Promise<number | null>;
  write(data: Uint8Array): Promise<number>;
  close(): void;
  setNoDelay(noDelay?: boolean): void;
  setKeepAlive(keepAlive?: boolean): void;
}
interface DenoTcpListener {
  readonly addr: DenoNetAddr;
  accept(): Promise<DenoTcpConn>;
  close(): void;
}
interface DenoApi {
  listen(options: { hostname: string; port: number; transport: "tcp"; tcpBacklog: number }): DenoTcpListener;
}

// Deno's error classes by name, and the POSIX codes the core reports. Deno 2
// sets `code` itself on most of them; this covers the ones it leaves bare
// (NotCapable: no --allow-net) and older releases.
const CODES: Record<string, string> = {
  AddrInUse: "EADDRINUSE",
  PermissionDenied: "EACCES",
  NotCapable: "EACCES",
  AddrNotAvailable: "EADDRNOTAVAIL",
  ConnectionReset: "ECONNRESET",
  ConnectionAborted: "ECONNABORTED",
  NotConnected: "ENOTCONN",
  BrokenPipe: "EPIPE",
  TimedOut: "ETIMEDOUT",
};

/** Gives a Deno error the POSIX `code` the core and users test. */
function withCode(error: unknown): Error & { code?: string } {
  const failure = (error instanceof Error ? error : new Error(String(error))) as Error & { code?: string };
  if (typeof failure.code !== "string") {
    const code = CODES[failure.name] ??
      // A hostname that does not resolve: Node's name for it.
      (failure.message.includes("lookup address") ? "ENOTFOUND" : undefined);
    if (code !== undefined) failure.code = code;
  }
  return failure;
}

// Read buffers. conn.read() needs its buffer before data arrives, so an idle
// connection holds one while it waits: they start small and grow while reads
// fill them (bulk transfers), shrink while reads stay small (chatty or idle
// peers). A read leaves the rest of its buffer for the next read rather than
// waste it, since chunks handed out never overlap.
const READ_SIZE_MIN = 2 * 1024;
const READ_SIZE_FIRST = 4 * 1024;
// Bulk reads grow to 256 KiB: a 64 KiB packet then mostly arrives whole in
// one read, handed on as a view instead of being joined from two reads.
const READ_SIZE_MAX = 256 * 1024;
const READ_ROOM_MIN = 1024;
// Queued chunks are joined into writes of up to this size: one op (and, with
// TCP_NODELAY, one segment) for a packet's header and body, or for the many
// small packets a handler sends in one turn.
const WRITE_JOIN_MAX = 64 * 1024;
const SMALL_HEAD = 64;
// Joins of JOIN_BUFFER_MIN bytes or more (a packet's header and a large
// body, or a turn's many answers) are made in a join buffer the connection
// keeps while its queue is not empty, so a connection streaming to a slow
// peer reuses one instead of leaving a new one behind each write for the
// collector. Emptied queues give theirs back to a small pool.
const JOIN_BUFFER_MIN = 4 * 1024;
const JOIN_BUFFER_SIZE = WRITE_JOIN_MAX + SMALL_HEAD;
const JOIN_POOL_MAX = 16;
const joinPool: Uint8Array[] = [];
// Writes wait while the session says more are coming (its handler has
// received packets it has not taken yet): what it answers to the packets of
// one read then leaves in one write op, as they came in. Deno's writes often
// complete at once, so a write loop started at the first answer would take
// the answers one by one. They go once the handler has caught up, or the
// queue passes the write bound, or the turn ends. Otherwise a connection's
// first write in a turn starts the write loop at once; later small ones in
// the same turn wait for its end and leave joined, in one write op. Large
// ones (WRITE_JOIN_MAX or more) would not be joined, so they do not wait:
// holding them until the turn's end cost relayed 64 KiB chunks a fifth of
// their speed.
const writeWindow = new WriteWindow(setImmediate);

class DenoConnection implements Connection, Batched {
  readonly remoteAddress: SocketAddress;
  readonly localAddress: SocketAddress;
  #conn: DenoTcpConn;
  #events: ConnectionEvents | undefined;
  #closed = false; // close() was called, or the connection failed: no more events
  #released = false; // Deno's resource is closed
  #failure: Error | undefined; // a write failure before start(), reported by it
  #paused = false;
  #reading = false; // the read loop runs (a read may be pending)
  #ended = false;
  #held: Uint8Array | undefined; // read after pause(): delivered on resume()
  #readBuffer: Uint8Array = new Uint8Array(0);
  #readSize = READ_SIZE_FIRST;
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  #writing = false; // the write loop runs (or is about to)
  #lastWriteTurn = -1;
  #writeHeld = false; // writes wait (for the turn's end, or for the session)
  #heldForSession = false; // they wait because the session said more are coming
  #options: ListenOptions; // the listener's, shared by its connections
  #drain = new DrainSignal();
  #stall: StallWatch | undefined; // closing with bytes queued
  #joinBuffer: Uint8Array | undefined; // held while the queue is not empty

  constructor(conn: DenoTcpConn, options: ListenOptions) {
    this.#conn = conn;
    this.#options = options;
    this.remoteAddress = { hostname: conn.remoteAddr.hostname, port: conn.remoteAddr.port };
    this.localAddress = { hostname: conn.localAddr.hostname, port: conn.localAddr.port };
  }

  start(events: ConnectionEvents): void {
    if (this.#events !== undefined) return;
    this.#events = events;
    const failure = this.#failure;
    if (failure !== undefined) {
      this.#failure = undefined;
      events.error(failure);
      return;
    }
    if (!this.#closed) this.#read(events);
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    const events = this.#events;
    if (events !== undefined && !this.#reading && !this.#closed && !this.#ended) this.#read(events);
  }

  /** The read loop: one read at a time, only while started and not paused. */
  async #read(events: ConnectionEvents): Promise<void> {
    this.#reading = true;
    try {
      const held = this.#held;
      if (held !== undefined) {
        this.#held = undefined;
        // Delivered on a later microtask, not inside the core's resume() call.
        await null;
        if (this.#closed) return;
        if (this.#paused) {
          this.#held = held;
          return;
        }
        events.data(held);
      }
      const conn = this.#conn;
      while (!this.#closed && !this.#paused) {
        let buffer = this.#readBuffer;
        if (buffer.length < READ_ROOM_MIN) buffer = new Uint8Array(this.#readSize);
        let read: number | null;
        try {
          read = await conn.read(buffer);
        } catch (error) {
          // A read cut short by our own close() (Interrupted) is no error.
          if (!this.#closed) this.#fail(error);
          return;
        }
        if (this.#closed) return;
        if (read === null) {
          this.#ended = true;
          events.end();
          return;
        }
        if (read === buffer.length) {
          if (this.#readSize < READ_SIZE_MAX) this.#readSize *= 2;
        } else if (read <= this.#readSize >>> 3 && this.#readSize > READ_SIZE_MIN) {
          this.#readSize >>>= 1;
        }
        this.#readBuffer = buffer.subarray(read);
        if (read === 0) continue;
        const chunk = buffer.subarray(0, read);
        if (this.#paused) {
          // Paused while this read was pending: no data until resume().
          this.#held = chunk;
          return;
        }
        events.data(chunk);
      }
    } finally {
      this.#reading = false;
    }
  }

  write(data: Uint8Array, more?: Uint8Array, moreToCome?: boolean): Promise<void> | undefined {
    if (this.#closed) return undefined;
    if (data.length > 0) {
      this.#queue.push(data);
      this.#queuedBytes += data.length;
    }
    if (more !== undefined && more.length > 0) {
      this.#queue.push(more);
      this.#queuedBytes += more.length;
    }
    const turn = writeWindow.turn();
    const first = this.#lastWriteTurn !== turn;
    this.#lastWriteTurn = turn;
    // Even a small write is only queued (conn.write is asynchronous); the
    // bound is on what waits in the queue.
    const over = this.#queuedBytes > this.#options.writeHighWaterMark;
    if (moreToCome && !over) {
      this.#heldForSession = true;
      this.#hold();
    } else if (
      first || over || this.#heldForSession || data.length + (more?.length ?? 0) >= WRITE_JOIN_MAX
    ) {
      this.flushBatch();
    } else {
      this.#hold();
    }
    return over ? this.#drain.wait() : undefined;
  }

  /** Holds the queue (the write loop stops) until flushed, at the latest when the turn ends. */
  #hold(): void {
    if (this.#writeHeld) return;
    this.#writeHeld = true;
    writeWindow.hold(this);
  }

  /** Writes what was held back: the turn ended, or the session caught up. */
  flushBatch(): void {
    this.#heldForSession = false;
    this.#writeHeld = false;
    this.#startFlush();
  }

  #startFlush(): void {
    if (this.#writing || this.#queuedBytes === 0 || this.#released) return;
    this.#writing = true;
    this.#flush();
  }

  /** The write loop: writes the queue out, one conn.write at a time. */
  async #flush(): Promise<void> {
    const conn = this.#conn;
    const queue = this.#queue;
    while (queue.length > 0 && !this.#released && !(this.#writeHeld && !this.#closed)) {
      // Packets relayed from one received chunk go back out as one view.
      if (queue.length > 1) mergeAdjacent(queue);
      // The rest of a partly written join is written as it is: joining it
      // again would copy the join buffer onto itself.
      const chunk = queue.length > 1 && queue[0].length < WRITE_JOIN_MAX && queue[0].buffer !== this.#joinBuffer?.buffer
        ? this.#join()
        : queue[0];
      let written: number;
      try {
        written = await conn.write(chunk);
      } catch (error) {
        // Interrupted by our own close, or a peer gone: EPIPE, ECONNRESET.
        this.#writing = false;
        if (this.#closed) this.#release();
        else this.#fail(error);
        return;
      }
      if (this.#released) break;
      this.#queuedBytes -= written;
      if (written < chunk.length) queue[0] = chunk.subarray(written);
      else queue.shift();
      if (this.#queuedBytes <= this.#options.writeHighWaterMark && this.#drain.waiting) this.#drain.wake();
    }
    this.#writing = false;
    if (queue.length === 0 && this.#joinBuffer !== undefined) {
      // No write holds it any more.
      if (joinPool.length < JOIN_POOL_MAX) joinPool.push(this.#joinBuffer);
      this.#joinBuffer = undefined;
    }
    if (this.#closed) this.#release();
  }

  /**
   * Joins whole chunks at the head of the queue into one of up to
   * WRITE_JOIN_MAX bytes; a packet header (a few bytes) also takes a body of
   * up to WRITE_JOIN_MAX along. Larger chunks go out as they are, uncopied.
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

  setNoDelay(noDelay: boolean): void {
    try {
      if (!this.#released) this.#conn.setNoDelay(noDelay);
    } catch {
      // The socket is gone (BadResource): nothing to set.
    }
  }

  // Deno has no setting for the idle delay before the first probe: the
  // system's default (net.ipv4.tcp_keepalive_time) applies.
  setKeepAlive(keepAlive: boolean, _initialDelayMs: number): void {
    try {
      if (!this.#released) this.#conn.setKeepAlive(keepAlive);
    } catch {
      // The socket is gone (BadResource): nothing to set.
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#held = undefined;
    this.#failure = undefined;
    // Writers waiting for the peer: the connection is closed.
    this.#drain.wake();
    this.#startFlush();
    if (!this.#writing) {
      this.#release();
      return;
    }
    // The core closes right after a handler's last send: let bytes already
    // queued reach the peer, as long as it keeps taking them; release()
    // cancels the pending write.
    this.#stall = new StallWatch(() => this.#queuedBytes, () => this.#release(), this.#options.lingerMs);
  }

  #fail(error: unknown): void {
    const events = this.#events;
    this.#closed = true;
    this.#release();
    if (events !== undefined) events.error(withCode(error));
    else this.#failure = withCode(error);
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#stall?.stop();
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#readBuffer = new Uint8Array(0);
    this.#joinBuffer = undefined;
    try {
      // Also cancels a pending read or write: they reject with Interrupted,
      // which the loops above take as the end.
      this.#conn.close();
    } catch {
      // Already closed (BadResource).
    }
    this.#drain.wake();
  }
}

class DenoListener implements Listener {
  readonly localAddress: SocketAddress;
  readonly refused = 0;
  readonly waiting = 0;
  #listener: DenoTcpListener;
  #options: ListenOptions;
  #accepting: Promise<DenoTcpConn> | undefined;
  #closed: Promise<void> | undefined;

  constructor(listener: DenoTcpListener, options: ListenOptions) {
    this.#listener = listener;
    this.#options = options;
    this.localAddress = { hostname: listener.addr.hostname, port: listener.addr.port };
  }

  async accept(): Promise<Connection | null> {
    if (this.#closed !== undefined) return null;
    // Accepting only now leaves every other connection in the kernel's backlog.
    const accepting = this.#listener.accept();
    this.#accepting = accepting;
    let conn: DenoTcpConn;
    try {
      conn = await accepting;
    } catch (error) {
      // A listener closed while accepting rejects with BadResource: the end,
      // not a failure.
      if (this.#closed !== undefined) return null;
      throw withCode(error);
    } finally {
      this.#accepting = undefined;
    }
    if (this.#closed !== undefined) {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
      return null;
    }
    return new DenoConnection(conn, this.#options);
  }

  close(): Promise<void> {
    return this.#closed ??= this.#close();
  }

  async #close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // Already closed (BadResource).
    }
    // A pending accept holds the socket (and the port) until Deno has
    // cancelled it; the port is free once that accept has settled.
    const accepting = this.#accepting;
    if (accepting !== undefined) await accepting.then(ignore, ignore);
  }
}

function ignore(): void {}

function listen(options: ListenOptions): Promise<Listener> {
  const { hostname, port, backlog } = options;
  const deno = (globalThis as unknown as { Deno?: DenoApi }).Deno;
  if (deno === undefined || typeof deno.listen !== "function") {
    return Promise.reject(
      new Error("The Deno adapter needs Deno (Deno.listen): use the adapter of the running runtime"),
    );
  }
  let listener: DenoTcpListener;
  try {
    // tcpBacklog came with denoland/deno#30541 (2025); older releases ignore
    // it and keep their own default.
    listener = deno.listen({ hostname, port, transport: "tcp", tcpBacklog: backlog });
  } catch (error) {
    const cause = withCode(error);
    return Promise.reject(listenFailure(hostname, port, cause.code, cause));
  }
  return Promise.resolve(new DenoListener(listener, options));
}

/**
 * The transport on Deno's `Deno.listen`; the default on Deno.
 *
 * @example Choosing the Deno sockets explicitly
 * ```ts
 * import { startServer } from "@pico/socket-server";
 * import { denoTransport } from "@pico/socket-server/deno";
 * const server = await startServer({
 *   port: 0, max: 5, transport: denoTransport, handler: () => {},
 * });
 * await server.stop();
 * ```
 */
export const denoTransport: Transport = {
  name: "deno",
  listen,
  // Deno reports a write done on the next turn of the event loop, however
  // fast the socket took it: a bound of a few 64 KiB packets lets a handler
  // send a chunk's packets in one turn instead of waiting a turn for each.
  writeHighWaterMark: 256 * 1024,
};
