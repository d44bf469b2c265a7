/**
 * The Deno adapter: pico-socket-server's transport on `Deno.listen`.
 *
 * Deno's API: https://docs.deno.com/api/deno/~/Deno.listen and
 * https://docs.deno.com/api/deno/~/Deno.Conn
 *
 * Deno accepts only when asked, so connections the core has not asked for
 * wait in the kernel's accept backlog, un-served, exactly as the seed's did;
 * `refused` and `waiting` stay `0` because the kernel does not count them.
 * Reads go straight from `conn.read()` into buffers handed to the core (no
 * Web Streams); writes go through a queue because `conn.write()` is
 * asynchronous and may write part of a buffer.
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

// Local shapes of the few Deno APIs used, so that no Deno types are needed.
interface DenoAddr {
  hostname: string;
  port: number;
}
interface DenoConn {
  readonly remoteAddr: DenoAddr;
  readonly localAddr: DenoAddr;
  read(buffer: Uint8Array): Promise<number | null>;
  write(data: Uint8Array): Promise<number>;
  close(): void;
  setNoDelay(noDelay?: boolean): void;
  setKeepAlive(keepAlive?: boolean): void;
}
interface DenoListener {
  readonly addr: DenoAddr;
  accept(): Promise<DenoConn>;
  close(): void;
}
interface DenoNamespace {
  listen(options: { hostname: string; port: number; transport: "tcp" }): DenoListener;
}

function deno(): DenoNamespace {
  const api = (globalThis as { Deno?: DenoNamespace }).Deno;
  if (api === undefined) throw new Error("The Deno adapter needs Deno: use the adapter of this runtime");
  return api;
}

// Deno's error classes by name, and the POSIX codes the core reports.
const CODES: Record<string, string> = {
  AddrInUse: "EADDRINUSE",
  PermissionDenied: "EACCES",
  NotCapable: "EACCES",
  AddrNotAvailable: "EADDRNOTAVAIL",
  ConnectionReset: "ECONNRESET",
  ConnectionAborted: "ECONNABORTED",
  BrokenPipe: "EPIPE",
  TimedOut: "ETIMEDOUT",
};
/** Gives a Deno error the POSIX `code` the core and users test. */
function withCode(error: unknown): Error & { code?: string } {
  const failure = (error instanceof Error ? error : new Error(String(error))) as Error & { code?: string };
  if (failure.code === undefined && CODES[failure.name] !== undefined) failure.code = CODES[failure.name];
  return failure;
}

// Each read gets a buffer of its own, handed to the core with the data. A
// small read leaves the rest of the buffer for the next read instead of
// wasting it; below this much room a fresh buffer is taken.
const READ_BUFFER_SIZE = 64 * 1024;
const MIN_READ_ROOM = 4 * 1024;
// Queued chunks up to this size are joined into one write: one op per flush.
const COALESCE_LIMIT = 64 * 1024;
const SMALL_HEAD = 64;
// How long close() waits for queued bytes to reach a peer that is not
// reading before it gives up and closes anyway.
const CLOSE_FLUSH_TIMEOUT_MS = 5_000;

class DenoConnection implements Connection {
  readonly remoteAddress: SocketAddress;
  readonly localAddress: SocketAddress;
  #conn: DenoConn;
  #events: ConnectionEvents | undefined;
  #closed = false; // close() was called: no more events
  #released = false; // the Deno resource is closed
  #paused = false;
  #reading = false;
  #inputEnded = false;
  #readBuffer: Uint8Array = new Uint8Array(0);
  #writeQueue: Uint8Array[] = [];
  #queuedBytes = 0;
  #writing = false;
  #writeHighWaterMark: number;
  #drain = new DrainSignal();

  constructor(conn: DenoConn, writeHighWaterMark: number) {
    this.#conn = conn;
    this.#writeHighWaterMark = writeHighWaterMark;
    this.remoteAddress = { hostname: conn.remoteAddr.hostname, port: conn.remoteAddr.port };
    this.localAddress = { hostname: conn.localAddr.hostname, port: conn.localAddr.port };
  }

