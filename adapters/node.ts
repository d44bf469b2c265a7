/**
 * The Node adapter: pico-socket-server's transport on `node:net`. It also
 * runs under Deno and Bun, whose `node:net` is compatible.
 *
 * Node's API: https://nodejs.org/api/net.html
 *
 * Node accepts connections by itself, so connections the core has not asked
 * for yet are held here, paused and unread (`pauseOnConnect`), in arrival
 * order; past `backlog` of them new ones are closed and counted as refused.
 *
 * @example Serving with the Node adapter explicitly
 * ```ts
 * import { startServer } from "@pico/socket-server";
 * import { nodeTransport } from "@pico/socket-server/node";
 * const server = await startServer({
 *   port: 0,
 *   max: 10,
 *   transport: nodeTransport,
 *   handler: async (session) => {
 *     for await (const packet of session) await session.send(packet);
 *   },
 * });
 * await server.stop();
 * ```
 *
 * @module
 */

import { unlinkSync } from "node:fs";
import process from "node:process";
import { createServer, type Server, type Socket } from "node:net";
import { createSecureContext, type SecureContext, TLSSocket } from "node:tls";
import type {
  ListenOptions,
  Listener,
  SocketAddress,
  Transport,
  TransportSocket,
} from "../src/transport.ts";
import { AcceptQueue, acceptedLocalAddress, QueueListener } from "../src/accept_queue.ts";
import { SocketConnection } from "../src/connection.ts";
import { listenFailure } from "../src/listen_failure.ts";
import { listenOnPath } from "../src/unix_path.ts";
import { acceptsOnPath, isSocketFile } from "./unix_files.ts";
import { checkTls } from "./tls_check.ts";
import {
  acceptWithOwnReads,
  peerAddress,
  progressWithinWrites,
  type ReadTarget,
  readInto,
  unsentBytes,
} from "./node_handles.ts";
import { startThread } from "./threads.ts";

// The verbs a socket belongs to, for the listeners below: they are shared
// by every socket (`this` is the socket), so an idle connection carries no
// closures of its own.
const VERBS = Symbol("pico-socket-server verbs");
type OwnedSocket = Socket & { [VERBS]?: NodeSocketVerbs };

function onSocketError(this: OwnedSocket, error: Error): void {
  this[VERBS]?.connection.error(error);
}
function onSocketEnd(this: OwnedSocket): void {
  this[VERBS]?.connection.end();
}
function onSocketData(this: OwnedSocket, chunk: Uint8Array): void {
  this[VERBS]?.connection.data(chunk);
}
function onSocketClose(this: OwnedSocket): void {
  this[VERBS]?.connection.gone();
}
function onSocketDrain(this: OwnedSocket): void {
  this[VERBS]?.connection.drained();
}
function ignore(): void {}

/** Listens to a socket's events for its verbs. */
function attach(socket: OwnedSocket, verbs: NodeSocketVerbs): void {
  socket[VERBS] = verbs;
  // Attached at once: an error on a socket without a listener would crash
  // the process, even while the socket is still waiting to be accepted.
  // With pauseOnConnect the socket is not read, but Node still reports a
  // FIN it already saw.
  socket.on("error", onSocketError);
  socket.on("end", onSocketEnd);
  socket.on("close", onSocketClose);
  socket.on("drain", onSocketDrain);
}

/** What a TLS listener's connections are wrapped with. */
interface NodeTls {
  context: SecureContext;
  alpnProtocols: string[] | undefined;
}

/**
 * A Node socket's verbs, as the core's connection machine uses them. Node
 * takes every write into its own buffer (`writableLength`, counted against
 * the write bound) and emits 'drain' once that is out.
 */
class NodeSocketVerbs implements TransportSocket, ReadTarget {
  readonly remoteAddress: SocketAddress;
  readonly localAddress: SocketAddress;
  /** The core's connection over this socket, which its events go to. */
  readonly connection: SocketConnection;
  #socket: Socket;
  #tls: NodeTls | undefined;
  #handshaking = false;
  #flowing = false; // 'data' is listened to

  /**
   * @param local This side's address when the listener's tells it (bound to
   * one address, the accepted socket has that address and port), which saves
   * a getsockname call per connection, and is one frozen object shared by
   * the listener's connections; otherwise it is asked of the socket.
   * @param ownReads The socket was made to read into our buffers
   * (acceptWithOwnReads).
   */
  constructor(
    socket: Socket,
    options: ListenOptions,
    local: SocketAddress | undefined,
    ownReads: boolean,
    tls: NodeTls | undefined,
  ) {
    this.#socket = socket;
    this.#tls = tls;
    this.remoteAddress = peerAddress(socket);
    this.localAddress = local ?? { hostname: socket.localAddress ?? "", port: socket.localPort ?? 0 };
    this.connection = new SocketConnection(this, options);
    if (ownReads) readInto(socket, this);
    attach(socket, this);
  }

