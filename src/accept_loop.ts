/**
 * The accept loop: takes one connection at a time from the server's
 * listener while a session slot is free, skips failures that belong to one
 * connection and backs off on failures that would recur. Runtime-neutral.
 *
 * @module
 */

import type { Connection, Listener } from "./transport.ts";

/**
 * How long to wait before accepting again after the runtime failed to
 * accept for want of resources: doubling from the first to the last while
 * failures repeat.
 */
export const ACCEPT_RETRY_FIRST_MS = 50;
export const ACCEPT_RETRY_LAST_MS = 1000;

/**
 * Consecutive failures skipped at once before one waits for a timer: a
 * transport that failed every accept at once would otherwise keep the event
 * loop in promise callbacks.
 */
export const ACCEPT_SKIPS_PER_TURN = 64;

/**
 * Accept failures that belong to one connection: reset or aborted while it
 * waited, refused by a firewall rule (EPERM), or a network error Linux
 * passes on from the new socket (accept(2)). The next connection is taken at
 * once. Any other failure, foremost a want of descriptors, buffers or memory
 * (EMFILE, ENFILE, ENOBUFS, ENOMEM), would recur at once: it is reported and
 * the loop backs off.
 */
const CONNECTION_ERRORS = new Set([
  "ECONNABORTED",
  "ECONNRESET",
  "ENOTCONN",
  "EPROTO",
  "EPERM",
  "ETIMEDOUT",
  "ENETDOWN",
  "ENETUNREACH",
  "EHOSTDOWN",
  "EHOSTUNREACH",
  "ENONET",
  "ENOPROTOOPT",
  "EOPNOTSUPP",
]);

function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && CONNECTION_ERRORS.has(code);
}

/** What the loop accepts from: a listener, or a runtime's own accept. */
export type Acceptor = Pick<Listener, "accept">;

/** What the loop asks of the server (or adapter) it accepts for. */
export interface AcceptHost {
  /** The listener to accept from, or undefined while none is to be accepted from. */
  listener(): Acceptor | undefined;
  /** Whether a session slot is free. */
  hasRoom(): boolean;
  /** A connection accepted from `listener` (maybe one no longer current). */
  accepted(connection: Connection, listener: Acceptor): void;
  /** The runtime cannot accept for want of a resource (or for a reason unknown). */
  failed(error: unknown): void;
  /** One connection was lost before it could be accepted (skipped, counted). */
  skipped?(error: unknown): void;
}

/** Timers, injectable for tests. */
export interface AcceptTimers {
  setTimeout(callback: () => void, delayMs: number): unknown;
}

/**
 * One server's accept loop. `idle`: nothing pending; `accepting`: an
 * accept() is pending on `#from`; `backingOff`: a timer will accept again,
 * nothing else does meanwhile.
 */
export class AcceptLoop {
  #host: AcceptHost;
  #timers: AcceptTimers;
  #state: "idle" | "accepting" | "backingOff" = "idle";
  #from: Acceptor | undefined;
  #retryMs = 0; // the last back-off's pause; 0 after a success
  #skips = 0; // consecutive failures of one connection
  #connectionErrors = 0;

  constructor(host: AcceptHost, timers: AcceptTimers = globalThis) {
    this.#host = host;
    this.#timers = timers;
  }

  /** Failures of one connection skipped so far (`status().acceptErrors`). */
  get connectionErrors(): number {
    return this.#connectionErrors;
  }

  /** Takes the next connection if a slot is free and nothing is pending. */
  next(): void {
    if (this.#state !== "idle" || !this.#host.hasRoom()) return;
    const listener = this.#host.listener();
    if (listener === undefined) return;
    this.#state = "accepting";
    this.#from = listener;
    listener.accept().then(this.#onAccepted, this.#onFailed);
  }

  // Made once per loop rather than once per connection: `#from` tells which
  // listener the connection came from.
  #onAccepted = (connection: Connection | null): void => {
    const listener = this.#from!;
    this.#state = "idle";
    this.#from = undefined;
    this.#retryMs = 0;
    this.#skips = 0;
    // null: a listener closed by suspend(); resume() may have opened another.
    if (connection !== null) this.#host.accepted(connection, listener);
    this.next();
  };

  #onFailed = (error: unknown): void => {
    this.#state = "idle";
    this.#from = undefined;
    if (isConnectionError(error)) {
      this.#connectionErrors++;
      this.#host.skipped?.(error);
      if (++this.#skips % ACCEPT_SKIPS_PER_TURN !== 0) this.next();
      else this.#after(0);
      return;
    }
    this.#host.failed(error);
    this.#retryMs = Math.min(ACCEPT_RETRY_LAST_MS, Math.max(ACCEPT_RETRY_FIRST_MS, this.#retryMs * 2));
    this.#after(this.#retryMs);
  };

  #after(delayMs: number): void {
    this.#state = "backingOff";
    this.#timers.setTimeout(() => {
      this.#state = "idle";
      this.next();
    }, delayMs);
  }
}
