/**
 * An in-memory transport for unit tests of the core: no sockets, no timers.
 * A test plays the peer: it connects, writes bytes, ends or resets, and reads
 * what the server sent.
 */

import type {
  Connection,
  ConnectionEvents,
  ListenOptions,
  Listener,
  SocketAddress,
  Transport,
} from "../../src/transport.ts";
import { AcceptQueue } from "../../src/accept_queue.ts";
import { setDefaultTransport } from "../../src/default_transport.ts";
import { concat } from "./bytes.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The client end of an in-memory connection. */
export class MemoryPeer {
  readonly connection: MemoryConnection;
  /** Bytes the server wrote, in order. */
  readonly received: Uint8Array[] = [];
  /** True if the listener refused the connection (its wait was full). */
  refused = false;
  #closed = false;
  #onClose: Array<() => void> = [];
  #onReceive: Array<() => void> = [];

  constructor(port: number, clientPort: number) {
    this.connection = new MemoryConnection(this, port, clientPort);
  }

  /** Sends bytes (or UTF-8 text) to the server. */
  write(data: Uint8Array | string): void {
    this.connection.deliver(typeof data === "string" ? encoder.encode(data) : data);
  }

  /** Closes the peer's side (end of stream). */
  end(): void {
    this.connection.deliverEnd();
  }

  /** Fails the connection as a reset by the peer would. */
  reset(): void {
    const error = new Error("Connection reset by peer") as Error & { code: string };
    error.code = "ECONNRESET";
    this.connection.deliverError(error);
  }

  /**
   * Makes the connection gone without an error, as Bun reports a reset (and
   * Node a socket destroyed without one).
   */
  lose(): void {
    this.connection.deliverLoss();
  }

  /** Everything the server wrote, as UTF-8 text. */
  text(): string {
    return decoder.decode(concat(this.received));
  }