  start(events: ConnectionEvents): void {
    if (this.#closed || this.#events !== undefined) return;
    this.#events = events;
    this.#readLoop();
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#readLoop();
  }

  async #readLoop(): Promise<void> {
    if (this.#reading || this.#events === undefined) return;
    const events = this.#events;
    this.#reading = true;
    try {
      while (!this.#closed && !this.#paused && !this.#inputEnded) {
        if (this.#readBuffer.length < MIN_READ_ROOM) this.#readBuffer = new Uint8Array(READ_BUFFER_SIZE);
        const buffer = this.#readBuffer;
        let read: number | null;
        try {
          read = await this.#conn.read(buffer);
        } catch (error) {
          // A read cut short by our own close() is not an error.
          if (!this.#closed) this.#fail(error);
          return;
        }
        if (this.#closed) return;
        if (read === null) {
          this.#inputEnded = true;
          events.end();
          return;
        }
        this.#readBuffer = buffer.subarray(read);
        events.data(buffer.subarray(0, read));
      }
    } finally {
      this.#reading = false;
    }
  }

  write(data: Uint8Array, more?: Uint8Array): Promise<void> | undefined {
    if (this.#closed) return undefined;
    this.#writeQueue.push(data);
    this.#queuedBytes += data.length;
    if (more !== undefined) {
      this.#writeQueue.push(more);
      this.#queuedBytes += more.length;
    }
    if (!this.#writing) {
      // Started after the current task, so that the frames of one send (a
      // header and its body) leave in one write op.
      this.#writing = true;
      queueMicrotask(() => this.#flush());
    }
    if (this.#queuedBytes <= this.#writeHighWaterMark) return undefined;
    return this.#drain.wait();
  }

  async #flush(): Promise<void> {
    const queue = this.#writeQueue;
    while (queue.length > 0 && !this.#released) {
      let chunk = queue[0];
      if (queue.length > 1 && chunk.length < COALESCE_LIMIT) chunk = this.#coalesce();
      let written: number;
      try {
        written = await this.#conn.write(chunk);
      } catch (error) {
        this.#writing = false;
        this.#writeQueue = [];
        this.#queuedBytes = 0;
        if (!this.#closed) this.#fail(error);
        else this.#release();
        this.#drain.wake();
        return;
      }
      this.#queuedBytes -= written;
      if (written < chunk.length) queue[0] = chunk.subarray(written);
      else queue.shift();
      if (this.#queuedBytes <= this.#writeHighWaterMark) this.#drain.wake();
    }
    this.#writing = false;
    if (this.#closed) this.#release();
  }

  /** Joins small queued chunks at the head of the queue into one. */
  #coalesce(): Uint8Array {
    const queue = this.#writeQueue;
    let count = 1;
    let length = queue[0].length;
    // A small head (a packet header) joins the chunk after it whatever that
    // one's size: copying it costs less than a write op of its own.
    if (length < SMALL_HEAD) {
      count = 2;
      length += queue[1].length;
    }
    while (count < queue.length && length + queue[count].length <= COALESCE_LIMIT) {
      length += queue[count].length;
      count++;
    }
    if (count < 2) return queue[0];
    const joined = new Uint8Array(length);
    let offset = 0;
    for (let i = 0; i < count; i++) {
      joined.set(queue[i], offset);
      offset += queue[i].length;
    }
    queue.splice(0, count, joined);
    return joined;
  }

  setNoDelay(noDelay: boolean): void {
    if (!this.#released) this.#conn.setNoDelay(noDelay);
  }

  // Deno has no setting for the delay before the first probe: the system's
  // default applies.
  setKeepAlive(keepAlive: boolean, _initialDelayMs: number): void {
    if (!this.#released) this.#conn.setKeepAlive(keepAlive);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#writing) {
      this.#release();
      return;
    }
    // Let bytes already written reach the peer, within a bound.
    const timer = setTimeout(() => this.#release(), CLOSE_FLUSH_TIMEOUT_MS);
    (timer as { unref?: () => void }).unref?.();
  }

  #fail(error: unknown): void {
    const events = this.#events;
    this.#closed = true;
    this.#release();
    events?.error(withCode(error));
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#writeQueue = [];
    this.#queuedBytes = 0;
    try {
      this.#conn.close();
    } catch {
      // Already closed by Deno (e.g. after a reset).
    }
    this.#drain.wake();
  }

}

class DenoTcpListener implements Listener {
  readonly localAddress: SocketAddress;
  readonly refused = 0;
  readonly waiting = 0;
  #listener: DenoListener;
  #writeHighWaterMark: number;
  #closed: Promise<void> | undefined;

  constructor(listener: DenoListener, writeHighWaterMark: number) {
    this.#listener = listener;
    this.#writeHighWaterMark = writeHighWaterMark;
    this.localAddress = { hostname: listener.addr.hostname, port: listener.addr.port };
  }

  async accept(): Promise<Connection | null> {
    if (this.#closed !== undefined) return null;
    let conn: DenoConn;
    try {
      conn = await this.#listener.accept();
    } catch (error) {
      // A listener closed while accepting rejects with BadResource or
      // Interrupted: that is the end, not a failure.
      if (this.#closed !== undefined) return null;
      throw withCode(error);
    }
    if (this.#closed !== undefined) {
      conn.close();
      return null;
    }
    return new DenoConnection(conn, this.#writeHighWaterMark);
  }

  close(): Promise<void> {
    this.#closed ??= new Promise((resolve) => {
      try {
        this.#listener.close();
      } catch {
        // Already closed.
      }
      // A pending accept holds the socket until it is cancelled, which
      // happens on the next turn of the event loop.
      setTimeout(resolve, 0);
    });
    return this.#closed;
  }
}

function listen(options: ListenOptions): Promise<Listener> {
  const { hostname, port } = options;
  let listener: DenoListener;
  try {
    listener = deno().listen({ hostname, port, transport: "tcp" });
  } catch (error) {
    const cause = withCode(error);
    return Promise.reject(listenFailure(hostname, port, cause.code, cause));
  }
  return Promise.resolve(new DenoTcpListener(listener, options.writeHighWaterMark));
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
export const denoTransport: Transport = { name: "deno", listen };
