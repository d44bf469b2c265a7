/**
 * One TCP session: a connection, its packets in and out, and how it ended.
 *
 * @module
 */

import { invalidArgument, SocketServerError } from "./errors.ts";
import { createDecoder, encodePacket, type PacketDecoder, type PacketSink, type PacketType } from "./framing.ts";
import { raise, type SessionEndReason } from "./end_reason.ts";
import type { ResolvedSessionOptions } from "./options.ts";
import type { Connection, ConnectionEvents, SocketAddress } from "./transport.ts";
import type { ProxyHeader } from "./proxy_protocol.ts";

/**
 * Per-session settings (proc_socket_server's SpawnOpts tuned the
 * per-session process; these tune the per-session socket).
 *
 * @example Closing silent sessions after a minute
 * ```ts
 * import type { SessionOptions } from "@pico/socket-server";
 * const session: SessionOptions = { idleTimeoutMs: 60_000, keepAlive: true };
 * ```
 */
export interface SessionOptions {
  /**
   * Sends small writes at once (Nagle's algorithm off), as proc_socket_server's
   * `{nodelay, true}`.
   * @default {true}
   */
  noDelay?: boolean;
  /**
   * Turns TCP keep-alive probes on.
   * @default {false}
   */
  keepAlive?: boolean;
  /**
   * Idle time before the first keep-alive probe, where the runtime lets it be
   * set.
   * @default {60000}
   */
  keepAliveDelayMs?: number;
  /**
   * Ends a session that receives nothing for this long: a pending or later
   * `recv()` rejects with code `"timeout"`, and the session ends with reason
   * `"timeout"` unless the handler catches it. `0` means never.
   * @default {0}
   */
  idleTimeoutMs?: number;
  /**
   * Bytes of received but not yet `recv()`ed packets above which the server
   * stops reading the socket, so a fast peer cannot grow memory without
   * bound.
   * @default {262144}
   */
  readHighWaterMark?: number;
  /**
   * Bytes queued for the peer above which `send()` waits until they drain,
   * so a peer that never reads holds at most this plus one packet in the
   * server's memory. The default is the transport's: 64 KiB on Node, and
   * 256 KiB on Deno, whose writes are asynchronous (what was handed to the
   * socket counts until Deno reports it written, on the next turn of the
   * event loop, and a mark below a few packets makes each send wait that
   * turn), and on Bun, whose sends are one system call each (answers held
   * for the handler's next packets leave joined up to the mark).
   * @default {65536}
   */
  writeHighWaterMark?: number;
  /**
   * How long bytes still queued when the session closes (a handler that
   * sends and returns) may wait for a peer that takes none of them, in
   * milliseconds; then they are dropped with the socket. They go out as long
   * as the peer keeps taking them. `0` drops them at close. Like proc_socket_server's
   * `{linger, {true, Seconds}}`. (With the Node adapter on Deno or Bun,
   * whose `node:net` tells no progress within a write, a peer taking one
   * large batch of writes for longer than this counts as taking none.)
   * @default {5000}
   */
  lingerMs?: number;
}

/**
 * What every session shows, in its own thread or across threads: a
 * {@linkcode Session} is one; so is each session of a group of worker
 * threads (`workers`) as the main thread sees it in `children()` and its
 * events, where the counters are as of the session's start or end.
 *
 * @example Listing a group's sessions
 * ```ts
 * import type { SessionInfo } from "@pico/socket-server";
 * function describe(session: SessionInfo): string {
 *   const { hostname, port } = session.remoteAddress;
 *   return `#${session.id} on worker ${session.worker} from ${hostname}:${port}`;
 * }
 * ```
 */
