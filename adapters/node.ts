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

import { createServer, type Server, type Socket } from "node:net";
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
import { type Batched, WriteWindow } from "../src/write_window.ts";
import { acceptWithOwnReads, peerAddress, type ReadTarget, readInto, unsentBytes } from "./node_handles.ts";

// A connection's second and later writes in a turn leave together, in one
// writev, when the turn ends; so do writes made while the session has more
// received packets to answer, but they leave as soon as it has caught up.
const writeWindow = new WriteWindow(setImmediate);

// The connection a socket belongs to, for the listeners below: they are
// shared by every socket (`this` is the socket), so an idle connection
// carries no closures of its own.
const CONNECTION = Symbol("pico-socket-server connection");
type OwnedSocket = Socket & { [CONNECTION]?: NodeConnection };

function onSocketError(this: OwnedSocket, error: Error): void {
  this[CONNECTION]?.onError(error);
}
function onSocketEnd(this: OwnedSocket): void {
  this[CONNECTION]?.onEnd();
}
function onSocketData(this: OwnedSocket, chunk: Uint8Array): void {
  this[CONNECTION]?.onData(chunk);
}
function onSocketClose(this: OwnedSocket): void {
  this[CONNECTION]?.onClose();
}
function onSocketDrain(this: OwnedSocket): void {
  this[CONNECTION]?.onDrain();
}

class NodeConnection implements Connection, Batched, ReadTarget {
  readonly remoteAddress: SocketAddress;
  readonly localAddress: SocketAddress;
  #socket: OwnedSocket;
  #events: ConnectionEvents | undefined;
  #closed = false;
  // What happened before start(), replayed when the session starts.
  #earlyError: Error | undefined;
  #earlyEnd = false;
  #earlyLoss = false;
  #drain: DrainSignal | undefined; // made on first backpressure
  #awaitingDrain = false;
  #batch: Uint8Array[] | undefined; // made on first use
  #batchBytes = 0;
  #heldForSession = false; // the batch waits for the session's answers
  #lastWriteTurn = -1;
  #options: ListenOptions; // the listener's, shared by its connections
  #stall: StallWatch | undefined; // closing with bytes queued

  /**
   * @param local This side's address when the listener's tells it (bound to
   * one address, the accepted socket has that address and port), which saves
   * a getsockname call per connection, and is one frozen object shared by
   * the listener's connections; otherwise it is asked of the socket.
   * @param ownReads The socket was made to read into our buffers
   * (acceptWithOwnReads).
   */
  constructor(socket: Socket, options: ListenOptions, local: SocketAddress | undefined, ownReads: boolean) {
    const owned = socket as OwnedSocket;
    this.#socket = owned;
    this.#options = options;
    if (ownReads) readInto(socket, this);
    this.remoteAddress = peerAddress(socket);
    this.localAddress = local ?? { hostname: socket.localAddress ?? "", port: socket.localPort ?? 0 };
    owned[CONNECTION] = this;
    // Attached at once: an error on a socket without a listener would crash
    // the process, even while the socket is still waiting to be accepted.
    // With pauseOnConnect the socket is not read, but Node still reports a
    // FIN it already saw: remembered for the session.
    socket.on("error", onSocketError);
    socket.on("end", onSocketEnd);
    socket.on("close", onSocketClose);
  }

