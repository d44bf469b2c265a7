/**
 * The contract between the runtime-neutral core and one runtime's sockets,
 * for those who write a transport (`@pico/socket-server/transport`); a
 * server takes one as its `transport` option.
 *
 * An adapter (`adapters/deno.ts`, `adapters/bun.ts`, `adapters/node.ts`)
 * implements {@linkcode Transport} and nothing more. The core never touches a
 * runtime API: it asks a {@linkcode Listener} for the next connection only when
 * it has a free session slot, and starts a connection's byte flow only when
 * that connection's session starts.
 *
 * Rules every adapter keeps:
 * - `accept()` hands out connections in arrival order, one per call; while the
 *   core does not call it, new connections wait (in the kernel's backlog, or
 *   held paused and unread by the adapter, at most `backlog` of them; past that
 *   they are refused and counted in `refused`).
 * - A connection delivers no event before `start()`, and none after `close()`.
 * - Peer resets and other socket failures arrive as `error` events, never as
 *   thrown or unhandled errors. `end` is delivered at most once; so is the
 *   connection's loss, as `error` (with what failed) or `lost` (the socket
 *   is gone and the runtime tells no error), also after `end`; nothing
 *   follows it.
 * - `write()` takes ownership of the bytes; it returns `undefined` when the
 *   runtime accepted them within its buffer bound, or a promise that resolves
 *   once the buffer has drained (or the connection has closed). It never
 *   rejects and never throws: failures surface as `error` or `lost` events.
 *   A `write()` that finds the connection gone delivers that event before it
 *   returns, and a drain that ends because the connection is gone delivers
 *   it before the promise resolves: the core never takes bytes handed to a
 *   dead connection for sent.
 * - `close()` is idempotent, safe at any time (also while bytes are being
 *   read), and discards unsent data only if the peer takes none of it for
 *   `lingerMs`.
 *
 * @module
 */

/**
 * A network endpoint: an IP address and a port.
 *
 * @example Reading a session's peer
 * ```ts
 * import type { SocketAddress } from "@pico/socket-server/transport";
 * const peer: SocketAddress = { hostname: "127.0.0.1", port: 40112 };
 * console.log(`${peer.hostname}:${peer.port}`);
 * ```
 */
export interface SocketAddress {
  /**
   * The IP address, e.g. `"127.0.0.1"` or `"::1"`; on a Unix domain socket,
   * the socket's path (`""` for a client's socket, which has none).
   */
  hostname: string;
  /** The TCP port (`0` on a Unix domain socket). */
  port: number;
}

/**
 * A TLS server's certificate, key and protocols, as a listener gets them.
 *
 * @example The settings of a listener that offers HTTP/1.1 by ALPN
 * ```ts
 * import type { TlsSettings } from "@pico/socket-server/transport";
 * const settings: TlsSettings = {
 *   cert: "-----BEGIN CERTIFICATE-----\n...",
 *   key: "-----BEGIN PRIVATE KEY-----\n...",
 *   alpnProtocols: ["http/1.1"],
 * };
 * ```
 */
export interface TlsSettings {
  /** The certificate chain, PEM: the server's certificate first. */
  cert: string;
  /** The private key, PEM. */
  key: string;
  /** The protocols offered by ALPN, most preferred first (empty: no ALPN). */
  alpnProtocols: string[];
}

/**
 * What a listener is asked to listen on.
 *
 * @example Options as the core passes them
 * ```ts
 * import type { ListenOptions } from "@pico/socket-server/transport";
 * const options: ListenOptions = {
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   backlog: 4096,
 *   writeHighWaterMark: 65536,
 *   lingerMs: 5000,
 * };
 * ```
 */
export interface ListenOptions {
  /** The address to bind. */
  hostname: string;
  /** The port to bind; `0` lets the OS pick one. */
  port: number;
  /**
   * A Unix domain socket's path to listen on instead of `hostname` and
   * `port`. A socket file no process listens on (left by a crashed one) is
   * replaced; one a process listens on makes `listen()` reject with
   * `EADDRINUSE`. Closing the listener removes the file.
   */
  path?: string;
  /**
   * Share the port with other listeners that ask the same (`SO_REUSEPORT`:
   * the kernel spreads connections among them), as the workers of a group
   * do.
   */
  reusePort?: boolean;
  /**
   * Serve TLS with these settings. The listener's connections are then
   * `encrypted`, and their handshake waits for `handshake()`.
   */
  tls?: TlsSettings;
  /**
   * Each connection begins with a PROXY header the core reads before any
   * TLS handshake: with `tls`, the adapter must be able to start TLS on a
   * socket it has already read from (the bytes past the header come to
   * `handshake(prefix)`), or reject with a clear error.
   */
  proxyHeader?: boolean;
  /** How many connections may wait un-served before new ones are refused. */
  backlog: number;
  /**
   * Bytes a connection may queue for its peer before `write()` reports
   * backpressure.
   */
  writeHighWaterMark: number;
  /**
   * How long a closed connection's queued bytes may wait for a peer that
   * takes none of them, in milliseconds, before they are dropped with the
   * socket (`0`: at once).
   */
  lingerMs: number;
  /**
   * Called for each connection refused because `backlog` were already
   * waiting, with the peer's address.
   */
  onRefused?: (remoteAddress: SocketAddress) => void;
}

