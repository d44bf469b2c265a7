// Deno's API: https://docs.deno.com/api/deno/~/Deno.listen and
// https://docs.deno.com/api/deno/~/Deno.Conn

/**
 * The Deno adapter: pico-socket-server's transport on `Deno.listen`.
 *
 * Deno accepts only when asked; this adapter asks ahead of the core, as Node
 * and Bun accept by themselves, so connections the core has not taken yet
 * wait here, in arrival order and unread, at most `backlog` of them (past
 * that they are closed and counted as refused). Reads go straight from `conn.read()` into buffers
 * handed to the core (no Web Streams). The core's connection machine
 * (src/connection.ts) keeps the write queue, one `conn.write()` under way at
 * a time; this file only maps Deno's connection onto it.
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
  ListenOptions,
  Listener,
  SocketAddress,
  Transport,
  TransportSocket,
} from "../src/transport.ts";
import { AcceptLoop } from "../src/accept_loop.ts";
import { AcceptQueue, QueueListener } from "../src/accept_queue.ts";
import { SocketConnection } from "../src/connection.ts";
import { listenFailure } from "../src/listen_failure.ts";
import { listenOnPath } from "../src/unix_path.ts";
import { startThread } from "./threads.ts";

// Local shapes of the few Deno APIs used, so that no Deno types are needed
// (the package type-checks under Node and Bun too).
// A TCP address, or a Unix socket's (`path`; null for a client's socket).
interface DenoNetAddr {
  hostname?: string;
  port?: number;
  path?: string | null;
}
interface DenoTcpConn {
  readonly remoteAddr: DenoNetAddr;
  readonly localAddr: DenoNetAddr;
  read(buffer: Uint8Array): Promise<number | null>;
  write(data: Uint8Array): Promise<number>;
  close(): void;
  // TCP only.
  setNoDelay?(noDelay?: boolean): void;
  setKeepAlive?(keepAlive?: boolean): void;
}
interface DenoTcpListener {
  readonly addr: DenoNetAddr;
  accept(): Promise<DenoTcpConn>;
  close(): void;
}
interface DenoApi {
  listen(
    options: { hostname: string; port: number; transport: "tcp"; tcpBacklog: number } | {
      path: string;
      transport: "unix";
    },
  ): DenoTcpListener;
  lstatSync(path: string): { isSocket: boolean | null };
  removeSync(path: string): void;
  connect(options: { path: string; transport: "unix" }): Promise<{ close(): void }>;
}

/** A Deno address as the core's: a Unix socket's path goes in `hostname`, with port 0. */
function address(addr: DenoNetAddr): SocketAddress {
  return addr.port === undefined ? { hostname: addr.path ?? "", port: 0 } : { hostname: addr.hostname ?? "", port: addr.port };
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
/** A Deno connection's verbs, as the core's connection machine uses them. */
class DenoSocketVerbs implements TransportSocket {
  readonly remoteAddress: SocketAddress;
  readonly localAddress: SocketAddress;
  /** The core's connection over this socket, which its events go to. */
  readonly connection: SocketConnection;
  #conn: DenoTcpConn;
  #reading = false; // the core wants reads
  #looping = false; // the read loop runs (a read may be pending)
  #released = false; // Deno's resource is closed
  #readBuffer: Uint8Array = new Uint8Array(0);
  #readSize = READ_SIZE_FIRST;

  constructor(conn: DenoTcpConn, options: ListenOptions) {
    this.#conn = conn;
    this.remoteAddress = address(conn.remoteAddr);
    this.localAddress = address(conn.localAddr);
    this.connection = new SocketConnection(this, options);
  }

  setReading(on: boolean): void {
    this.#reading = on;
    if (on && !this.#looping && !this.#released) this.#read();
  }

  /** The read loop: one read at a time while the core wants reads. */
  async #read(): Promise<void> {
    this.#looping = true;
    const sink = this.connection;
    const conn = this.#conn;
    try {
      while (this.#reading && !this.#released) {
        let buffer = this.#readBuffer;
        if (buffer.length < READ_ROOM_MIN) buffer = new Uint8Array(this.#readSize);
        let read: number | null;
        try {
          read = await conn.read(buffer);
        } catch (error) {
          // A read cut short by our own close (Interrupted) is no error.
          if (!this.#released) sink.error(withCode(error));
          return;
        }
        if (this.#released) return;
        if (read === null) {
          sink.end();
          return;
        }
        if (read === buffer.length) {
          if (this.#readSize < READ_SIZE_MAX) this.#readSize *= 2;
        } else if (read <= this.#readSize >>> 3 && this.#readSize > READ_SIZE_MIN) {
          this.#readSize >>>= 1;
        }
        this.#readBuffer = buffer.subarray(read);
        // A read that completes after the core stopped reading is held there.
        if (read > 0) sink.data(buffer.subarray(0, read));
      }
    } finally {
      this.#looping = false;
    }
  }

  // conn.write() is asynchronous and may write part of a buffer; it rejects
  // when the peer is gone (Deno sets the POSIX code: EPIPE, ECONNRESET).
  write(data: Uint8Array): number | Promise<number> {
    return this.#released ? -1 : this.#conn.write(data);
  }

  buffered(): number {
    return 0;
  }

  unsent(): number {
    return 0;
  }

  // Deno's close() sends what was written, then FIN.
  end(): void {
    this.#release();
  }

  // Also cancels a pending read or write: they reject with Interrupted.
  destroy(): void {
    this.#release();
  }

  setNoDelay(noDelay: boolean): void {
    try {
      if (!this.#released) this.#conn.setNoDelay?.(noDelay);
    } catch {
      // The socket is gone (BadResource): nothing to set.
    }
  }

  // Deno has no setting for the idle delay before the first probe: the
  // system's default (net.ipv4.tcp_keepalive_time) applies.
  setKeepAlive(keepAlive: boolean, _initialDelayMs: number): void {
    try {
      if (!this.#released) this.#conn.setKeepAlive?.(keepAlive);
    } catch {
      // The socket is gone (BadResource): nothing to set.
    }
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#readBuffer = new Uint8Array(0);
    try {
      this.#conn.close();
    } catch {
      // Already closed (BadResource).
    }
    this.connection.gone();
  }
}

class DenoListener extends QueueListener<SocketConnection> {
  readonly localAddress: SocketAddress;
  #listener: DenoTcpListener;
  #options: ListenOptions;
  // Accepts ahead of the core, as Node and Bun do by themselves, skipping
  // failures of one connection and backing off on others.
  #acceptor: AcceptLoop;
  #accepting: Promise<DenoTcpConn> | undefined;
  #closed: Promise<void> | undefined;

  constructor(listener: DenoTcpListener, options: ListenOptions) {
    super(new AcceptQueue(options));
    this.#listener = listener;
    this.#options = options;
    this.localAddress = address(listener.addr);
    const deno = { accept: () => this.#acceptFromDeno() };
    this.#acceptor = new AcceptLoop({
      listener: () => (this.#closed === undefined ? deno : undefined),
      hasRoom: () => true,
      accepted: (connection) => this.queue.offer(connection as SocketConnection),
      failed: (error) => this.queue.fail(error as Error),
    });
    this.#acceptor.next();
  }

  get acceptErrors(): number {
    return this.#acceptor.connectionErrors;
  }

  close(): Promise<void> {
    return this.#closed ??= this.#close();
  }

  /** One connection from Deno, held unread until its session starts. */
  async #acceptFromDeno(): Promise<Connection | null> {
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
    return new DenoSocketVerbs(conn, this.#options).connection;
  }

  async #close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // Already closed (BadResource).
    }
    this.queue.close();
    // A pending accept holds the socket (and the port) until Deno has
    // cancelled it; the port is free once that accept has settled.
    const accepting = this.#accepting;
    if (accepting !== undefined) await accepting.then(ignore, ignore);
  }
}

function ignore(): void {}

function listen(options: ListenOptions): Promise<Listener> {
  const { hostname, port, backlog, path, tls } = options;
  const deno = (globalThis as unknown as { Deno?: DenoApi }).Deno;
  if (deno === undefined || typeof deno.listen !== "function") {
    return Promise.reject(
      new Error("The Deno adapter needs Deno (Deno.listen): use the adapter of the running runtime"),
    );
  }
  // TLS is node:tls's, through Deno's Node compatibility (the Node
  // adapter): Deno.listenTls starts each handshake as soon as it accepts, so
  // one could not wait for a session slot, and a TlsConn closed during its
  // handshake keeps its socket until the handshake ends (denoland/deno#14547),
  // so a peer that stalls it would hold a descriptor for as long as it likes.
  // Sharing a port is node:net's too: Deno.listen's reusePort needs
  // --unstable-net, and without it ends the whole process.
  if (tls !== undefined || options.reusePort) {
    return import("./node.ts").then(({ nodeTransport }) => nodeTransport.listen(options));
  }
  const bind = (): DenoTcpListener => {
    try {
      if (path !== undefined) return deno.listen({ path, transport: "unix" });
      // tcpBacklog came with denoland/deno#30541 (2025); older releases ignore
      // it and keep their own default.
      return deno.listen({ hostname, port, transport: "tcp", tcpBacklog: backlog });
    } catch (error) {
      throw withCode(error);
    }
  };
  const bound = path === undefined ? Promise.resolve().then(bind) : listenOnPath(path, {
    listen: bind,
    isSocket: (file) => {
      try {
        return deno.lstatSync(file).isSocket === true;
      } catch {
        return false;
      }
    },
    accepts: (file) => deno.connect({ path: file, transport: "unix" }).then((conn) => (conn.close(), true), () => false),
    remove: (file) => deno.removeSync(file),
  });
  return bound.then(
    (listener) => new DenoListener(listener, options),
    (error) => {
      throw listenFailure(options, (error as { code?: string }).code, error);
    },
  );
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
  startThread,
  // Deno reports a write done on the next turn of the event loop, however
  // fast the socket took it: a bound of a few 64 KiB packets lets a handler
  // send a chunk's packets in one turn instead of waiting a turn for each.
  writeHighWaterMark: 256 * 1024,
};
