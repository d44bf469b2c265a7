// Bun's TCP API: https://bun.sh/docs/api/tcp

/**
 * The Bun adapter: pico-socket-server's transport on `Bun.listen`.
 *
 * Bun accepts connections by itself and calls `open` for each. Connections
 * the core has not asked for yet are paused at once (`socket.pause()`, so
 * their bytes stay unread in the kernel) and wait here in arrival order; past
 * `backlog` of them new ones are closed and counted as refused. One the core
 * is already waiting for goes to it at once, unpaused.
 *
 * Bun's `socket.write()` buffers nothing: it returns how many bytes the
 * kernel took, maybe fewer than given. Each connection therefore keeps its
 * own write queue, flushed from Bun's `drain` handler.
 *
 * @example Serving with the Bun adapter explicitly
 * ```ts
 * import { startServer } from "@pico/socket-server";
 * import { bunTransport } from "@pico/socket-server/bun";
 * const server = await startServer({
 *   port: 0,
 *   max: 10,
 *   transport: bunTransport,
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
import { AcceptQueue, acceptedLocalAddress } from "../src/accept_queue.ts";
import { DrainSignal } from "../src/drain_signal.ts";
import { listenFailure } from "../src/listen_failure.ts";
import { StallWatch } from "../src/stall_watch.ts";
import { type Batched, joinHead, mergeAdjacent, WriteWindow } from "../src/write_window.ts";

// Local shapes of the few Bun APIs used, so that no Bun types are needed
// (the package type-checks under Deno and Node too).
interface BunSocket {
  data: BunConnection | undefined;
  // After the socket closed, Bun reports these as undefined.
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  /** Bytes the kernel took (maybe fewer than given), or -1 once closed. */
  write(data: Uint8Array): number;
  /** With nothing left unsent (Bun buffers nothing): FIN, then close. */
  end(): unknown;
  /** Closes at once with a reset. */
  terminate(): unknown;
  pause(): unknown;
  resume(): unknown;
  setNoDelay?(noDelay: boolean): unknown;
  setKeepAlive?(enable: boolean, initialDelayMs: number): unknown;
}
interface BunSocketHandler {
  open(socket: BunSocket): void;
  data(socket: BunSocket, data: Uint8Array): void;
  drain(socket: BunSocket): void;
  end(socket: BunSocket): void;
  close(socket: BunSocket, error?: Error): void;
  error(socket: BunSocket, error: Error): void;
}
interface BunTcpListener {
  readonly hostname: string;
  readonly port: number;
  stop(closeActiveConnections?: boolean): void;
  getsockname?(out: { address?: string; port?: number }): void;
}
interface BunApi {
  listen(options: {
    hostname: string;
    port: number;
    allowHalfOpen: boolean;
    socket: BunSocketHandler;
  }): BunTcpListener;
}

// Queued chunks smaller than JOIN_CHUNK_MAX are joined into writes of up to
// WRITE_JOIN_MAX bytes when the queue is flushed: one send for the many small
// packets a handler answers in one turn, or that queue under backpressure.
// Larger chunks go out as they are, uncopied.
const WRITE_JOIN_MAX = 64 * 1024;
const JOIN_CHUNK_MAX = 16 * 1024;

// A connection's writes in a turn, but for a first one made while its
// session has nothing more to answer, wait in its queue and leave together
// (Bun has no writev): small ones joined, packets relayed from one received
// chunk merged back into one view. They leave when the turn ends, or as soon
// as the session has caught up. Up to HOLD_MAX bytes held that way do not
// count as backpressure: the writer would otherwise wait for the turn's end
// after every large packet.
const writeWindow = new WriteWindow(setImmediate);
const HOLD_MAX = 1024 * 1024;

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

class BunConnection implements Connection, Batched {
  readonly remoteAddress: SocketAddress;
  readonly localAddress: SocketAddress;
  #socket: BunSocket;
  #options: ListenOptions; // the listener's, shared by its connections
  #events: ConnectionEvents | undefined;
  #closed = false; // close() was called or an error delivered: no more events
  #gone = false; // Bun closed the socket
  #paused = false; // the core asked for no data
  #reading = false; // the Bun socket is resumed
  #ended = false; // end of stream seen (delivered or held)
  // What arrived while the core could not take it (before start(), while
  // paused): delivered, in order, on start() and resume(). Made on first use,
  // since most connections never need it.
  #held: Uint8Array[] | undefined;
  #heldEnd = false;
  #heldLoss = false; // Bun closed the socket before start(), with no error
  #failure: Error | undefined; // a failure before start()
  #flushScheduled = false;
  #queue: Uint8Array[] | undefined; // unsent bytes; made on first use
  #queuedBytes = 0;
  #drain: DrainSignal | undefined; // made on first backpressure
  #lastWriteTurn = -1;
  #heldBytes = 0; // queued this turn, to be written when it ends
  #heldForSession = false; // held because the session had more to answer
  #stall: StallWatch | undefined; // closing with bytes queued

