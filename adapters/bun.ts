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
 * kernel took, maybe fewer than given; the core's connection machine
 * (src/connection.ts) keeps the write queue and writes on from Bun's `drain`
 * handler. This file only maps Bun's socket onto it.
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

import type { ListenOptions, Listener, SocketAddress, Transport, TransportSocket } from "../src/transport.ts";
import { AcceptQueue, acceptedLocalAddress, QueueListener } from "../src/accept_queue.ts";
import { SocketConnection } from "../src/connection.ts";
import { listenFailure } from "../src/listen_failure.ts";
import { listenOnPath } from "../src/unix_path.ts";
import { unlinkSync } from "node:fs";
import { acceptsOnPath, isSocketFile } from "./unix_files.ts";
import { checkTls } from "./tls_check.ts";
import { startThread } from "./threads.ts";

// Local shapes of the few Bun APIs used, so that no Bun types are needed
// (the package type-checks under Deno and Node too).
interface BunSocket {
  data: BunSocketVerbs | undefined;
  // After the socket closed, Bun reports these as undefined.
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  /** TLS: the protocol agreed by ALPN (false or null when none). */
  readonly alpnProtocol?: string | false | null;
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
  // Given: Bun calls open at accept also on TLS, before the handshake.
  handshake?(socket: BunSocket, success: boolean, authorizationError: Error | null): void;
  data(socket: BunSocket, data: Uint8Array): void;
  drain(socket: BunSocket): void;
  end(socket: BunSocket): void;
  close(socket: BunSocket, error?: Error): void;
  error(socket: BunSocket, error: Error): void;
}
interface BunTcpListener {
  readonly hostname: string | undefined;
  readonly port: number | undefined;
  stop(closeActiveConnections?: boolean): void;
  getsockname?(out: { address?: string; port?: number }): void;
}
interface BunApi {
  listen(
    options: ({ hostname: string; port: number; reusePort?: boolean } | { unix: string }) & {
      allowHalfOpen: boolean;
      socket: BunSocketHandler;
      tls?: { cert: string; key: string; ALPNProtocols?: ArrayBuffer };
    },
  ): BunTcpListener;
}