/**
 * The callbacks a connection delivers its events to, once started.
 *
 * @example A sink that counts bytes
 * ```ts
 * import type { ConnectionEvents } from "@pico/socket-server/transport";
 * let bytes = 0;
 * const events: ConnectionEvents = {
 *   data: (chunk) => { bytes += chunk.length; },
 *   end: () => console.log("peer closed after", bytes, "bytes"),
 *   error: (error) => console.error(error),
 *   lost: () => console.log("connection gone"),
 * };
 * ```
 */
export interface ConnectionEvents {
  /**
   * Bytes arrived; the chunk now belongs to the receiver. Returns true when
   * the chunk ended inside a packet: bytes read right behind it, in the same
   * buffer, then complete that packet as a view rather than a copy (so an
   * adapter may keep reading there).
   */
  data(chunk: Uint8Array): boolean | void;
  /** The peer closed its side of the connection (end of stream). */
  end(): void;
  /**
   * The connection failed (e.g. reset by the peer), maybe after `end`;
   * nothing follows.
   */
  error(error: Error): void;
  /**
   * The connection can carry no more bytes either way and the runtime told
   * no error (e.g. Bun reports a reset as the socket's close), maybe after
   * `end`; nothing follows.
   */
  lost(): void;
}

/**
 * One accepted TCP connection, as an adapter presents it to the core.
 *
 * @example Echoing everything on a connection
 * ```ts
 * import type { Connection } from "@pico/socket-server/transport";
 * function echo(connection: Connection): void {
 *   connection.start({
 *     data: (chunk) => void connection.write(chunk),
 *     end: () => connection.close(),
 *     error: () => connection.close(),
 *     lost: () => connection.close(),
 *   });
 * }
 * ```
 */
export interface Connection {
  /** The peer's address. */
  readonly remoteAddress: SocketAddress;
  /** This side's address. */
  readonly localAddress: SocketAddress;
  /** Whether the connection is TLS: the core then calls `handshake()` before `start()`. */
  readonly encrypted?: boolean;
  /** The protocol agreed by ALPN once the handshake is done, or `null`. */
  readonly alpnProtocol?: string | null;
  /**
   * Runs the TLS handshake, which does not start before this call (so the
   * core's session limit bounds handshakes too). Resolves `null` once it is
   * done, or with what ended it (a failure, or `close()` during it). Never
   * rejects.
   */
  handshake?(): Promise<Error | null>;
  /**
   * Starts delivering events: when the connection's session starts, or
   * before, to a reader that then hands over (`handOver`). Until then the
   * connection's bytes are not read.
   */
  start(events: ConnectionEvents): void;
  /**
   * Stops telling the current events (a reader of what comes before the
   * session, e.g. a PROXY header): `rest`, the bytes it read past its end,
   * and whatever arrives next are held for the next `start()` (or, on a TLS
   * connection, for its handshake).
   */
  handOver(rest: Uint8Array): void;
  /** Stops delivering `data` until {@linkcode Connection.resume} (flow control). */
  pause(): void;
  /** Resumes delivering `data` after {@linkcode Connection.pause}. */
  resume(): void;
  /**
   * Queues bytes for the peer: `data`, then `more` if given (a packet's
   * header and its body), sent as one unit where the runtime can (one
   * writev). `moreToCome` is true while the session's handler has received
   * packets it has not taken yet, so that more writes likely follow in this
   * turn: the adapter may hold these bytes to send them with those, but at
   * the latest when a write comes without it, its buffer bound is passed or
   * the turn of the event loop ends. Returns `undefined` when the runtime
   * took them within its buffer bound, or a promise that resolves once the
   * queue has drained or the connection has closed. Never throws, never
   * rejects.
   */
  write(data: Uint8Array, more?: Uint8Array, moreToCome?: boolean): Promise<void> | undefined;
  /** Turns Nagle's algorithm off (`true`) or on (`false`). */
  setNoDelay(noDelay: boolean): void;
  /** Turns TCP keep-alive on or off, with the idle delay before probes. */
  setKeepAlive(keepAlive: boolean, initialDelayMs: number): void;
  /** Closes the connection; idempotent, safe at any time. */
  close(): void;
}