export interface SessionInfo {
  /** A number unique among the server's sessions (the whole group's, with workers). */
  readonly id: number;
  /** The worker thread that runs it: 1 to n with `workers`, else 0. */
  readonly worker: number;
  /** The peer's address. */
  readonly remoteAddress: SocketAddress;
  /** This side's address. */
  readonly localAddress: SocketAddress;
  /** The load balancer's address, behind one (`proxyProtocol`); else `undefined`. */
  readonly proxyAddress: SocketAddress | undefined;
  /** When the session started (milliseconds since the epoch). */
  readonly startedAt: number;
  /** Whether the connection is TLS. */
  readonly encrypted: boolean;
  /** The protocol agreed by ALPN, or `null`. */
  readonly alpnProtocol: string | null;
  /** Bytes received from the peer. */
  readonly bytesIn: number;
  /** Bytes written to the peer. */
  readonly bytesOut: number;
  /** Whole packets received. */
  readonly packetsIn: number;
  /** Packets sent. */
  readonly packetsOut: number;
  /** Closes the session's connection (in its own thread). */
  close(): void;
}

// The worker thread this module runs in (1 to n in a group's thread, else 0).
let threadWorker = 0;

/** Marks this thread as worker `worker` of a group (its sessions' `worker`). */
export function setThreadWorker(worker: number): void {
  threadWorker = worker;
}

/** What a session needs from the server that runs it. */
export interface SessionInit {
  id: number;
  connection: Connection;
  packetType: PacketType;
  packetSize: number;
  options: ResolvedSessionOptions;
  /** The PROXY header the connection began with, if any. */
  proxy?: ProxyHeader;
}

const NO_TLVS: ReadonlyMap<number, Uint8Array> = new Map();

const DONE: IteratorResult<Uint8Array> = Object.freeze({ done: true, value: undefined });

// The ways into a session's private methods, set by its static block, for the
// server and for the small objects below: they keep per-session state to one
// object each, with their methods on the prototype, so that an idle session
// carries no closures.
let shutdown: (session: Session, reason: SocketServerError) => void;
let onData: (session: Session, chunk: Uint8Array) => boolean;
let onEnd: (session: Session) => void;
let onError: (session: Session, error: Error) => void;
let onLost: (session: Session) => void;
let deliver: (session: Session, packet: Uint8Array) => void;
let receive: (session: Session, timeoutMs: number | undefined, forIterator: boolean) => Promise<unknown>;

/**
 * A session's own small object: what its connection and decoder report to,
 * and the async iterator over its packets (a plain one over recv(), since an
 * async generator would add promises and a suspended frame to every packet).
 * One object does both so that an idle session carries one less. Leaving a
 * `for await` loop early (break) ends that iteration, not the session; the
 * next loop starts a new one.
 */
class SessionEvents implements ConnectionEvents, PacketSink, AsyncIterableIterator<Uint8Array> {
  readonly session: Session;
  #iterationDone = false;
  constructor(session: Session) {
    this.session = session;
  }
  data(chunk: Uint8Array): boolean {
    return onData(this.session, chunk);
  }
  end(): void {
    onEnd(this.session);
  }
  error(error: Error): void {
    onError(this.session, error);
  }
  lost(): void {
    onLost(this.session);
  }
  packet(packet: Uint8Array): void {
    deliver(this.session, packet);
  }
  next(): Promise<IteratorResult<Uint8Array>> {
    if (this.#iterationDone) return Promise.resolve(DONE);
    return receive(this.session, undefined, true) as Promise<IteratorResult<Uint8Array>>;
  }
  return(): Promise<IteratorResult<Uint8Array>> {
    this.#iterationDone = true;
    return Promise.resolve(DONE);
  }
  /** Starts an iteration. */
  iterate(): this {
    this.#iterationDone = false;
    return this;
  }
  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this;
  }
}

/** What a pending recv() is settled with. */
type Waited = Uint8Array | null | IteratorResult<Uint8Array>;

// One settled promise serves every send() that needs no waiting.
const RESOLVED: Promise<void> = Promise.resolve();

/**
 * Options of one `recv()` call.
 *
 * @example Waiting at most five seconds for a request
 * ```ts
 * import type { RecvOptions, Session } from "@pico/socket-server";
 * const options: RecvOptions = { timeoutMs: 5000 };
 * async function handler(session: Session): Promise<void> {
 *   await session.recv(options);
 * }
 * ```
 */
