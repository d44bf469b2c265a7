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

import { Buffer } from "node:buffer";
import { createServer, type Server, Socket } from "node:net";
import process from "node:process";
import { getSystemErrorName } from "node:util";
import type {
  Connection,
  ConnectionEvents,
  ListenOptions,
  Listener,
  SocketAddress,
  Transport,
} from "../src/transport.ts";
import { AcceptQueue, acceptedLocalAddress } from "../src/accept_queue.ts";
import { Slabs } from "../src/bytes.ts";
import { DrainSignal } from "../src/drain_signal.ts";
import { listenFailure } from "../src/listen_failure.ts";
import { StallWatch } from "../src/stall_watch.ts";
import { type Batched, WriteWindow } from "../src/write_window.ts";

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
// Pausing is the connection's business (pause() stops reading): Node need
// not stop after a read.
function onSocketRead(this: OwnedSocket, length: number): boolean {
  this[CONNECTION]?.onRead(length);
  return true;
}
function onSocketClose(this: OwnedSocket): void {
  this[CONNECTION]?.onClose();
}
function onSocketDrain(this: OwnedSocket): void {
  this[CONNECTION]?.onDrain();
}

/**
 * What a socket still has to send, going down as it goes out: writableLength
 * counts a write until all of it is out, so Node's handle also tells how
 * much of the writes under way the kernel has not taken yet. (Deno's and
 * Bun's node:net have no such count: there a write shows progress once it
 * is all out.)
 */
function queuedBytes(socket: Socket): number {
  const handle = (socket as { _handle?: { writeQueueSize?: unknown } })._handle;
  const unsent = typeof handle?.writeQueueSize === "number" ? handle.writeQueueSize : 0;
  return socket.writableLength + unsent;
}

// Filled by a socket handle's getpeername(), then copied: asking the socket
// itself (socket.remoteAddress) would keep Node's own copy on every socket.
const peerName: { address?: unknown; port?: unknown } = {};

