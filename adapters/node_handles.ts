/**
 * What the Node adapter does through Node's private socket handles, kept
 * here and nowhere else: reading into buffers we give (the `onread` option
 * and the listening handle's `onconnection`), a socket's unsent bytes
 * (`writeQueueSize`) and its peer's address (`getpeername`). Each has a
 * plain path on public API that is taken when a handle does not look as
 * expected (Deno's and Bun's node:net, a Node release that changed), or
 * when the environment sets `PICO_NODE_PLAIN_READS=1`; the conformance suite
 * runs on both paths.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { type Server, Socket } from "node:net";
import process from "node:process";
import { getSystemErrorName } from "node:util";
import type { SocketAddress } from "../src/transport.ts";
import { Slabs } from "../src/bytes.ts";

// Reads. Where Node lets us (see acceptWithOwnReads), a connection reads
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
// without telling which socket: the reader that took the read leaves its
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

/** Where a connection's reads go: returns whether the chunk ended inside a packet. */
export interface ReadTarget {
  readChunk(chunk: Uint8Array): boolean;
}

const READER = Symbol("pico-socket-server reader");

// A socket's handle, whose onread Node calls for every read libuv makes,
// also those that find nothing (and end of stream, and errors), which the
// socket does not pass on; ours (onHandleRead) wraps Node's to see them.
interface ReadHandle {
  onread?: unknown;
  [READER]?: OwnReads;
}
type ReadingSocket = Socket & { [READER]?: OwnReads };
let nodeOnRead: ((this: ReadHandle, arrayBuffer: unknown) => unknown) | undefined;
let reads = 0; // reads delivered so far (a read that found nothing adds none)

function onHandleRead(this: ReadHandle, arrayBuffer: unknown): unknown {
  const before = reads;
  const next = nodeOnRead!.call(this, arrayBuffer);
  // What Node returns is the buffer for the next read (undefined: the same).
  if (reads === before) return this[READER]?.caughtUp() ?? next;
  return next;
}

// The onread callback, shared by every socket (`this` is the socket).
// Pausing is the connection's business (pause() stops reading): Node need
// not stop after a read.
function onSocketRead(this: ReadingSocket, length: number): boolean {
  this[READER]?.onRead(length);
  return true;
}

/** One connection's reads into buffers we give: where the next one goes. */
class OwnReads {
  #target: ReadTarget;
  #window: Uint8Array = readBuffer; // where the next read goes
  #midPacket = false; // the last chunk ended inside a packet

  constructor(target: ReadTarget) {
    this.#target = target;
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
    const midPacket = this.#target.readChunk(chunk);
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
}

/**
 * Sends a socket's reads made with acceptWithOwnReads to `target`. A socket
 * whose handle turns out not to take our buffers still emits 'data', which
 * the adapter listens to as well.
 */
export function readInto(socket: Socket, target: ReadTarget): void {
  const reader = new OwnReads(target);
  (socket as ReadingSocket)[READER] = reader;
  const handle = (socket as { _handle?: ReadHandle })._handle;
  if (typeof handle?.onread !== "function") return;
  handle[READER] = reader;
  nodeOnRead ??= handle.onread as unknown as typeof nodeOnRead;
  handle.onread = onHandleRead;
}

const NODE_ITSELF = process.versions.deno === undefined && process.versions.bun === undefined;

/**
 * Whether a socket's unsent bytes go down within a write (Node's handle
 * tells); Deno's and Bun's node:net tell only once a write is all out.
 */
export const progressWithinWrites: boolean = NODE_ITSELF;

// The listening socket's handle: Node calls its onconnection with each
// connection it accepts.
const ACCEPT = Symbol("pico-socket-server accept");
interface ServerHandle {
  onconnection?: unknown;
  [ACCEPT]?: (status: number, clientHandle: unknown) => void;
}

function onHandleConnection(this: ServerHandle, status: number, clientHandle: unknown): void {
  this[ACCEPT]?.(status, clientHandle);
}

/**
 * Makes the server's accepted sockets read into buffers we give them (see
 * Reads, above): Node's own onconnection makes each socket without the
 * `onread` option, so the listening handle's is replaced by one that makes
 * them with it, handing each to `onSocket` (then call readInto) and each
 * failed accept to `onFailure` as an error with its POSIX code. Returns
 * false, changing nothing, where that cannot be done (not Node itself, a
 * handle without onconnection, or PICO_NODE_PLAIN_READS=1): the server then
 * emits 'connection' as usual.
 */
export function acceptWithOwnReads(
  server: Server,
  writableHighWaterMark: number,
  onSocket: (socket: Socket) => void,
  onFailure: (error: Error) => void,
): boolean {
  const handle = (server as { _handle?: ServerHandle })._handle;
  if (!NODE_ITSELF || process.env.PICO_NODE_PLAIN_READS === "1" || typeof handle?.onconnection !== "function") {
    return false;
  }
  handle[ACCEPT] = (status, clientHandle) => {
    if (status < 0 || clientHandle == null) {
      const code = status < 0 ? getSystemErrorName(status) : "EINVAL";
      onFailure(Object.assign(new Error(`accept ${code}`), { errno: status, code, syscall: "accept" }));
      return;
    }
    // As Node's own onconnection makes it, but reading into our buffers.
    onSocket(
      new Socket({
        handle: clientHandle,
        allowHalfOpen: true,
        pauseOnCreate: true,
        readable: true,
        writable: true,
        readableHighWaterMark: writableHighWaterMark,
        writableHighWaterMark,
        onread: { buffer: nextReadBuffer, callback: onSocketRead },
      } as unknown as ConstructorParameters<typeof Socket>[0]),
    );
  };
  handle.onconnection = onHandleConnection;
  return true;
}

/**
 * What a socket still has to send, going down as it goes out: writableLength
 * counts a write until all of it is out, so Node's handle also tells how
 * much of the writes under way the kernel has not taken yet. (Deno's and
 * Bun's node:net have no such count: there a write shows progress once it
 * is all out.)
 */
export function unsentBytes(socket: Socket): number {
  const handle = (socket as { _handle?: { writeQueueSize?: unknown } })._handle;
  const unsent = typeof handle?.writeQueueSize === "number" ? handle.writeQueueSize : 0;
  return socket.writableLength + unsent;
}

// Filled by a socket handle's getpeername(), then copied: asking the socket
// itself (socket.remoteAddress) would keep Node's own copy on every socket.
const peerName: { address?: unknown; port?: unknown } = {};

/** The peer's address, asked of the socket's handle once, at accept. */
export function peerAddress(socket: Socket): SocketAddress {
  const handle = (socket as { _handle?: { getpeername?: (out: object) => number } })._handle;
  if (typeof handle?.getpeername === "function") {
    peerName.address = peerName.port = undefined;
    if (handle.getpeername(peerName) === 0 && typeof peerName.address === "string" && typeof peerName.port === "number") {
      return { hostname: peerName.address, port: peerName.port };
    }
  }
  return { hostname: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
}