/**
 * One accepted socket's verbs, as an adapter maps them from its runtime:
 * what `SocketConnection` (the core's connection machine, which every
 * policy lives in) asks of it. An adapter makes a `SocketConnection` over
 * it at accept and tells that connection its socket's
 * {@linkcode SocketEvents} from then on.
 *
 * @example The shape of a socket that takes every write at once
 * ```ts
 * import type { TransportSocket } from "@pico/socket-server/transport";
 * const address = { hostname: "127.0.0.1", port: 1 };
 * const socket: TransportSocket = {
 *   remoteAddress: address,
 *   localAddress: address,
 *   setReading: () => {},
 *   write: (data) => data.length,
 *   buffered: () => 0,
 *   unsent: () => 0,
 *   end: () => {},
 *   destroy: () => {},
 *   setNoDelay: () => {},
 *   setKeepAlive: () => {},
 * };
 * ```
 */
export interface TransportSocket {
  /** The peer's address. */
  readonly remoteAddress: SocketAddress;
  /** This side's address. */
  readonly localAddress: SocketAddress;
  /** Whether the socket is TLS (then it has `handshake`). */
  readonly encrypted?: boolean;
  /** The protocol agreed by ALPN once the handshake is done, or `null`. */
  readonly alpnProtocol?: string | null;
  /**
   * Runs the TLS handshake: see `Connection.handshake`. `prefix`: bytes
   * already read from the socket (past a PROXY header) that begin the
   * handshake; only a listener with `proxyHeader` gets any.
   */
  handshake?(prefix?: Uint8Array[]): Promise<Error | null>;
  /**
   * Starts (`true`) or stops (`false`) reading. Data may still arrive after
   * a stop (a read under way, or an adapter that stops its runtime's reads
   * only once more data comes, where stopping costs system calls): the
   * connection holds it.
   */
  setReading(on: boolean): void;
  /**
   * Writes as much of `data` as the runtime takes now and returns how much
   * that was (fewer bytes: `drained` follows once it takes more), or a
   * promise of it where writes complete later (then one at a time). `-1`:
   * the socket is gone. Never throws; a promise that rejects is taken as the
   * socket's failure (unless the socket is gone by then).
   */
  write(data: Uint8Array): number | Promise<number>;
  /** Several chunks as one write (a writev), where the runtime has one: returns bytes taken, or `-1`. */
  writev?(chunks: Uint8Array[]): number;
  /** Bytes the runtime took and holds unsent, counted against the write bound (0 where it holds none). */
  buffered(): number;
  /** Bytes not yet sent, going down as they go out (a closing connection's progress). */
  unsent(): number;
  /** Closes once what the runtime holds is sent (FIN); `gone` follows. */
  end(): void;
  /** Closes at once, dropping what is unsent; `gone` follows. */
  destroy(): void;
  /** Turns Nagle's algorithm off (`true`) or on (`false`). */
  setNoDelay(noDelay: boolean): void;
  /** Turns TCP keep-alive on or off, with the idle delay before probes. */
  setKeepAlive(keepAlive: boolean, initialDelayMs: number): void;
}

/**
 * What an adapter tells the core's connection of its socket, from accept on.
 *
 * @example Relaying a runtime's callbacks
 * ```ts
 * import type { SocketEvents } from "@pico/socket-server/transport";
 * function relay(events: SocketEvents, chunk: Uint8Array | null): void {
 *   if (chunk === null) events.end();
 *   else events.data(chunk);
 * }
 * ```
 */
export interface SocketEvents {
  /** Bytes were read; returns whether they ended inside a packet (see `ConnectionEvents.data`). */
  data(chunk: Uint8Array): boolean;
  /** The peer ended its side (FIN). */
  end(): void;
  /** The socket failed (e.g. a reset); `gone` follows once it is closed. */
  error(error: Error): void;
  /** The socket is closed, for whatever reason; nothing follows. */
  gone(): void;
  /** The runtime takes writes again after a short write. */
  drained(): void;
}

/**
 * A bound, listening socket that hands connections to the core on request.
 *
 * @example Taking connections one at a time
 * ```ts
 * import type { Listener } from "@pico/socket-server/transport";
 * async function takeOne(listener: Listener): Promise<void> {
 *   const connection = await listener.accept();
 *   connection?.close();
 * }
 * ```
 */