/** The peer's address, asked of the socket's handle once, at accept. */
function peerAddress(socket: Socket): SocketAddress {
  const handle = (socket as { _handle?: { getpeername?: (out: object) => number } })._handle;
  if (typeof handle?.getpeername === "function") {
    peerName.address = peerName.port = undefined;
    if (handle.getpeername(peerName) === 0 && typeof peerName.address === "string" && typeof peerName.port === "number") {
      return { hostname: peerName.address, port: peerName.port };
    }
  }
  return { hostname: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
}

// Reads. Where Node lets us (see acceptIntoReadBuffer), a connection reads
// into a buffer we give it (Node's `onread`), not into a new 64 KiB buffer
// each time, then shrunk, as Node's own reads do:
// - by default into one buffer shared by all connections, from which each
//   read is copied at once, into shared slabs;
// - once a read fills its buffer (a bulk transfer: more is waiting), into a
//   bulk buffer of the connection's own, window after window, each read
//   right behind the one before and handed on as a view, without a copy; a
//   packet cut between reads still lies whole in one buffer, so the decoder
//   hands it on as a view too instead of joining it.
// When the kernel has no more for it (a read that does not fill its window,
// or libuv's next read finds nothing), the connection goes back to the
// shared buffer, unless its last chunk ended inside a packet (whose start
// keeps the bulk buffer anyway): an idle connection holds no buffer.
// Bulk buffers are not zero-filled (Buffer.allocUnsafeSlow): every byte of a
// chunk is one that was read into it, though the rest of its buffer, reached
// through `chunk.buffer`, may hold old memory of the process.
const READ_SIZE = 64 * 1024;
const BULK_SIZE = 1024 * 1024;
const readBuffer = new Uint8Array(READ_SIZE);
const readSlabs = new Slabs(64 * 1024, 8 * 1024);

// Node asks for a socket's next read buffer right after each read callback,
// without telling which socket: the connection that took the read leaves its
// choice here.
let nextBuffer: Uint8Array = readBuffer;
function nextReadBuffer(): Uint8Array {
  const next = nextBuffer;
  nextBuffer = readBuffer;
  return next;
}

/** `rest` of a bulk buffer as the next read window, or a new bulk buffer. */
function bulkWindow(rest: Uint8Array | undefined): Uint8Array {
  if (rest === undefined || rest.length < READ_SIZE) {
    return new Uint8Array(Buffer.allocUnsafeSlow(BULK_SIZE).buffer, 0, READ_SIZE);
  }
  return rest.subarray(0, READ_SIZE);
}

// A socket's handle, whose onread Node calls for every read libuv makes,
// also those that find nothing (and end of stream, and errors), which the
// socket does not pass on; ours (onHandleRead) wraps Node's to see them.
interface ReadHandle {
  onread?: unknown;
  [CONNECTION]?: NodeConnection;
}
let nodeOnRead: ((this: ReadHandle, arrayBuffer: unknown) => unknown) | undefined;
let reads = 0; // reads delivered so far (a read that found nothing adds none)

function onHandleRead(this: ReadHandle, arrayBuffer: unknown): unknown {
  const before = reads;
  const next = nodeOnRead!.call(this, arrayBuffer);
  // What Node returns is the buffer for the next read (undefined: the same).
  if (reads === before) return this[CONNECTION]?.caughtUp() ?? next;
  return next;
}

class NodeConnection implements Connection, Batched {

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
  #readsIntoBuffer: boolean; // reads arrive by onRead(), not as 'data' events
  #window: Uint8Array = readBuffer; // where the next read goes
  #midPacket = false; // the last chunk ended inside a packet

  /**
   * @param local This side's address when the listener's tells it (bound to
   * one address, the accepted socket has that address and port), which saves
   * a getsockname call per connection, and is one frozen object shared by
   * the listener's connections; otherwise it is asked of the socket.
   * @param readsIntoBuffer The socket reads into readBuffer (onread).
   */
  constructor(socket: Socket, options: ListenOptions, local: SocketAddress | undefined, readsIntoBuffer: boolean) {
    const owned = socket as OwnedSocket;
    this.#socket = owned;
    this.#options = options;
    this.#readsIntoBuffer = readsIntoBuffer;
    if (readsIntoBuffer) {
      const handle = (socket as { _handle?: ReadHandle })._handle!;
      handle[CONNECTION] = this;
      nodeOnRead ??= handle.onread as typeof nodeOnRead;
      handle.onread = onHandleRead;
    }
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
    if (!this.#readsIntoBuffer) socket.on("data", onSocketData);
    if (this.#earlyEnd) events.end();
    socket.resume();
  }

  // --- Called by the socket listeners.

  onData(chunk: Uint8Array): void {
    if (!this.#closed) this.#events?.data(chunk);
  }

  /** `length` bytes were read into this connection's window. */
  onRead(length: number): void {
    reads++;
    const window = this.#window;
    let chunk: Uint8Array;
    if (window !== readBuffer) {
      chunk = window.subarray(0, length);
    } else if (length < READ_SIZE) {
      chunk = readSlabs.cut(length);
      chunk.set(readBuffer.subarray(0, length));
    } else {
      chunk = bulkWindow(undefined);
      chunk.set(readBuffer);
    }
    const events = this.#events;
    const midPacket = !this.#closed && events !== undefined && events.data(chunk) === true;
    this.#midPacket = midPacket;
    // The next read goes right behind this one while more is waiting (this
    // read filled its window) or a packet goes on into it.
    let next: Uint8Array = readBuffer;
    if (length === window.length || (midPacket && window !== readBuffer)) {
      const end = chunk.byteOffset + length;
      next = bulkWindow(new Uint8Array(chunk.buffer, end, chunk.buffer.byteLength - end));
    }
    nextBuffer = this.#window = next;
  }

  /**
   * A read found nothing more (or the stream ended): back to the shared
   * buffer unless a packet goes on in this one (whose start keeps it
   * anyway). Returns the buffer for Node to read into next, or undefined to
   * keep the one it has.
   */
  caughtUp(): Uint8Array | undefined {
    if (this.#window === readBuffer || this.#midPacket) return undefined;
    return this.#window = readBuffer;
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
    this.#stall = new StallWatch(() => queuedBytes(socket), () => socket.destroy(), this.#options.lingerMs);
  }

}

class NodeListener implements Listener {
  readonly localAddress: SocketAddress;
  #server: Server;
  #options: ListenOptions;
  #acceptedLocal: SocketAddress | undefined;
  #queue: AcceptQueue<NodeConnection>;
  #closed: Promise<void> | undefined;
  #readsIntoBuffer: boolean;

  constructor(server: Server, localAddress: SocketAddress, options: ListenOptions) {
    this.#server = server;
    this.localAddress = localAddress;
    this.#acceptedLocal = acceptedLocalAddress(localAddress);
    this.#options = options;
    this.#queue = new AcceptQueue(options);
    this.#readsIntoBuffer = acceptIntoReadBuffer(server, this);
    if (!this.#readsIntoBuffer) server.on("connection", (socket: Socket) => this.#onConnection(socket));
    // After listening, Node reports failed accepts (e.g. EMFILE) here.
    server.on("error", (error: Error) => this.#queue.fail(error));
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

  /** Node accepted a connection, or failed to (`status` < 0). */
  onHandle(status: number, clientHandle: unknown): void {
    if (status < 0 || clientHandle == null) {
      const code = status < 0 ? getSystemErrorName(status) : "EINVAL";
      const error = Object.assign(new Error(`accept ${code}`), { errno: status, code, syscall: "accept" });
      this.#server.emit("error", error);
      return;
    }
    const highWaterMark = this.#options.writeHighWaterMark;
    // As Node's own onconnection makes it, but reading into readBuffer.
    const socket = new Socket({
      handle: clientHandle,
      allowHalfOpen: true,
      pauseOnCreate: true,
      readable: true,
      writable: true,
      readableHighWaterMark: highWaterMark,
      writableHighWaterMark: highWaterMark,
      onread: { buffer: nextReadBuffer, callback: onSocketRead },
    } as unknown as ConstructorParameters<typeof Socket>[0]);
    this.#onConnection(socket);
  }

  #onConnection(socket: Socket): void {
    if (this.#queue.closed) {
      socket.destroy();
      return;
    }
    this.#queue.offer(new NodeConnection(socket, this.#options, this.#acceptedLocal, this.#readsIntoBuffer));
  }
}

const NODE_ITSELF = process.versions.deno === undefined && process.versions.bun === undefined;

// The listening socket's handle: Node calls its onconnection with each
// connection it accepts (the listener it serves, our own property).
const LISTENER = Symbol("pico-socket-server listener");
interface ServerHandle {
  onconnection?: unknown;
  [LISTENER]?: NodeListener;
}

function onHandleConnection(this: ServerHandle, status: number, clientHandle: unknown): void {
  this[LISTENER]?.onHandle(status, clientHandle);
}

/**
 * Makes the server's accepted sockets read into buffers we give them (see
 * Reads, above): Node's own onconnection makes each socket without the
 * `onread` option, so the listening handle's is replaced by one that makes
 * them with it. Under Deno's and Bun's node:net (whose handles have an
 * onconnection too, but not Node's sockets behind it) the server keeps its
 * own, and its sockets emit 'data' as usual.
 */
function acceptIntoReadBuffer(server: Server, listener: NodeListener): boolean {
  const handle = (server as { _handle?: ServerHandle })._handle;
  if (!NODE_ITSELF || typeof handle?.onconnection !== "function") return false;
  handle[LISTENER] = listener;
  handle.onconnection = onHandleConnection;
  return true;
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
