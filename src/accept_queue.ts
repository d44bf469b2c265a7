/**
 * The accept-ahead wait of runtimes that accept connections by themselves
 * (Node, Bun): connections the core has not asked for yet wait here, in
 * arrival order and unread, at most `backlog` of them; past that they are
 * closed and counted as refused. Used by adapters; runtime-neutral.
 *
 * @module
 */

import type { Connection, Listener, ListenOptions, SocketAddress } from "./transport.ts";

/** What the queue needs of a waiting connection. */
export interface Closable {
  readonly remoteAddress: SocketAddress;
  close(): void;
}

// Listening on every address, the address a connection arrived on is its own.
const WILDCARDS = new Set(["0.0.0.0", "::", ""]);

/**
 * The local address of every connection a listener bound to one address
 * accepts (that address and port), as one frozen object they can share,
 * which saves a getsockname call per connection; `undefined` for a listener
 * on every address, whose connections must each be asked.
 */
export function acceptedLocalAddress(listening: SocketAddress): SocketAddress | undefined {
  if (WILDCARDS.has(listening.hostname)) return undefined;
  return Object.freeze({ hostname: listening.hostname, port: listening.port });
}

type Acceptor<C> = { resolve: (connection: C | null) => void; reject: (error: Error) => void };

/** Connections accepted by the runtime, waiting for the core to take them. */
export class AcceptQueue<C extends Closable> {
  #backlog: number;
  #onRefused: ((remoteAddress: SocketAddress) => void) | undefined;
  // `#head` indexes the oldest waiting connection: no shift() per accept.
  #waiting: C[] = [];
  #head = 0;
  #acceptor: Acceptor<C> | undefined;
  #failure: Error | undefined;
  #refused = 0;
  #closed = false;

  constructor(options: ListenOptions) {
    this.#backlog = options.backlog;
    this.#onRefused = options.onRefused;
  }

  /** Connections refused because `backlog` were waiting. */
  get refused(): number {
    return this.#refused;
  }

  /** Connections waiting to be taken. */
  get waiting(): number {
    return this.#waiting.length - this.#head;
  }

  /**
   * Whether a take() is pending: the next connection offered goes to the
   * core at once, which starts it before the runtime can deliver its data.
   */
  get taking(): boolean {
    return this.#acceptor !== undefined;
  }

  /** Whether {@linkcode AcceptQueue.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** A connection the runtime accepted: handed out, held, or refused. */
  offer(connection: C): void {
    if (this.#closed) {
      connection.close();
      return;
    }
    const acceptor = this.#acceptor;
    if (acceptor !== undefined) {
      this.#acceptor = undefined;
      acceptor.resolve(connection);
      return;
    }
    if (this.waiting >= this.#backlog) {
      this.#refused++;
      connection.close();
      this.#onRefused?.(connection.remoteAddress);
      return;
    }
    this.#waiting.push(connection);
  }

  /** The runtime failed to accept: the pending (or next) take rejects. */
  fail(error: Error): void {
    const acceptor = this.#acceptor;
    if (acceptor === undefined) {
      this.#failure = error;
      return;
    }
    this.#acceptor = undefined;
    acceptor.reject(error);
  }

  /** The next connection in arrival order, or `null` once closed. */
  take(): Promise<C | null> {
    if (this.#closed) return Promise.resolve(null);
    if (this.#failure !== undefined) {
      const failure = this.#failure;
      this.#failure = undefined;
      return Promise.reject(failure);
    }
    if (this.#head < this.#waiting.length) {
      const connection = this.#waiting[this.#head];
      this.#waiting[this.#head++] = undefined as unknown as C;
      if (this.#head === this.#waiting.length) {
        this.#waiting = [];
        this.#head = 0;
      }
      return Promise.resolve(connection);
    }
    return new Promise((resolve, reject) => {
      this.#acceptor = { resolve, reject };
    });
  }

  /** Closes every waiting connection; a pending take resolves `null`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (let i = this.#head; i < this.#waiting.length; i++) this.#waiting[i].close();
    this.#waiting = [];
    this.#head = 0;
    const acceptor = this.#acceptor;
    this.#acceptor = undefined;
    acceptor?.resolve(null);
  }
}

/**
 * A listener whose connections wait in an {@linkcode AcceptQueue}: what an
 * adapter that accepts ahead of the core shares. `refused`, `waiting` and
 * `accept()` come from the queue; the adapter offers it connections and
 * closes it with the listener.
 */
export abstract class QueueListener<C extends Closable & Connection> implements Listener {
  abstract readonly localAddress: SocketAddress;
  /** Where accepted connections wait for the core. */
  readonly queue: AcceptQueue<C>;

  constructor(queue: AcceptQueue<C>) {
    this.queue = queue;
  }

  get refused(): number {
    return this.queue.refused;
  }

  get waiting(): number {
    return this.queue.waiting;
  }

  accept(): Promise<Connection | null> {
    return this.queue.take();
  }

  abstract close(): Promise<void>;
}