export interface RecvOptions {
  /**
   * Rejects with code `"timeout"` if no packet arrives within this many
   * milliseconds; the session stays open, so a handler may catch it and go
   * on. Uncaught, the session ends with reason `"timeout"`.
   */
  timeoutMs?: number;
}

/**
 * One client connection, as the handler sees it: receive packets, send
 * packets, close. Created by the server; a handler gets one per connection.
 *
 * @example An echo handler
 * ```ts
 * import { startServer, type Session } from "@pico/socket-server";
 * async function echo(session: Session): Promise<void> {
 *   for await (const packet of session) await session.send(packet);
 * }
 * const server = await startServer(0, 10, echo);
 * await server.stop();
 * ```
 */
export class Session implements SessionInfo {
  /** A number unique among the server's sessions (the whole group's, with workers). */
  readonly id: number;
  /** The peer's address. */
  readonly remoteAddress: SocketAddress;
  /** This side's address. */
  readonly localAddress: SocketAddress;
  /** How the byte stream is cut into packets. */
  readonly packetType: PacketType;
  /** When the session started (milliseconds since the epoch). */
  readonly startedAt: number;
  /** Bytes received from the peer so far. */
  bytesIn = 0;
  /** Bytes written to the peer so far (headers and newlines included). */
  bytesOut = 0;
  /** Whole packets received so far. */
  packetsIn = 0;
  /** Packets sent so far. */
  packetsOut = 0;

  #connection: Connection;
  #events: SessionEvents;
  // Packet type 0 needs none: each chunk is a packet.
  #decoder: PacketDecoder | undefined;
  // The server's options, shared by its sessions.
  #options: ResolvedSessionOptions;
  // Received packets not yet taken by recv(); `#queueHead` avoids shift().
  #queue: Uint8Array[] | undefined; // made on first use
  #queueHead = 0;
  #queuedBytes = 0;
  #paused = false;
  // The pending recv(): resolved with a packet (or null at the end), or, for
  // the async iterator, with the iterator result itself (one promise per
  // packet). `#resolve` is set while one is pending. Its reject function is
  // not kept (an idle session would carry it): a failure settles the promise
  // with a rejected one.
  #resolve: ((value: Waited | PromiseLike<Waited>) => void) | undefined;
  #recvTimer: ReturnType<typeof setTimeout> | undefined;
  #forIterator = false;
  // Set once no more packets will arrive: end of stream, or the error that
  // recv() reports once the queue is empty.
  #inputDone = false;
  #failure: SocketServerError | null = null;
  // Set once the connection can carry no more bytes: closed by this side, by
  // the peer after its end of stream, or failed. From then on send() rejects,
  // with `#sendFailure` when the loss came with one.
  #closed = false;
  #sendFailure: SocketServerError | undefined;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  #lastInputAt = 0;
  #abort: AbortController | undefined;
  #shutdownReason: SocketServerError | undefined;
  #proxy: ProxyHeader | undefined;