  /**
   * @param local The listener's own address when it is bound to one (see
   * acceptedLocalAddress), else asked of the socket.
   * @param waits Whether the connection waits for the core to take it:
   * then it is unread until its session starts. (A paused Bun socket still
   * reports a reset, and may hand over what it read just before; that is
   * held.) One handed to a waiting core is started before Bun can read it,
   * so pausing it would only cost system calls.
   */
  constructor(socket: BunSocket, options: ListenOptions, local: SocketAddress | undefined, waits: boolean) {
    this.#socket = socket;
    this.#options = options;
    this.remoteAddress = { hostname: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    this.localAddress = local ?? { hostname: socket.localAddress ?? "", port: socket.localPort ?? 0 };
    if (waits) socket.pause();
    else this.#reading = true;
  }

  start(events: ConnectionEvents): void {
    if (this.#events !== undefined || this.#closed) return;
    this.#events = events;
    if (this.#failure !== undefined || this.#held !== undefined || this.#heldEnd || this.#heldLoss) {
      this.#scheduleFlush();
    }
    if (!this.#paused) this.#read(true);
  }

  // Lazily: Bun's reads stop only once data arrives while paused. A session
  // pauses when one large chunk fills its queue and resumes as soon as its
  // handler takes the packets, usually before Bun reads again; stopping and
  // restarting the socket each time would cost two system calls for nothing.
  pause(): void {
    if (this.#paused || this.#closed) return;
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused || this.#closed) return;
    this.#paused = false;
    if (this.#events === undefined) return;
    if (this.#held !== undefined || this.#heldEnd) this.#scheduleFlush();
    this.#read(true);
  }

  write(data: Uint8Array, more?: Uint8Array, moreToCome?: boolean): Promise<void> | undefined {
    if (this.#closed) return undefined;
    if (this.#gone) {
      this.#lose();
      return undefined;
    }
    const queue = this.#queue;
    const turn = writeWindow.turn();
    const size = data.length + (more?.length ?? 0);
    // Writes wait while the session has more received packets to answer;
    // then, once it has caught up, all leave at once: the answers to one
    // received chunk in one send (its packets relayed as one view). Else a
    // connection's first write of a turn goes out at once and later ones
    // wait for the turn's end.
    const held = moreToCome === true || (this.#lastWriteTurn === turn && !this.#heldForSession);
    this.#lastWriteTurn = turn;
    if (held || (queue !== undefined && queue.length > 0)) {
      if (held) {
        if (this.#heldBytes === 0) writeWindow.hold(this);
        this.#heldBytes += size;
      }
      this.#enqueue(data);
      if (more !== undefined) this.#enqueue(more);
      if (moreToCome === true) {
        this.#heldForSession = true;
      } else if (this.#heldForSession) {
        this.flushBatch();
      }
      return this.#backpressure();
    }
    const written = this.#socket.write(data);
    if (written === data.length) return undefined;
    if (written < 0) {
      // Closed: Bun's close handler would tell why, later.
      this.#lose();
      return undefined;
    }
    this.#enqueue(data.subarray(written));
    return this.#backpressure();
  }

  setNoDelay(noDelay: boolean): void {
    if (!this.#gone) this.#socket.setNoDelay?.(noDelay);
  }

  setKeepAlive(keepAlive: boolean, initialDelayMs: number): void {
    // Bun's initialDelay is in milliseconds, like the contract's.
    if (!this.#gone) this.#socket.setKeepAlive?.(keepAlive, initialDelayMs);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#held = undefined;
    this.#heldEnd = false;
    this.#failure = undefined;
    // Writers waiting for the queue to drain: the connection has closed.
    this.#drain?.wake();
    if (this.#gone) return;
    const queue = this.#queue;
    if (queue === undefined || queue.length === 0) {
      this.#socket.end();
      return;
    }
    // The core closes right after a handler's last send: let the queued
    // bytes reach the peer, as long as it keeps taking them. Reading (and
    // dropping) meanwhile keeps a peer that is blocked sending able to read.
    this.#read(true);
    this.#stall = new StallWatch(() => this.#queuedBytes, () => this.#socket.terminate(), this.#options.lingerMs);
  }

  // --- Called by the socket handlers.

  onData(chunk: Uint8Array): void {
    if (this.#closed) return;
    // Bun hands each read over in a buffer of its own (it does not reuse
    // them), so the chunk can go to the core as it is.
    const events = this.#events;
    if (events === undefined || this.#paused || this.#held !== undefined) {
      (this.#held ??= []).push(chunk);
      if (events === undefined || this.#paused) this.#read(false);
      return;
    }
    events.data(chunk);
  }

  onEnd(): void {
    if (this.#closed || this.#ended) return;
    this.#ended = true;
    const events = this.#events;
    if (events === undefined || this.#held !== undefined) {
      this.#heldEnd = true;
      return;
    }
    events.end();
  }

  /** Writes what was held back: the turn ended, or the session caught up. */
  flushBatch(): void {
    this.#heldForSession = false;
    this.#heldBytes = 0;
    if (!this.#gone) this.onDrain();
  }

  onDrain(): void {
    const queue = this.#queue;
    if (queue === undefined || queue.length === 0) return;
    const socket = this.#socket;
    while (queue.length > 0) {
      if (queue.length > 1) mergeAdjacent(queue);
      const chunk = queue.length > 1 && queue[0].length < JOIN_CHUNK_MAX ? this.#joinSmall(queue) : queue[0];
      const written = socket.write(chunk);
      if (written < 0) {
        // Closed: Bun's close handler would tell why, later.
        this.#lose();
        this.#drain?.wake();
        return;
      }
      this.#queuedBytes -= written;
      if (written < chunk.length) {
        queue[0] = chunk.subarray(written);
        break;
      }
      queue.shift();
    }
    if (this.#closed) {
      if (queue.length === 0) {
        this.#stall?.stop();
        socket.end();
      }
      return;
    }
    if (this.#queuedBytes <= this.#options.writeHighWaterMark) this.#drain?.wake();
  }

  onClose(error: Error | undefined): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#stall?.stop();
    this.#queue = undefined;
    this.#queuedBytes = 0;
    // A failure comes as the close handler's error (code "ECONNRESET"); Bun
    // reports a peer's reset also as an end of stream, then a close without
    // one.
    if (error !== undefined) this.onError(error);
    else this.#lose();
    this.#drain?.wake();
  }

  /**
   * Bun closed the socket without an error and the core has not been told:
   * it gets what was held for it (whether paused or not: nothing else will
   * come), then the loss. Before start(), that waits for start().
   */
  #lose(): void {
    if (this.#closed) return;
    const events = this.#events;
    if (events === undefined) {
      this.#heldLoss = true;
      return;
    }
    const held = this.#held;
    this.#held = undefined;
    this.#heldEnd = false;
    if (held !== undefined) {
      for (const chunk of held) {
        if (this.#closed) return;
        events.data(chunk);
      }
      if (this.#closed) return;
    }
    this.#closed = true;
    events.lost();
  }

  /** A socket failure, or an exception thrown by a handler Bun called. */
  onError(error: Error): void {
    if (this.#closed) return;
    const failure = asError(error);
    const events = this.#events;
    if (events === undefined) {
      // Reported by start(); the socket is already gone or going.
      this.#failure ??= failure;
      this.#held = undefined;
      this.#heldEnd = false;
      return;
    }
    this.#fail(events, failure);
  }

  // --- Internals.

  #fail(events: ConnectionEvents, failure: Error): void {
    this.#closed = true;
    this.#held = undefined;
    this.#heldEnd = false;
    this.#failure = undefined;
    this.#drain?.wake();
    if (!this.#gone) this.#socket.terminate();
    events.error(failure);
  }

  /** Resumes (`true`) or pauses (`false`) Bun's reads, once per change. */
  #read(on: boolean): void {
    if (this.#gone || this.#reading === on) return;
    this.#reading = on;
    if (on) this.#socket.resume();
    else this.#socket.pause();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    // On a microtask: not inside the core's start() or resume() call, and
    // still before Bun can deliver anything newer (that waits in #held).
    queueMicrotask(() => this.#flush());
  }

  /** Delivers what was held, in order, while the core takes it. */
  #flush(): void {
    this.#flushScheduled = false;
    const events = this.#events;
    if (events === undefined || this.#closed) return;
    const failure = this.#failure;
    if (failure !== undefined) {
      this.#fail(events, failure);
      return;
    }
    if (this.#heldLoss) {
      this.#lose();
      return;
    }
    const held = this.#held;
    if (held !== undefined) {
      while (held.length > 0) {
        if (this.#closed || this.#paused) return;
        events.data(held.shift()!);
      }
      if (this.#held === held) this.#held = undefined;
    }
    if (this.#heldEnd && !this.#closed && this.#held === undefined) {
      this.#heldEnd = false;
      events.end();
    }
  }

  #enqueue(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    (this.#queue ??= []).push(chunk);
    this.#queuedBytes += chunk.length;
  }

  #backpressure(): Promise<void> | undefined {
    const held = Math.min(this.#heldBytes, HOLD_MAX);
    if (this.#queuedBytes - held <= this.#options.writeHighWaterMark) return undefined;
    return (this.#drain ??= new DrainSignal()).wait();
  }

  /**
   * Joins the small chunks at the head of the queue into one of up to
   * WRITE_JOIN_MAX bytes, stopping before a large chunk.
   */
  #joinSmall(queue: Uint8Array[]): Uint8Array {
    let count = 0;
    let length = 0;
    while (count < queue.length) {
      const next = queue[count].length;
      if (next >= JOIN_CHUNK_MAX || length + next > WRITE_JOIN_MAX) break;
      length += next;
      count++;
    }
    if (count < 2) return queue[0];
    return joinHead(queue, count, length);
  }
}

/** Bun's handlers for one listener: shared by all its sockets. */
function handlers(
  queue: AcceptQueue<BunConnection>,
  options: ListenOptions,
  bound: { local: SocketAddress | undefined },
): BunSocketHandler {
  return {
    open(socket) {
      const connection = new BunConnection(socket, options, bound.local, !queue.taking);
      socket.data = connection;
      // Handed out, held, or (past backlog, or after close) closed.
      queue.offer(connection);
    },
    data: (socket, chunk) => socket.data?.onData(chunk),
    drain: (socket) => socket.data?.onDrain(),
    end: (socket) => socket.data?.onEnd(),
    close: (socket, error) => socket.data?.onClose(error),
    // Bun calls it when one of the handlers above threw.
    error: (socket, error) => socket.data?.onError(error),
  };
}

class BunListener implements Listener {
  readonly localAddress: SocketAddress;
  #server: BunTcpListener;
  #queue: AcceptQueue<BunConnection>;
  #closed: Promise<void> | undefined;

  constructor(server: BunTcpListener, queue: AcceptQueue<BunConnection>, bound: { local: SocketAddress | undefined }) {
    this.#server = server;
    this.#queue = queue;
    // getsockname gives the address bound (e.g. 127.0.0.1 for "localhost");
    // `hostname` is only the name asked for.
    const address: { address?: string; port?: number } = {};
    try {
      server.getsockname?.(address);
    } catch {
      // Not available: the name and port Bun reports do.
    }
    this.localAddress = { hostname: address.address ?? server.hostname, port: address.port ?? server.port };
    // Known before Bun can call open() (which waits for the event loop).
    bound.local = acceptedLocalAddress(this.localAddress);
  }

  get refused(): number {
    return this.#queue.refused;
  }

  get waiting(): number {
    return this.#queue.waiting;
  }

  // Bun reports no failed accepts to JavaScript, so this never rejects.
  accept(): Promise<Connection | null> {
    return this.#queue.take();
  }

  close(): Promise<void> {
    if (this.#closed === undefined) {
      // stop(false) closes the listening socket at once, so the port can be
      // bound again when this resolves; sessions are the core's to close.
      try {
        this.#server.stop(false);
      } catch {
        // Already stopped.
      }
      this.#queue.close();
      this.#closed = Promise.resolve();
    }
    return this.#closed;
  }
}

/** Bun's listen error as the core reports it: a POSIX code and a clear message. */
function listenError(hostname: string, port: number, error: unknown): Error {
  const { code, errno } = (error ?? {}) as { code?: unknown; errno?: unknown };
  if (typeof code === "string") return listenFailure(hostname, port, code, error);
  // Bun throws a bare "Failed to listen at <host>" (no code, no errno) only
  // when the host name does not resolve: Node's ENOTFOUND.
  if (errno === undefined && error instanceof Error) {
    return listenFailure(hostname, port, "ENOTFOUND", new Error("host name not found", { cause: error }));
  }
  return listenFailure(hostname, port, undefined, error);
}

function listen(options: ListenOptions): Promise<Listener> {
  const Bun = (globalThis as { Bun?: BunApi }).Bun;
  if (Bun === undefined || typeof Bun.listen !== "function") {
    return Promise.reject(new Error("The Bun adapter needs Bun (Bun.listen): use the adapter of the running runtime"));
  }
  const { hostname, port } = options;
  const queue = new AcceptQueue<BunConnection>(options);
  const bound: { local: SocketAddress | undefined } = { local: undefined };
  let server: BunTcpListener;
  try {
    // allowHalfOpen: a peer's FIN ends its input only, so that the session
    // can still answer; the core closes the connection when it is done.
    server = Bun.listen({ hostname, port, allowHalfOpen: true, socket: handlers(queue, options, bound) });
  } catch (error) {
    return Promise.reject(listenError(hostname, port, error));
  }
  return Promise.resolve(new BunListener(server, queue, bound));
}

/**
 * The transport on Bun's `Bun.listen`; the default on Bun.
 *
 * @example Choosing the Bun sockets explicitly
 * ```ts
 * import { startServer } from "@pico/socket-server";
 * import { bunTransport } from "@pico/socket-server/bun";
 * const server = await startServer({
 *   port: 0, max: 5, transport: bunTransport, handler: () => {},
 * });
 * await server.stop();
 * ```
 */
export const bunTransport: Transport = { name: "bun", listen };