  start(events: ConnectionEvents): void {
    if (this.#closed || this.#events !== undefined) return;
    this.#events = events;
    if (this.#earlyError !== undefined) {
      const error = this.#earlyError;
      this.close();
      events.error(error);
      return;
    }
    if (this.#earlyLoss) {
      this.#closed = true;
      events.lost();
      return;
    }
    const socket = this.#socket;
    // Also on a socket that reads into our buffers: it emits no 'data' then.
    socket.on("data", onSocketData);
    if (this.#earlyEnd) events.end();
    socket.resume();
  }

  // --- Called by the socket listeners.

  onData(chunk: Uint8Array): void {
    if (!this.#closed) this.#events?.data(chunk);
  }

  /** A read into our buffers (acceptWithOwnReads); returns whether it ended inside a packet. */
  readChunk(chunk: Uint8Array): boolean {
    return !this.#closed && this.#events?.data(chunk) === true;
  }

  onEnd(): void {
    if (this.#closed) return;
    const events = this.#events;
    if (events === undefined) this.#earlyEnd = true;
    else events.end();
  }

  onError(error: Error): void {
    if (this.#closed) return;
    const events = this.#events;
    if (events === undefined) {
      this.#earlyError ??= error;
      return;
    }
    this.close();
    events.error(error);
  }

  onClose(): void {
    this.#stall?.stop();
    this.#lose();
    this.#drain?.wake();
  }

  /**
   * The socket is destroyed and the core has not been told: tell it, with
   * the socket's error if it has one. Node sets `destroyed` at once and
   * emits 'error' and 'close' later, so a write can find out first.
   */
  #lose(): void {
    if (this.#closed) return;
    const error = (this.#socket as { errored?: Error | null }).errored;
    if (error) {
      this.onError(error);
      return;
    }
    const events = this.#events;
    if (events === undefined) {
      this.#earlyLoss = true;
      return;
    }
    this.#closed = true;
    events.lost();
  }

  onDrain(): void {
    this.#awaitingDrain = false;
    this.#drain?.wake();
  }

  pause(): void {
    if (!this.#closed) this.#socket.pause();
  }

  resume(): void {
    if (!this.#closed) this.#socket.resume();
  }

  write(data: Uint8Array, more?: Uint8Array, moreToCome?: boolean): Promise<void> | undefined {
    if (this.#closed) return undefined;
    if (this.#socket.destroyed) {
      this.#lose();
      return undefined;
    }
    const turn = writeWindow.turn();
    const first = this.#lastWriteTurn !== turn;
    this.#lastWriteTurn = turn;
    if (first && moreToCome !== true) {
      const socket = this.#socket;
      if (more === undefined) {
        socket.write(data);
      } else {
        socket.cork();
        socket.write(data);
        socket.write(more);
        socket.uncork();
      }
    } else {
      if (this.#batch === undefined) {
        this.#batch = [];
        writeWindow.hold(this);
      }
      this.#batch.push(data);
      this.#batchBytes += data.length;
      if (more !== undefined) {
        this.#batch.push(more);
        this.#batchBytes += more.length;
      }
      // Held while the session has more received packets to answer (within
      // the write bound); once it has caught up, the batch leaves at once.
      if (moreToCome === true && this.#batchBytes + this.#socket.writableLength <= this.#options.writeHighWaterMark) {
        this.#heldForSession = true;
      } else if (this.#heldForSession) {
        this.flushBatch();
      }
    }
    if (this.#batchBytes + this.#socket.writableLength <= this.#options.writeHighWaterMark) return undefined;
    const drained = (this.#drain ??= new DrainSignal()).wait();
    if (this.#batch === undefined) this.#wakeWhenDrained();
    return drained;
  }

  /** Writes what was held back (the turn ended, or the session caught up), in one writev. */
  flushBatch(): void {
    this.#heldForSession = false;
    const batch = this.#batch;
    if (batch === undefined || batch.length === 0) {
      if (this.#drain?.waiting) this.#wakeWhenDrained();
      return;
    }
    this.#batch = undefined;
    this.#batchBytes = 0;
    const socket = this.#socket;
    if (socket.destroyed) {
      this.#lose();
      return this.#drain?.wake();
    }
    if (batch.length === 1) {
      socket.write(batch[0]);
    } else {
      socket.cork();
      for (const chunk of batch) socket.write(chunk);
      socket.uncork();
    }
    if (this.#drain?.waiting) this.#wakeWhenDrained();
  }

  #wakeWhenDrained(): void {
    const socket = this.#socket;
    if (socket.writableLength <= this.#options.writeHighWaterMark) this.#drain?.wake();
    else if (!this.#awaitingDrain) {
      this.#awaitingDrain = true;
      socket.once("drain", onSocketDrain);
    }
  }

  setNoDelay(noDelay: boolean): void {
    this.#socket.setNoDelay(noDelay);
  }

  setKeepAlive(keepAlive: boolean, initialDelayMs: number): void {
    this.#socket.setKeepAlive(keepAlive, initialDelayMs);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Writers waiting for the peer: the connection is closed.
    this.#drain?.wake();
    const socket = this.#socket;
    if (socket.destroyed) return;
    this.flushBatch();
    if (socket.writableLength === 0) {
      socket.destroy();
      return;
    }
    // Let bytes already written reach the peer, as long as it keeps taking
    // them.
    socket.end(() => socket.destroy());
    this.#stall = new StallWatch(() => unsentBytes(socket), () => socket.destroy(), this.#options.lingerMs);
  }

}

class NodeListener implements Listener {
  readonly localAddress: SocketAddress;
  #server: Server;
  #options: ListenOptions;
  #acceptedLocal: SocketAddress | undefined;
  #queue: AcceptQueue<NodeConnection>;
  #closed: Promise<void> | undefined;
  #ownReads: boolean;

  constructor(server: Server, localAddress: SocketAddress, options: ListenOptions) {
    this.#server = server;
    this.localAddress = localAddress;
    this.#acceptedLocal = acceptedLocalAddress(localAddress);
    this.#options = options;
    this.#queue = new AcceptQueue(options);
    const fail = (error: Error) => this.#queue.fail(error);
    this.#ownReads = acceptWithOwnReads(server, options.writeHighWaterMark, (socket) => this.#onConnection(socket), fail);
    if (!this.#ownReads) server.on("connection", (socket: Socket) => this.#onConnection(socket));
    // After listening, Node reports failed accepts (e.g. EMFILE) here.
    server.on("error", fail);
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
      // server.close() releases the port at once; its callback would wait
      // for every connection, which is the core's business.
      this.#server.close();
      this.#queue.close();
      setImmediate(resolve);
    });
    return this.#closed;
  }

  #onConnection(socket: Socket): void {
    if (this.#queue.closed) {
      socket.destroy();
      return;
    }
    this.#queue.offer(new NodeConnection(socket, this.#options, this.#acceptedLocal, this.#ownReads));
  }
}

function listen(options: ListenOptions): Promise<Listener> {
  const { hostname, port, backlog, writeHighWaterMark } = options;
  return new Promise((resolve, reject) => {
    // highWaterMark makes socket.write() report backpressure past the
    // session's write bound.
    const server = createServer({ pauseOnConnect: true, allowHalfOpen: true, highWaterMark: writeHighWaterMark });
    const onError = (error: Error & { code?: string }) => {
      server.close();
      reject(listenFailure(hostname, port, error.code, error));
    };
    server.once("error", onError);
    server.listen({ host: hostname, port, backlog, exclusive: true }, () => {
      server.off("error", onError);
      const address = server.address();
      const bound = typeof address === "object" && address !== null
        ? { hostname: address.address, port: address.port }
        : { hostname, port };
      resolve(new NodeListener(server, bound, options));
    });
  });
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
export const nodeTransport: Transport = { name: "node", listen };