  /** Everything the server wrote, as one buffer. */
  bytes(): Uint8Array {
    return concat(this.received);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Resolves once the server closed the connection. */
  whenClosed(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#onClose.push(resolve));
  }

  /** Resolves once the server has written at least `length` bytes. */
  async whenReceived(length: number): Promise<void> {
    while (concat(this.received).length < length) {
      if (this.#closed) throw new Error(`Closed after ${concat(this.received).length} of ${length} bytes`);
      await new Promise<void>((resolve) => {
        this.#onReceive.push(resolve);
        this.#onClose.push(resolve);
      });
    }
  }

  /** Called by the connection. */
  receive(data: Uint8Array): void {
    this.received.push(data.slice());
    for (const wake of this.#onReceive.splice(0)) wake();
  }

  /** Called by the connection. */
  markClosed(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const wake of this.#onClose.splice(0)) wake();
  }
}

/** The server end of an in-memory connection. */
export class MemoryConnection implements Connection {
  readonly remoteAddress: SocketAddress;
  readonly localAddress: SocketAddress;
  readonly peer: MemoryPeer;
  noDelay: boolean | undefined;
  keepAlive: boolean | undefined;
  paused = false;
  started = false;
  closeCalls = 0;
  /** What each data event answered: whether its chunk ended inside a packet. */
  dataAnswers: boolean[] = [];
  /** What each write was told: whether the session had more answers coming. */
  moreToCome: boolean[] = [];
  /** When set, write() reports backpressure with this promise. */
  writeBlocker: Promise<void> | undefined;
  #events: ConnectionEvents | undefined;
  // Resolved when the connection closes: a write waiting for writeBlocker
  // ends then, as an adapter's drain does.
  #whenClosed: Promise<void>;
  #markClosed!: () => void;
  #pending: Array<Uint8Array | "end" | "lost" | Error> = [];
  #closed = false;

  constructor(peer: MemoryPeer, port: number, clientPort: number) {
    this.peer = peer;
    this.remoteAddress = { hostname: "127.0.0.1", port: clientPort };
    this.localAddress = { hostname: "127.0.0.1", port };
    this.#whenClosed = new Promise((resolve) => (this.#markClosed = resolve));
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  start(events: ConnectionEvents): void {
    this.started = true;
    this.#events = events;
    this.#flush();
  }

  handOver(rest: Uint8Array): void {
    this.#events = undefined;
    if (rest.length > 0) this.#pending.unshift(rest);
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.#flush();
  }

  write(data: Uint8Array, more?: Uint8Array, moreToCome?: boolean): Promise<void> | undefined {
    if (this.#closed) return undefined;
    this.moreToCome.push(moreToCome === true);
    this.peer.receive(data);
    if (more !== undefined) this.peer.receive(more);
    return this.writeBlocker === undefined ? undefined : Promise.race([this.writeBlocker, this.#whenClosed]);
  }

  setNoDelay(noDelay: boolean): void {
    this.noDelay = noDelay;
  }

  setKeepAlive(keepAlive: boolean): void {
    this.keepAlive = keepAlive;
  }

  close(): void {
    this.closeCalls++;
    if (this.#closed) return;
    this.#closed = true;
    this.#pending = [];
    this.peer.markClosed();
    this.#markClosed();
  }

  deliver(data: Uint8Array): void {
    this.#pending.push(data);
    this.#flush();
  }

  deliverEnd(): void {
    this.#pending.push("end");
    this.#flush();
  }

  deliverLoss(): void {
    this.#pending.push("lost");
    this.#flush();
  }

  deliverError(error: Error): void {
    this.#pending.push(error);
    this.#flush();
  }

  #flush(): void {
    while (this.#events && !this.#closed && !this.paused && this.#pending.length > 0) {
      const item = this.#pending.shift()!;
      if (item === "end") this.#events.end();
      else if (item === "lost") {
        this.#closed = true;
        this.peer.markClosed();
        this.#events.lost();
        this.#markClosed();
      } else if (item instanceof Error) {
        this.#closed = true;
        this.peer.markClosed();
        this.#events.error(item);
        this.#markClosed();
      } else this.dataAnswers.push(this.#events.data(item) === true);
    }
  }
}

/** A listener whose connections come from {@linkcode MemoryTransport.connect}. */
export class MemoryListener implements Listener {
  readonly localAddress: SocketAddress;
  readonly transport: MemoryTransport;
  /** What the core asked to listen with. */
  readonly options: ListenOptions;
  acceptCalls = 0;
  // The same accept-ahead wait the Node and Bun adapters use.
  #queue: AcceptQueue<MemoryConnection>;

  constructor(transport: MemoryTransport, port: number, options: ListenOptions) {
    this.transport = transport;
    this.options = options;
    this.localAddress = { hostname: options.hostname, port };
    this.#queue = new AcceptQueue(options);
  }

  get refused(): number {
    return this.#queue.refused;
  }

  get waiting(): number {
    return this.#queue.waiting;
  }

  accept(): Promise<Connection | null> {
    this.acceptCalls++;
    if (!this.#queue.closed && this.transport.acceptFailures > 0) {
      this.transport.acceptFailures--;
      const code = this.transport.acceptFailureCode;
      const error = new Error(`accept failed: ${code}`) as Error & { code: string };
      error.code = code;
      return Promise.reject(error);
    }
    return this.#queue.take();
  }

  close(): Promise<void> {
    this.transport.listeners.delete(this.localAddress.port);
    this.#queue.close();
    return Promise.resolve();
  }

  /** Called by the transport. */
  arrive(peer: MemoryPeer): void {
    const refusedBefore = this.#queue.refused;
    this.#queue.offer(peer.connection);
    peer.refused = this.#queue.refused > refusedBefore;
  }
}

/** An in-memory network of listeners, keyed by port. */
export class MemoryTransport implements Transport {
  readonly name = "memory";
  readonly listeners: Map<number, MemoryListener> = new Map();
  /** How many coming accept() calls fail as the runtime's would, with `acceptFailureCode`. */
  acceptFailures = 0;
  acceptFailureCode = "EMFILE";
  #nextPort = 40000;
  #nextClientPort = 50000;

  listen(options: ListenOptions): Promise<Listener> {
    let port = options.port;
    if (port === 0) {
      while (this.listeners.has(this.#nextPort)) this.#nextPort++;
      port = this.#nextPort++;
    } else if (this.listeners.has(port)) {
      const error = new Error(`Cannot listen on ${options.hostname}:${port}: address already in use`) as
        & Error
        & { code: string };
      error.code = "EADDRINUSE";
      return Promise.reject(error);
    }
    const listener = new MemoryListener(this, port, options);
    this.listeners.set(port, listener);
    return Promise.resolve(listener);
  }

  /** Opens a connection to `port`; throws if nothing listens there. */
  connect(port: number): MemoryPeer {
    const listener = this.listeners.get(port);
    if (!listener) throw new Error(`Connection refused: nothing listens on ${port}`);
    const peer = new MemoryPeer(port, this.#nextClientPort++);
    listener.arrive(peer);
    return peer;
  }
}

/**
 * Runs `body` with `transport` as the default transport (what positional
 * start forms use), restoring the previous default afterwards.
 */
export async function withDefaultTransport<T>(transport: Transport, body: () => Promise<T>): Promise<T> {
  const previous = setDefaultTransport(() => Promise.resolve(transport));
  try {
    return await body();
  } finally {
    setDefaultTransport(previous);
  }
}