export interface Listener {
  /** The address actually bound (with the real port when `0` was asked). */
  readonly localAddress: SocketAddress;
  /**
   * How many connections the adapter refused because `backlog` were already
   * waiting (always `0` where the kernel's backlog does the waiting).
   */
  readonly refused: number;
  /**
   * How many connections wait to be accepted (always `0` where the kernel's
   * backlog does the waiting and cannot be counted).
   */
  readonly waiting: number;
  /**
   * Connections lost before they could be held (an adapter that accepts
   * ahead of the core skips failures of one connection, e.g. `ENOTCONN`).
   */
  readonly acceptErrors?: number;
  /**
   * Resolves with the next connection in arrival order, or `null` once the
   * listener is closed. The core calls it only when it can start a session,
   * and never twice at once. Rejects only when the runtime fails to accept,
   * with the POSIX name in `code`: the core takes the next connection at once
   * after a failure of one connection (`ECONNABORTED`, `ENOTCONN`, ...) and
   * backs off after others (`EMFILE`, ...). The listener stays usable.
   */
  accept(): Promise<Connection | null>;
  /**
   * Stops listening, closes every connection not yet accepted and resolves
   * once the port can be bound again. Idempotent.
   */
  close(): Promise<void>;
}

/**
 * A runtime's TCP sockets, as the core uses them.
 *
 * @example Starting a server on an explicit transport
 * ```ts
 * import { startServer } from "@pico/socket-server";
 * import { nodeTransport } from "@pico/socket-server/node";
 * const server = await startServer({
 *   port: 0,
 *   max: 10,
 *   transport: nodeTransport,
 *   handler: (session) => session.close(),
 * });
 * await server.stop();
 * ```
 */
export interface Transport {
  /** A short name for messages, e.g. `"node"`. */
  readonly name: string;
  /**
   * The write bound (`writeHighWaterMark`) sessions get when their options
   * set none; left out, 64 KiB. Deno's and Bun's transports ask for
   * 256 KiB (writes reported done a turn later; one system call per send).
   */
  readonly writeHighWaterMark?: number;
  /**
   * How a closing connection sees its peer take queued bytes (`lingerMs`):
   * byte by byte (`"byte"`, the default), or only once a whole write is out
   * (`"write"`: the Node adapter on Deno's and Bun's `node:net`), where a
   * peer taking one large write for longer than `lingerMs` counts as taking
   * none.
   */
  readonly lingerProgress?: "byte" | "write";
  /**
   * Binds and listens. Rejects with an `Error` whose `code` is a POSIX name
   * such as `"EADDRINUSE"`, `"EACCES"` or `"EADDRNOTAVAIL"` when it cannot.
   */
  listen(options: ListenOptions): Promise<Listener>;
  /**
   * Starts a worker thread of a group (`workers`) that runs one member
   * server with `data` (structured-clonable, a SharedArrayBuffer shared).
   * Left out, the transport serves no workers.
   */
  startThread?(data: unknown, events: WorkerThreadEvents): WorkerThread;
}

/**
 * A worker thread an adapter started for a group, as the core drives it.
 *
 * @example Stopping a thread
 * ```ts
 * import type { WorkerThread } from "@pico/socket-server/transport";
 * async function end(thread: WorkerThread): Promise<void> {
 *   await thread.terminate();
 * }
 * ```
 */
export interface WorkerThread {
  /** Sends a message to the thread (structured clone). */
  post(message: unknown): void;
  /** Ends the thread at once; its sockets close with it. */
  terminate(): Promise<void>;
}

/**
 * What a worker thread reports to the core: its messages, in the order it
 * posted them, then its end (after its last message).
 *
 * @example Logging a thread's end
 * ```ts
 * import type { WorkerThreadEvents } from "@pico/socket-server/transport";
 * const events: WorkerThreadEvents = {
 *   message: (message) => console.log(message),
 *   exit: (error) => console.log("thread ended", error),
 * };
 * ```
 */
export interface WorkerThreadEvents {
  /** A message the thread posted. */
  message(message: unknown): void;
  /**
   * The thread ended: `error` says why when it did not end cleanly (an
   * uncaught error, out of memory, a non-zero exit code).
   */
  exit(error: Error | undefined): void;
}

/**
 * The thread side of a group member: how it talks to the main thread.
 *
 * @example A channel over a MessagePort-like object
 * ```ts
 * import type { MemberChannel } from "@pico/socket-server/transport";
 * const channel: MemberChannel = {
 *   post: (message) => console.log(message),
 *   onMessage: () => {},
 * };
 * ```
 */
export interface MemberChannel {
  /** Posts a message to the main thread. */
  post(message: unknown): void;
  /** Calls `receive` with each message of the main thread. */
  onMessage(receive: (message: unknown) => void): void;
}