  get encrypted(): boolean {
    return this.#tls !== undefined;
  }

  get alpnProtocol(): string | null {
    const agreed = (this.#socket as Partial<TLSSocket>).alpnProtocol;
    return typeof agreed === "string" ? agreed : null;
  }

  /**
   * Wraps the TCP socket, unread (or read only up to `prefix`, which it is
   * given back), in a server-side TLS socket, which takes its events from
   * then on and starts the handshake.
   */
  handshake(prefix?: Uint8Array[]): Promise<Error | null> {
    const tls = this.#tls;
    const raw = this.#socket;
    if (tls === undefined || raw instanceof TLSSocket) return Promise.resolve(null);
    if (raw.destroyed) return Promise.resolve(new Error("The connection closed before its TLS handshake"));
    if (this.#flowing) {
      // Read before (a PROXY header): the TLS socket reads from here on.
      raw.off("data", onSocketData);
      raw.pause();
      this.#flowing = false;
    }
    // Bytes read past the header go back to the socket, where the TLS socket
    // takes them first.
    for (let i = (prefix?.length ?? 0) - 1; i >= 0; i--) raw.unshift(prefix![i]);
    raw.off("end", onSocketEnd);
    raw.off("close", onSocketClose);
    raw.off("drain", onSocketDrain);
    raw.off("error", onSocketError);
    // The TLS socket reports the TCP socket's failures.
    raw.on("error", ignore);
    const secure = new TLSSocket(raw, {
      isServer: true,
      secureContext: tls.context,
      ALPNProtocols: tls.alpnProtocols,
    }) as OwnedSocket;
    this.#socket = secure;
    return new Promise((resolve) => {
      this.#handshaking = true;
      const done = (failure: Error | null) => {
        this.#handshaking = false;
        secure.off("secure", onSecure);
        secure.off("error", onError);
        secure.off("end", onClose);
        secure.off("close", onClose);
        // A failed handshake leaves nothing to send: an alert OpenSSL still
        // holds would keep end() waiting on a peer that may never read. The
        // TCP socket goes too: Node may leave it open under a destroyed TLS
        // socket.
        if (failure !== null) {
          secure.destroy();
          raw.destroy();
        }
        resolve(failure);
      };
      const onSecure = () => done(null);
      const onError = (error: Error) => done(error);
      // An end of stream before the handshake is done (a peer that sent a
      // ClientHello and reset comes as one) ends it.
      const onClose = () => done(new Error("The connection closed during its TLS handshake"));
      secure.once("secure", onSecure);
      secure.once("error", onError);
      secure.once("end", onClose);
      secure.once("close", onClose);
      attach(secure, this);
    });
  }

  /** A read into our buffers (acceptWithOwnReads); returns whether it ended inside a packet. */
  readChunk(chunk: Uint8Array): boolean {
    return this.connection.data(chunk);
  }

  setReading(on: boolean): void {
    const socket = this.#socket;
    if (!on) {
      socket.pause();
      return;
    }
    if (!this.#flowing) {
      // Also on a socket that reads into our buffers: it emits no 'data' then.
      this.#flowing = true;
      socket.on("data", onSocketData);
    }
    socket.resume();
  }

  write(data: Uint8Array): number {
    if (this.#gone()) return -1;
    this.#socket.write(data);
    return data.length;
  }

  /** One writev for all of `chunks`. */
  writev(chunks: Uint8Array[]): number {
    if (this.#gone()) return -1;
    const socket = this.#socket;
    let length = 0;
    socket.cork();
    for (const chunk of chunks) {
      socket.write(chunk);
      length += chunk.length;
    }
    socket.uncork();
    return length;
  }

  buffered(): number {
    return this.#socket.writableLength;
  }

  unsent(): number {
    return unsentBytes(this.#socket);
  }

  end(): void {
    const socket = this.#socket;
    // Closed during its handshake (its timeout): nothing of ours to send.
    if (socket.writableLength === 0 || this.#handshaking) socket.destroy();
    else socket.end(() => socket.destroy());
  }

  destroy(): void {
    this.#socket.destroy();
  }

  setNoDelay(noDelay: boolean): void {
    this.#socket.setNoDelay(noDelay);
  }

  setKeepAlive(keepAlive: boolean, initialDelayMs: number): void {
    this.#socket.setKeepAlive(keepAlive, initialDelayMs);
  }

  /**
   * Whether the socket can take no more writes: destroyed, or failed (a
   * write's error marks it at once, and Node then drops later writes
   * silently; it destroys the socket and emits 'error' and 'close' only on
   * a later tick), so a write tells the core now.
   */
  #gone(): boolean {
    const socket = this.#socket as Socket & { errored?: Error | null };
    if (socket.writable && !socket.destroyed) return false;
    if (socket.errored) this.connection.error(socket.errored);
    return true;
  }
}

class NodeListener extends QueueListener<SocketConnection> {
  readonly localAddress: SocketAddress;
  #server: Server;
  #options: ListenOptions;
  #acceptedLocal: SocketAddress | undefined;
  #closed: Promise<void> | undefined;
  #ownReads: boolean;

  #tls: NodeTls | undefined;

  constructor(server: Server, localAddress: SocketAddress, options: ListenOptions, tls: NodeTls | undefined) {
    super(new AcceptQueue(options));
    this.#server = server;
    this.localAddress = localAddress;
    this.#acceptedLocal = acceptedLocalAddress(localAddress);
    this.#options = options;
    this.#tls = tls;
    const fail = (error: Error) => this.queue.fail(error);
    // TLS reads go through Node's TLS socket: our read buffers would only see ciphertext.
    this.#ownReads = tls === undefined &&
      acceptWithOwnReads(server, options.writeHighWaterMark, (socket) => this.#onConnection(socket), fail);
    if (!this.#ownReads) server.on("connection", (socket: Socket) => this.#onConnection(socket));
    // After listening, Node reports failed accepts (e.g. EMFILE) here.
    server.on("error", fail);
  }

  close(): Promise<void> {
    this.#closed ??= new Promise((resolve) => {
      // server.close() releases the port at once; its callback would wait
      // for every connection, which is the core's business.
      this.#server.close();
      this.queue.close();
      setImmediate(resolve);
    });
    return this.#closed;
  }

  #onConnection(socket: Socket): void {
    if (this.queue.closed) {
      socket.destroy();
      return;
    }
    const verbs = new NodeSocketVerbs(socket, this.#options, this.#acceptedLocal, this.#ownReads, this.#tls);
    this.queue.offer(verbs.connection);
  }
}

/** Binds and listens on a port, or on a Unix socket path. */
function bind(server: Server, options: ListenOptions): Promise<SocketAddress> {
  const { hostname, port, path, backlog } = options;
  return new Promise((resolve, reject) => {
    const onError = (error: Error & { code?: string }) => reject(error);
    server.once("error", onError);
    const onListening = () => {
      server.off("error", onError);
      const address = server.address();
      resolve(
        typeof address === "object" && address !== null
          ? { hostname: address.address, port: address.port }
          : { hostname: path ?? hostname, port: path === undefined ? port : 0 },
      );
    };
    if (path !== undefined) server.listen({ path, backlog, exclusive: true }, onListening);
    else server.listen({ host: hostname, port, backlog, exclusive: true, reusePort: options.reusePort }, onListening);
  });
}

/**
 * Whether `net` can share a port (`reusePort`): Node 22.12+ and 23.1+, and
 * Deno's and Bun's node:net. Older Node ignores the option, so a second
 * listener would fail with EADDRINUSE.
 */
function canReusePort(): boolean {
  if (process.versions.deno !== undefined || process.versions.bun !== undefined) return true;
  const [major, minor] = process.versions.node.split(".").map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

async function listen(options: ListenOptions): Promise<Listener> {
  const { path, tls } = options;
  if (options.reusePort && !canReusePort()) {
    throw Object.assign(
      new Error(
        `Cannot share a port between workers on Node ${process.versions.node}: it needs Node 22.12 or later ` +
          "(net's reusePort); upgrade Node, or run one server without workers",
      ),
      { code: "ENOTSUP" },
    );
  }
  if (tls !== undefined) checkTls(tls);
  const secure = tls === undefined ? undefined : {
    context: createSecureContext({ cert: tls.cert, key: tls.key }),
    alpnProtocols: tls.alpnProtocols.length > 0 ? tls.alpnProtocols : undefined,
  };
  // highWaterMark makes socket.write() report backpressure past the
  // session's write bound.
  const make = () =>
    createServer({ pauseOnConnect: true, allowHalfOpen: true, highWaterMark: options.writeHighWaterMark });
  let server = make();
  try {
    const bound = path === undefined ? await bind(server, options) : await listenOnPath(path, {
      listen: () => bind(server, options).catch((error) => {
        server.close();
        server = make();
        throw error;
      }),
      isSocket: isSocketFile,
      accepts: acceptsOnPath,
      remove: unlinkSync,
    });
    return new NodeListener(server, bound, options, secure);
  } catch (error) {
    server.close();
    throw listenFailure(options, (error as { code?: string }).code, error);
  }
}

/**
 * The transport on Node's `node:net`; the default on Node. Works under Deno
 * and Bun too.
 *
 * @example Choosing the Node sockets under Deno or Bun
 * ```ts
 * import { startServer } from "@pico/socket-server";
 * import { nodeTransport } from "@pico/socket-server/node";
 * const server = await startServer({
 *   port: 0, max: 5, transport: nodeTransport, handler: () => {},
 * });
 * await server.stop();
 * ```
 */
export const nodeTransport: Transport = {
  name: "node",
  listen,
  startThread,
  lingerProgress: progressWithinWrites ? "byte" : "write",
};