/** ALPN protocol names in TLS's wire format (each after its length), as Bun takes them. */
function alpnWire(protocols: string[]): ArrayBuffer {
  const names = protocols.map((protocol) => new TextEncoder().encode(protocol));
  const wire = new Uint8Array(names.reduce((sum, name) => sum + 1 + name.length, 0));
  let offset = 0;
  for (const name of names) {
    wire[offset++] = name.length;
    wire.set(name, offset);
    offset += name.length;
  }
  return wire.buffer;
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** A Bun socket's verbs, as the core's connection machine uses them. */
class BunSocketVerbs implements TransportSocket {
  readonly remoteAddress: SocketAddress;
  readonly localAddress: SocketAddress;
  /** The core's connection over this socket, which its events go to. */
  readonly connection: SocketConnection;
  #socket: BunSocket;
  #reading: boolean; // Bun reads the socket
  #wanted: boolean; // the core wants reads
  // TLS: settled by Bun's handshake handler.
  #handshake: { promise: Promise<Error | null>; resolve: (failure: Error | null) => void } | undefined;

  /**
   * @param local The listener's own address when it is bound to one (see
   * acceptedLocalAddress), else asked of the socket.
   * @param reading Whether Bun reads it now: a connection that waits for the
   * core to take it is paused at once (its bytes stay unread in the
   * kernel); one handed to a waiting core is started before Bun can read
   * it, so pausing it would only cost system calls.
   */
  constructor(socket: BunSocket, options: ListenOptions, local: SocketAddress | undefined, reading: boolean) {
    this.#socket = socket;
    this.remoteAddress = { hostname: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    this.localAddress = local ?? { hostname: socket.localAddress ?? "", port: socket.localPort ?? 0 };
    this.connection = new SocketConnection(this, options);
    if (options.tls !== undefined) {
      let resolve!: (failure: Error | null) => void;
      const promise = new Promise<Error | null>((settle) => (resolve = settle));
      this.#handshake = { promise, resolve };
    }
    // A TLS socket's handshake also waits while it is paused.
    this.#reading = this.#wanted = reading;
    if (!reading) socket.pause();
  }

  get encrypted(): boolean {
    return this.#handshake !== undefined;
  }

  get alpnProtocol(): string | null {
    return this.#socket.alpnProtocol || null;
  }

  /** Lets Bun read the socket, which runs the handshake; Bun's handshake handler settles it. */
  handshake(): Promise<Error | null> {
    if (!this.#reading) {
      this.#reading = true;
      this.#socket.resume();
    }
    return this.#handshake?.promise ?? Promise.resolve(null);
  }

  /** Bun's handshake handler (or the socket's close) ended the handshake. */
  handshaken(failure: Error | null): void {
    this.#handshake?.resolve(failure);
  }

  // Lazily: Bun's reads stop only once data arrives while the core wants
  // none. A session pauses when one large chunk fills its queue and resumes
  // as soon as its handler takes the packets, usually before Bun reads
  // again; stopping and restarting the socket each time would cost two
  // system calls for nothing.
  setReading(on: boolean): void {
    this.#wanted = on;
    if (on && !this.#reading) {
      this.#reading = true;
      this.#socket.resume();
    }
  }

  /** Data arrived: it goes to the core; if the core wants none, Bun stops reading now. */
  arrived(chunk: Uint8Array): void {
    this.connection.data(chunk);
    if (!this.#wanted && this.#reading) {
      this.#reading = false;
      this.#socket.pause();
    }
  }

  // Bun buffers nothing: it returns how many bytes the kernel took, or -1
  // once the socket is closed.
  write(data: Uint8Array): number {
    return this.#socket.write(data);
  }

  buffered(): number {
    return 0;
  }

  unsent(): number {
    return 0;
  }

  // With nothing left unsent: FIN, then close.
  end(): void {
    this.#socket.end();
  }

  destroy(): void {
    this.#socket.terminate();
  }

  setNoDelay(noDelay: boolean): void {
    this.#socket.setNoDelay?.(noDelay);
  }

  // Bun's initialDelay is in milliseconds, like the contract's.
  setKeepAlive(keepAlive: boolean, initialDelayMs: number): void {
    this.#socket.setKeepAlive?.(keepAlive, initialDelayMs);
  }
}

/** Bun's handlers for one listener: shared by all its sockets. */
function handlers(
  queue: AcceptQueue<SocketConnection>,
  options: ListenOptions,
  bound: { local: SocketAddress | undefined },
): BunSocketHandler {
  return {
    open(socket) {
      const verbs = new BunSocketVerbs(socket, options, bound.local, queue.taking);
      socket.data = verbs;
      // Handed out, held, or (past backlog, or after close) closed.
      queue.offer(verbs.connection);
    },
    // Bun reports the client certificate's verification too: none is asked for.
    handshake: (socket, success, authorizationError) =>
      socket.data?.handshaken(success ? null : asError(authorizationError ?? new Error("The TLS handshake failed"))),
    data: (socket, chunk) => socket.data?.arrived(chunk),
    drain: (socket) => socket.data?.connection.drained(),
    end: (socket) => socket.data?.connection.end(),
    // A failure comes as the close handler's error (code "ECONNRESET"); Bun
    // reports a peer's reset also as an end of stream, then a close without
    // one.
    close: (socket, error) => {
      socket.data?.handshaken(new Error("The connection closed during its TLS handshake"));
      if (error !== undefined) socket.data?.connection.error(asError(error));
      socket.data?.connection.gone();
    },
    // Bun calls it when one of the handlers above threw.
    error: (socket, error) => socket.data?.connection.error(asError(error)),
  };
}

// Bun reports no failed accepts to JavaScript, so accept() never rejects.
class BunListener extends QueueListener<SocketConnection> {
  readonly localAddress: SocketAddress;
  #server: BunTcpListener;
  #closed: Promise<void> | undefined;

  constructor(
    server: BunTcpListener,
    queue: AcceptQueue<SocketConnection>,
    bound: { local: SocketAddress | undefined },
    path: string | undefined,
  ) {
    super(queue);
    this.#server = server;
    if (path !== undefined) {
      this.localAddress = { hostname: path, port: 0 };
      bound.local = acceptedLocalAddress(this.localAddress);
      return;
    }
    // getsockname gives the address bound (e.g. 127.0.0.1 for "localhost");
    // `hostname` is only the name asked for.
    const address: { address?: string; port?: number } = {};
    try {
      server.getsockname?.(address);
    } catch {
      // Not available: the name and port Bun reports do.
    }
    this.localAddress = { hostname: address.address ?? server.hostname ?? "", port: address.port ?? server.port ?? 0 };
    // Known before Bun can call open() (which waits for the event loop).
    bound.local = acceptedLocalAddress(this.localAddress);
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
      this.queue.close();
      this.#closed = Promise.resolve();
    }
    return this.#closed;
  }
}

/** Bun's listen error as the core reports it: a POSIX code and a clear message. */
function listenError(options: ListenOptions, error: unknown): Error {
  const { code, errno } = (error ?? {}) as { code?: unknown; errno?: unknown };
  if (typeof code === "string") return listenFailure(options, code, error);
  // Bun throws a bare "Failed to listen at <host>" (no code, no errno) only
  // when the host name does not resolve: Node's ENOTFOUND.
  if (errno === undefined && error instanceof Error && options.path === undefined) {
    return listenFailure(options, "ENOTFOUND", new Error("host name not found", { cause: error }));
  }
  return listenFailure(options, undefined, error);
}

function listen(options: ListenOptions): Promise<Listener> {
  const Bun = (globalThis as { Bun?: BunApi }).Bun;
  if (Bun === undefined || typeof Bun.listen !== "function") {
    return Promise.reject(new Error("The Bun adapter needs Bun (Bun.listen): use the adapter of the running runtime"));
  }
  const { hostname, port, path, tls } = options;
  // Bun.listen's TLS begins at accept; a PROXY header comes before it in
  // plain text, so those connections are node:tls's (the Node adapter),
  // which starts TLS on a socket already read from.
  if (tls !== undefined && options.proxyHeader) {
    return import("./node.ts").then(({ nodeTransport }) => nodeTransport.listen(options));
  }
  try {
    if (tls !== undefined) checkTls(tls);
  } catch (error) {
    return Promise.reject(error);
  }
  const queue = new AcceptQueue<SocketConnection>(options);
  const bound: { local: SocketAddress | undefined } = { local: undefined };
  const socket = handlers(queue, options, bound);
  // Without a handshake handler Bun would call open only after the handshake.
  if (tls === undefined) delete socket.handshake;
  const secure = tls === undefined ? undefined : {
    cert: tls.cert,
    key: tls.key,
    ALPNProtocols: tls.alpnProtocols.length > 0 ? alpnWire(tls.alpnProtocols) : undefined,
  };
  // allowHalfOpen: a peer's FIN ends its input only, so that the session
  // can still answer; the core closes the connection when it is done.
  const bind = () => {
    const where = path === undefined ? { hostname, port, reusePort: options.reusePort } : { unix: path };
    return Bun.listen({ ...where, allowHalfOpen: true, socket, tls: secure });
  };
  const listening = path === undefined
    ? Promise.resolve().then(bind)
    : listenOnPath(path, { listen: bind, isSocket: isSocketFile, accepts: acceptsOnPath, remove: unlinkSync });
  return listening.then(
    (server) => new BunListener(server, queue, bound, path),
    (error) => {
      throw listenError(options, error);
    },
  );
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
export const bunTransport: Transport = {
  name: "bun",
  listen,
  startThread,
  // Each send is a system call: a bound of a few 64 KiB packets lets the
  // answers held for a handler's next packets leave joined.
  writeHighWaterMark: 256 * 1024,
};