  static {
    shutdown = (session, reason) => {
      if (session.#shutdownReason !== undefined) return;
      session.#shutdownReason = reason;
      session.#abort?.abort(reason);
    };
    onData = (session, chunk) => session.#onData(chunk);
    onEnd = (session) => session.#onEnd();
    onError = (session, error) => session.#onError(error);
    onLost = (session) => session.#onLost();
    deliver = (session, packet) => session.#deliver(packet);
    receive = (session, timeoutMs, forIterator) => session.#receive(timeoutMs, forIterator);
  }

  /**
   * The load balancer's address (the socket's peer) when the connection
   * began with a PROXY header (`proxyProtocol`), else `undefined`.
   *
   * @example Logging both addresses
   * ```ts
   * import type { Session } from "@pico/socket-server";
   * const handler = (session: Session) =>
   *   console.log(`${session.remoteAddress.hostname} via ${session.proxyAddress?.hostname ?? "direct"}`);
   * ```
   */
  get proxyAddress(): SocketAddress | undefined {
    return this.#proxy === undefined ? undefined : this.#connection.remoteAddress;
  }

  /**
   * The TLVs of a version 2 PROXY header, by type: `0x01` ALPN, `0x02`
   * authority (the TLS SNI the balancer saw), `0x05` a unique ID, and
   * others; empty without one. A header with a CRC32c was checked.
   *
   * @example Reading the authority the balancer saw
   * ```ts
   * import type { Session } from "@pico/socket-server";
   * const authority = (session: Session) => {
   *   const bytes = session.proxyTlvs.get(0x02);
   *   return bytes === undefined ? undefined : new TextDecoder().decode(bytes);
   * };
   * ```
   */
  get proxyTlvs(): ReadonlyMap<number, Uint8Array> {
    return this.#proxy?.tlvs ?? NO_TLVS;
  }

  /**
   * The worker thread that runs this session: 1 to n on a server started
   * with `workers`, else 0.
   *
   * @example Logging where a session runs
   * ```ts
   * import type { Session } from "@pico/socket-server";
   * const handler = (session: Session) => console.log(`session ${session.id} on worker ${session.worker}`);
   * ```
   */
  get worker(): number {
    return threadWorker;
  }

  /**
   * Whether the connection is TLS (the server was started with `tls`).
   *
   * @example Refusing plain connections to a command
   * ```ts
   * import type { Session } from "@pico/socket-server";
   * async function admin(session: Session): Promise<void> {
   *   if (!session.encrypted) return session.close();
   *   await session.send("welcome\n");
   * }
   * ```
   */
  get encrypted(): boolean {
    return this.#connection.encrypted === true;
  }

  /**
   * The protocol the client and server agreed by ALPN during the TLS
   * handshake (one of the server's `tls.alpnProtocols`), or `null`: no TLS,
   * or the client offered none the server has.
   *
   * @example Choosing a protocol
   * ```ts
   * import type { Session } from "@pico/socket-server";
   * async function serve(session: Session): Promise<void> {
   *   if (session.alpnProtocol === "echo/2") await session.send("v2\n");
   *   else await session.send("v1\n");
   * }
   * ```
   */
  get alpnProtocol(): string | null {
    return this.#connection.alpnProtocol ?? null;
  }

  /**
   * Wraps a started connection. Called by the server, not by handlers.
   *
   * @param init The connection and how to frame it.
   * @example Not called directly
   * ```ts
   * // A handler receives its Session from the server:
   * import type { Session } from "@pico/socket-server";
   * const handler = (session: Session) => session.close();
   * ```
   */
  constructor(init: SessionInit) {
    const { connection, options, proxy } = init;
    this.id = init.id;
    // Behind a load balancer, the header's addresses are the session's.
    const relayed = proxy?.command === "proxy" ? proxy : undefined;
    this.remoteAddress = relayed?.source ?? connection.remoteAddress;
    this.localAddress = relayed?.destination ?? connection.localAddress;
    this.#proxy = proxy;
    this.packetType = init.packetType;
    this.startedAt = Date.now();
    this.#connection = connection;
    this.#options = options;
    const events = new SessionEvents(this);
    this.#events = events;
    this.#decoder = init.packetType === 0 ? undefined : createDecoder(init.packetType, init.packetSize, events);
    connection.setNoDelay(options.noDelay);
    if (options.keepAlive) connection.setKeepAlive(true, options.keepAliveDelayMs);
    if (options.idleTimeoutMs > 0) {
      this.#lastInputAt = Date.now();
      this.#armIdleTimer(options.idleTimeoutMs);
    }
    connection.start(events);
  }

  /**
   * Whether the connection is over: closed by either side, or ended by the
   * peer (a session may still `send` after the peer's end of stream, until
   * its handler returns).
   */
  get closed(): boolean {
    return this.#closed || this.#inputDone;
  }

  /**
   * Aborted when the server begins a graceful stop: the handler should finish
   * what it is doing and return. Its `reason` is a
   * {@linkcode SocketServerError} with code `"shutdown"`.
   *
   * @example Ending a session politely when the server drains
   * ```ts
   * import type { Session } from "@pico/socket-server";
   * async function handler(session: Session): Promise<void> {
   *   session.signal.addEventListener("abort", () => {
   *     session.send("server going down\n").finally(() => session.close());
   *   });
   *   for await (const packet of session) await session.send(packet);
   * }
   * ```
   */
  get signal(): AbortSignal {
    // Made on first use: most handlers never look at it.
    this.#abort ??= new AbortController();
    if (this.#shutdownReason !== undefined && !this.#abort.signal.aborted) {
      this.#abort.abort(this.#shutdownReason);
    }
    return this.#abort.signal;
  }

  /**
   * Resolves with the next whole packet, or `null` at end of stream or once
   * the session is closed. Rejects with a {@linkcode SocketServerError} whose
   * code is `"socket_error"`, `"packet_too_large"`, `"truncated_packet"` or
   * `"timeout"` when input failed (or `options.timeoutMs` passed); letting
   * that error propagate ends the session with reason `"socket_error"` (or
   * `"timeout"`). One `recv()` may be pending at a time.
   *
   * @param options `timeoutMs`: how long to wait for the packet.
   * @returns The packet's bytes (header or line terminator removed), or `null`:
   * a view on the buffer they were read into, which other packets may share
   * (copy a packet, `packet.slice()`, to hold it for long without its buffer).
   * @example Reading one request
   * ```ts
   * import type { Session } from "@pico/socket-server";
   * async function handler(session: Session): Promise<void> {
   *   const request = await session.recv();
   *   if (request !== null) await session.send(request);
   * }
   * ```
   */
  recv(options?: RecvOptions): Promise<Uint8Array | null> {
    return this.#receive(options?.timeoutMs, false) as Promise<Uint8Array | null>;
  }

  #receive(
    timeoutMs: number | undefined,
    forIterator: boolean,
  ): Promise<Waited> {
    if (this.#queue !== undefined && this.#queueHead < this.#queue.length) {
      const packet = this.#take();
      return Promise.resolve(forIterator ? { done: false, value: packet } : packet);
    }
    if (this.#inputDone || this.#closed) {
      return this.#failure ? Promise.reject(this.#failure) : Promise.resolve(forIterator ? DONE : null);
    }
    if (this.#resolve !== undefined) {
      return Promise.reject(
        new SocketServerError(
          `Session ${this.id} already has a recv() pending`,
          "invalid_argument",
        ),
      );
    }
    if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs >= 0)) {
      return Promise.reject(
        invalidArgument("recv timeout", timeoutMs, "a number of milliseconds, 0 or more"),
      );
    }
    return new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#forIterator = forIterator;
      if (timeoutMs !== undefined) {
        const timer = setTimeout(() => {
          if (this.#recvTimer !== timer) return;
          this.#clearWaiter();
          reject(raise(
            new SocketServerError(`Session ${this.id} received no packet within ${timeoutMs} ms`, "timeout"),
            "timeout",
          ));
        }, timeoutMs);
        this.#recvTimer = timer;
      }
    });
  }

  /**
   * Iterates over packets until end of stream.
   *
   * @returns An async iterator of packets.
   * @example Echoing every packet
   * ```ts
   * import type { Session } from "@pico/socket-server";
   * async function handler(session: Session): Promise<void> {
   *   for await (const packet of session) await session.send(packet);
   * }
   * ```
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this.#events.iterate();
  }

  /**
   * Sends one packet, framed per the packet type (header added, or `\n` for
   * `"line"`); a string is sent as UTF-8. Resolves once the runtime has
   * taken the bytes within its buffer bound, so a slow peer slows the sender
   * instead of growing memory. The bytes belong to the session from the call
   * on: do not change them afterwards. Sent while received packets wait to
   * be taken, the bytes may be held until the handler has taken them (or
   * the turn of the event loop ends), so that the answers to them leave
   * together. Once the connection can carry no more bytes (closed by either
   * side, reset, failed), it rejects with code `"socket_closed"` or
   * `"socket_error"` (`"timeout"` once the idle timeout closed it); letting
   * that error propagate ends the session with that reason, not as a crash.
   * (A send already waiting for the peer when the connection goes resolves:
   * its bytes were taken while it was open.) Rejects with
   * `"packet_too_large"` when the data does not fit the header.
   *
   * @param data The packet's body.
   * @returns A promise resolved once the data is accepted.
   * @example Answering a line
   * ```ts
   * import type { Session } from "@pico/socket-server";
   * async function handler(session: Session): Promise<void> {
   *   await session.send("hello");
   * }
   * ```
   */
  send(data: Uint8Array | string): Promise<void> {
    if (this.#closed) return Promise.reject(this.#sendError());
    let pending: Promise<void> | undefined;
    // Packets received and not yet taken: the handler will likely answer
    // them too, at once, so the connection may hold this write for theirs.
    const moreToCome = this.#queue !== undefined && this.#queueHead < this.#queue.length;
    if (this.packetType === 0 && typeof data !== "string") {
      // Raw bytes go out as they are: no framing, no copy.
      this.bytesOut += data.length;
      pending = this.#connection.write(data, undefined, moreToCome);
    } else {
      let frames: Uint8Array[];
      try {
        frames = encodePacket(this.packetType, data);
      } catch (error) {
        return Promise.reject(error);
      }
      const [head, body] = frames;
      this.bytesOut += head.length + (body?.length ?? 0);
      pending = this.#connection.write(head, body, moreToCome);
    }
    this.packetsOut++;
    // A write that finds the connection gone reports it before it returns:
    // these bytes were not taken. A send already waiting for the peer when
    // the connection goes resolves (its bytes were taken while it was open,
    // and a fire-and-forget send must not become an unhandled rejection);
    // the next one rejects.
    if (this.#closed) return Promise.reject(this.#sendError());
    return pending ?? RESOLVED;
  }

  /** Why a send fails: the connection's failure, or its close. */
  #sendError(): SocketServerError {
    return this.#sendFailure ??= raise(
      new SocketServerError(`Cannot send on session ${this.id}: the connection is closed`, "socket_closed"),
      "socket_closed",
    );
  }

  /**
   * Closes the connection; a pending `recv()` resolves `null`. Idempotent.
   * Bytes already sent still go out as long as the peer keeps taking them;
   * once it has taken none for `lingerMs` (5 s by default) they are dropped
   * with the socket.
   *
   * @example Closing every session of a server
   * ```ts
   * import { serverChildren } from "@pico/socket-server";
   * for (const session of await serverChildren("chat")) session.close();
   * ```
   */
  close(): void {
    // Packets not yet taken are dropped: whoever closes is done reading.
    this.#queue = undefined;
    this.#queueHead = 0;
    this.#queuedBytes = 0;
    this.#closeConnection();
  }

  #closeConnection(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopIdleTimer();
    this.#connection.close();
    this.#settleWaiter();
  }

  #take(): Uint8Array {
    const queue = this.#queue!;
    const packet = queue[this.#queueHead];
    queue[this.#queueHead++] = undefined as unknown as Uint8Array;
    if (this.#queueHead === queue.length) {
      queue.length = 0;
      this.#queueHead = 0;
    }
    this.#queuedBytes -= packet.length;
    if (this.#paused && this.#queuedBytes <= this.#options.readHighWaterMark / 2 && !this.#closed && !this.#inputDone) {
      this.#paused = false;
      this.#connection.resume();
    }
    return packet;
  }

  #deliver(packet: Uint8Array): void {
    this.packetsIn++;
    const resolve = this.#resolve;
    if (resolve !== undefined) {
      const forIterator = this.#forIterator;
      this.#clearWaiter();
      resolve(forIterator ? { done: false, value: packet } : packet);
      return;
    }
    (this.#queue ??= []).push(packet);
    this.#queuedBytes += packet.length;
    if (!this.#paused && this.#queuedBytes > this.#options.readHighWaterMark) {
      this.#paused = true;
      this.#connection.pause();
    }
  }

  #onData(chunk: Uint8Array): boolean {
    if (this.#inputDone) return false;
    this.bytesIn += chunk.length;
    if (this.#options.idleTimeoutMs > 0) this.#lastInputAt = Date.now();
    try {
      const decoder = this.#decoder;
      if (decoder !== undefined) return decoder.push(chunk);
      this.#deliver(chunk);
    } catch (error) {
      this.#endInput(raise(error as SocketServerError, "socket_error"));
    }
    return false;
  }

  #onEnd(): void {
    if (this.#inputDone) return;
    try {
      this.#decoder?.finish();
    } catch (error) {
      this.#endInput(raise(error as SocketServerError, "socket_error"));
      return;
    }
    this.#inputDone = true;
    // The peer is gone; the connection stays open (half-open) so the handler
    // can still answer, until it returns.
    this.#stopIdleTimer();
    this.#settleWaiter();
  }

  #onError(error: Error): void {
    if (this.#closed) return;
    const code = (error as { code?: unknown }).code;
    this.#fail(raise(
      new SocketServerError(
        `Connection from ${this.remoteAddress.hostname}:${this.remoteAddress.port} failed: ${
          typeof code === "string" ? code : error.message
        }`,
        "socket_error",
        { cause: error },
      ),
      "socket_error",
    ));
  }

  /**
   * The connection is gone without an error (closed by the peer after its
   * end of stream, or a reset the runtime reports as a close): input ends
   * as at end of stream, if it had not, and sends fail from now on.
   */
  #onLost(): void {
    if (this.#closed) return;
    this.#onEnd();
    this.#closeConnection();
  }

  /**
   * Ends input with an error, unless it had ended, and closes the
   * connection; packets received before it are still delivered, then the
   * error. Sends fail with it from now on.
   */
  #fail(failure: SocketServerError): void {
    if (this.#closed) return;
    this.#sendFailure = failure;
    this.#endInput(failure);
    this.#closeConnection();
  }

  /**
   * Ends input with a framing error: packets decoded before it are still
   * delivered and the handler may still answer them; the error comes next.
   */
  #endInput(failure: SocketServerError): void {
    if (this.#inputDone) return;
    this.#inputDone = true;
    this.#failure = failure;
    this.#stopIdleTimer();
    if (!this.#closed) this.#connection.pause();
    this.#settleWaiter();
  }

  #settleWaiter(): void {
    const resolve = this.#resolve;
    if (resolve === undefined) return;
    const forIterator = this.#forIterator;
    this.#clearWaiter();
    if (this.#failure) resolve(Promise.reject(this.#failure));
    else resolve(forIterator ? DONE : null);
  }

  #clearWaiter(): void {
    this.#resolve = undefined;
    if (this.#recvTimer !== undefined) {
      clearTimeout(this.#recvTimer);
      this.#recvTimer = undefined;
    }
  }

  #armIdleTimer(delayMs: number): void {
    this.#idleTimer = setTimeout(() => {
      // Re-arming on every chunk would cost a timer per read; instead the
      // timer checks when input last came and sleeps for the rest.
      const idleFor = Date.now() - this.#lastInputAt;
      if (idleFor < this.#options.idleTimeoutMs) {
        this.#armIdleTimer(this.#options.idleTimeoutMs - idleFor);
        return;
      }
      this.#fail(raise(
        new SocketServerError(`Session ${this.id} received nothing for ${this.#options.idleTimeoutMs} ms`, "timeout"),
        "timeout",
      ));
    }, delayMs);
  }

  #stopIdleTimer(): void {
    if (this.#idleTimer !== undefined) {
      clearTimeout(this.#idleTimer);
      this.#idleTimer = undefined;
    }
  }
}

/** Aborts `session.signal`: the server has begun a graceful stop. */
export function requestShutdown(session: Session, reason: SocketServerError): void {
  shutdown(session, reason);
}
