/**
 * The Bun adapter: pico-socket-server's transport on `Bun.listen`.
 *
 * Bun's API: https://bun.sh/docs/api/tcp
 *
 * Bun accepts connections by itself and calls `open`; connections the core
 * has not asked for yet are paused at once (`socket.pause()`, so unread) and
 * held in arrival order; past `backlog` of them new ones are closed and
 * counted as refused. Bun's `socket.write()` may take only part of the
 * bytes, so each connection keeps its own write queue, flushed on `drain`.
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
import { AcceptQueue } from "../src/accept_queue.ts";
import { DrainSignal } from "../src/drain_signal.ts";
import { listenFailure } from "../src/listen_failure.ts";

// Local shapes of the few Bun APIs used, so that no Bun types are needed.
interface BunSocket {
  data: BunConnection | undefined;
  readonly remoteAddress: string;
  readonly remotePort?: number;
  readonly localAddress?: string;
  readonly localPort: number;
  write(data: Uint8Array): number;
  end(): void;
  terminate(): void;
  pause(): void;
  resume(): void;
  setNoDelay(noDelay?: boolean): boolean;
  setKeepAlive(enable?: boolean, initialDelay?: number): boolean;
}
interface BunSocketHandlers {
  open(socket: BunSocket): void;
  data(socket: BunSocket, data: Uint8Array): void;
  drain(socket: BunSocket): void;
  end(socket: BunSocket): void;
  close(socket: BunSocket, error?: Error): void;
  error(socket: BunSocket, error: Error): void;
}
interface BunListener {
  readonly hostname: string;
  readonly port: number;
  stop(closeActiveConnections?: boolean): void;
}
interface BunNamespace {
  listen(options: { hostname: string; port: number; socket: BunSocketHandlers }): BunListener;
}

function bun(): BunNamespace {
  const api = (globalThis as { Bun?: BunNamespace }).Bun;
  if (api === undefined) throw new Error("The Bun adapter needs Bun: use the adapter of this runtime");
  return api;
}

// How long close() waits for queued bytes to reach a peer that is not
// reading before it gives up and closes anyway.
const CLOSE_FLUSH_TIMEOUT_MS = 5_000;

function join(head: Uint8Array, body: Uint8Array): Uint8Array {
  const joined = new Uint8Array(head.length + body.length);
  joined.set(head);
  joined.set(body, head.length);
  return joined;
}

class BunConnection implements Connection {
  readonly remoteAddress: SocketAddress;
  readonly localAddress: SocketAddress;
  #socket: BunSocket;
  #events: ConnectionEvents | undefined;
  #closed = false; // close() was called or the socket failed: no more events
  #gone = false; // Bun reported the socket closed
  #paused = true;
  // What happened before start(), replayed when the session starts.
  // Both made on first use: most connections never need them, and an idle
  // server's memory is mostly its connections.
  #early: Array<Uint8Array | Error | "end"> | undefined;
  #writeQueue: Uint8Array[] | undefined;
  #queuedBytes = 0;
  #writeHighWaterMark: number;
  #drain = new DrainSignal();
  #closeTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(socket: BunSocket, writeHighWaterMark: number, localHostname: string) {
    this.#socket = socket;
    this.#writeHighWaterMark = writeHighWaterMark;
    this.remoteAddress = { hostname: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    this.localAddress = { hostname: socket.localAddress ?? localHostname, port: socket.localPort };
    // Unread until its session starts.
    socket.pause();
  }

  start(events: ConnectionEvents): void {
    if (this.#closed || this.#events !== undefined) return;
    this.#events = events;
    const early = this.#early;
    this.#early = undefined;
    for (const item of early ?? []) {
      if (this.#closed) return;
      this.#dispatch(item);
    }
    if (!this.#closed) this.resume();
  }

  pause(): void {
    if (this.#paused || this.#gone) return;
    this.#paused = true;
    this.#socket.pause();
  }

  resume(): void {
    if (!this.#paused || this.#gone || this.#closed) return;
    this.#paused = false;
    this.#socket.resume();
  }

  write(data: Uint8Array, more?: Uint8Array): Promise<void> | undefined {
    if (this.#closed || this.#gone) return undefined;
    // Bun writes one buffer per call (a syscall each): a header and its body
    // are joined, one copy being cheaper than a second send.
    if (more !== undefined) data = join(data, more);
    if (this.#writeQueue === undefined || this.#writeQueue.length === 0) {
      const written = this.#socket.write(data);
      if (written >= data.length) return undefined;
      data = data.subarray(Math.max(written, 0));
    }
    (this.#writeQueue ??= []).push(data);
    this.#queuedBytes += data.length;
    if (this.#queuedBytes <= this.#writeHighWaterMark) return undefined;
    return this.#drain.wait();
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
    this.#early = undefined;
    if (this.#gone) return;
    if (this.#writeQueue === undefined || this.#writeQueue.length === 0) {
      this.#socket.end();
      return;
    }
    // The queue is flushed on drain, then the socket ends; bounded.
    this.#closeTimer = setTimeout(() => this.#terminate(), CLOSE_FLUSH_TIMEOUT_MS);
    (this.#closeTimer as { unref?: () => void }).unref?.();
  }

  // --- Called by the socket handlers.

  onData(data: Uint8Array): void {
    if (this.#closed) return;
    if (this.#events === undefined) (this.#early ??= []).push(data);
    else this.#events.data(data);
  }

  onEnd(): void {
    if (this.#closed) return;
    if (this.#events === undefined) (this.#early ??= []).push("end");
    else this.#events.end();
  }

  onError(error: Error): void {
    if (this.#closed) return;
    if (this.#events === undefined) {
      (this.#early ??= []).push(error);
      return;
    }
    this.#dispatch(error);
  }

  onDrain(): void {
    const queue = this.#writeQueue;
    if (queue === undefined) return;
    while (queue.length > 0 && !this.#gone) {
      const chunk = queue[0];
      const written = this.#socket.write(chunk);
      if (written > 0) this.#queuedBytes -= Math.min(written, chunk.length);
      if (written < chunk.length) {
        queue[0] = chunk.subarray(Math.max(written, 0));
        break;
      }
      queue.shift();
    }
    if (this.#queuedBytes <= this.#writeHighWaterMark) this.#drain.wake();
    if (queue.length === 0 && this.#closed && !this.#gone) {
      clearTimeout(this.#closeTimer);
      this.#socket.end();
    }
  }

  onClose(error?: Error): void {
    if (this.#gone) return;
    this.#gone = true;
    clearTimeout(this.#closeTimer);
    this.#writeQueue = undefined;
    this.#queuedBytes = 0;
    this.#drain.wake();
    if (error !== undefined) this.onError(error);
  }

  #dispatch(item: Uint8Array | Error | "end"): void {
    const events = this.#events!;
    if (item === "end") events.end();
    else if (item instanceof Error) {
      this.#closed = true;
      this.#terminate();
      events.error(item);
    } else events.data(item);
  }

  #terminate(): void {
    if (this.#gone) return;
    this.#socket.terminate();
  }

}

class BunTcpListener implements Listener {
  readonly localAddress: SocketAddress;
  #listener: BunListener | undefined;
  #writeHighWaterMark: number;
  #queue: AcceptQueue<BunConnection>;
  #closed: Promise<void> | undefined;

  constructor(options: ListenOptions) {
    this.#writeHighWaterMark = options.writeHighWaterMark;
    this.#queue = new AcceptQueue(options);
    const { hostname, port } = options;
    const listener = bun().listen({
      hostname,
      port,
      socket: {
        open: (socket) => this.#onOpen(socket, hostname),
        data: (socket, data) => socket.data?.onData(data),
        drain: (socket) => socket.data?.onDrain(),
        end: (socket) => socket.data?.onEnd(),
        close: (socket, error) => socket.data?.onClose(error),
        error: (socket, error) => socket.data?.onError(error),
      },
    });
    this.#listener = listener;
    this.localAddress = { hostname: listener.hostname, port: listener.port };
  }

  get refused(): number {
    return this.#queue.refused;
  }

  get waiting(): number {
    return this.#queue.waiting;
  }

  accept(): Promise<Connection | null> {
    return this.#queue.take();
  }

  close(): Promise<void> {
    this.#closed ??= new Promise((resolve) => {
      // stop(false) stops listening and releases the port; accepted
      // sessions are the core's to close.
      this.#listener?.stop(false);
      this.#listener = undefined;
      this.#queue.close();
      setTimeout(resolve, 0);
    });
    return this.#closed;
  }

  #onOpen(socket: BunSocket, hostname: string): void {
    const connection = new BunConnection(socket, this.#writeHighWaterMark, hostname);
    socket.data = connection;
    this.#queue.offer(connection);
  }
}

function listen(options: ListenOptions): Promise<Listener> {
  try {
    return Promise.resolve(new BunTcpListener(options));
  } catch (error) {
    return Promise.reject(listenFailure(options.hostname, options.port, (error as { code?: string }).code, error));
  }
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
