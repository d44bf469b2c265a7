/**
 * The server: one listener, at most `max` sessions, waiting connections
 * served in arrival order as sessions end.
 *
 * @module
 */

import { invalidArgument, invalidState, safely, SocketServerError } from "./errors.ts";
import type { PacketType } from "./framing.ts";
import {
  checkMax,
  type ResolvedServerOptions,
  resolveServerOptions,
  type ResolvedSessionOptions,
  resolveWorkers,
} from "./options.ts";
import { AcceptLoop } from "./accept_loop.ts";
import { defaultTransport } from "./default_transport.ts";
import { endReason, type SessionEndReason } from "./end_reason.ts";
import { defaultServerName, register, unregister } from "./registry.ts";
import { requestShutdown, Session, type SessionInfo, type SessionOptions } from "./session.ts";
import type { Connection, Listener, SocketAddress, Transport } from "./transport.ts";
import { endpointName } from "./listen_failure.ts";
import type { SharedSlots } from "./shared_slots.ts";
import { type ProxyHeader, readProxyHeader } from "./proxy_protocol.ts";
import { addressBytes, clientKey, inRange } from "./address_match.ts";
import {
  acceptErrorChannel,
  handshakeFailureChannel,
  proxyErrorChannel,
  refusedChannel,
  traceHandler,
  tracingSessions,
} from "./tracing.ts";
import { WorkerGroup } from "./worker_group.ts";

// How long a wait for a slot of the group lasts before it looks again (a
// stopped server's wait then ends; a freed slot wakes it at once).
const SLOT_WAIT_MS = 100;

// What makes a server one member of a group of servers on one port (the
// workers of `workers: n`): the group's shared limit. Not public.
const MEMBER = Symbol("pico-socket-server group member");
interface GroupMember {
  slots: SharedSlots;
}

/**
 * Options that start a server as one member of a group: it listens with
 * `reusePort` beside the others and shares their limit. Internal (the
 * workers' entry point).
 */
export function memberOptions(options: ServerOptions, slots: SharedSlots): ServerOptions {
  return { ...options, [MEMBER]: { slots } } as ServerOptions;
}

/** The client a connection counts for: its PROXY header's source, else its peer. */
function clientAddress(header: ProxyHeader | undefined, connection: Connection): SocketAddress {
  return header?.command === "proxy" && header.source !== undefined ? header.source : connection.remoteAddress;
}

function untrustedPeer(): SocketServerError {
  return new SocketServerError("The peer is not a trusted proxy", "proxy_error");
}

function handshakeTimeout(limitMs: number): SocketServerError {
  return new SocketServerError(`The TLS handshake took longer than ${limitMs} ms`, "timeout");
}

/**
 * The function that owns one connection's whole protocol, like proc_socket_server's
 * `Fun(Socket)`. When it returns (or its promise settles) the session ends
 * and its connection is closed.
 *
 * @example A handler that greets and leaves
 * ```ts
 * import type { SessionHandler } from "@pico/socket-server";
 * const greet: SessionHandler = async (session) => {
 *   await session.send("hello\n");
 * };
 * ```
 */
export type SessionHandler = (session: Session) => void | Promise<void>;

/**
 * Everything a server can be started with (the options form of
 * `startServer`).
 *
 * @example A line server for 100 clients on a fixed port
 * ```ts
 * import { startServer, type ServerOptions } from "@pico/socket-server";
 * const options: ServerOptions = {
 *   name: "chat",
 *   port: 0,
 *   max: 100,
 *   packet: "line",
 *   packetSize: 4096,
 *   handler: (session) => session.close(),
 * };
 * const server = await startServer(options);
 * await server.stop();
 * ```
 */
export interface ServerOptions {
  /**
   * The name to register the server under.
   * @default {"picoSocketServer_<port>"} with the real port
   */
  name?: string;
  /**
   * The TCP port; `0` lets the OS pick one (see `server.port`).
   * @default {0}
   */
  port?: number;
  /**
   * The address to listen on.
   * @default {"0.0.0.0"}
   */
  hostname?: string;
  /**
   * Listen on this Unix domain socket path instead of a TCP port (then give
   * no `port` or `hostname`). A socket file that no process listens on any
   * more (left by a crashed one) is replaced; one that a process listens on
   * makes the start reject with `EADDRINUSE`; `stop()` removes the file.
   */
  path?: string;
  /**
   * Serve TLS: the handler is called once a connection's handshake is done.
   * Works on a port and on a Unix socket `path`.
   */
  tls?: TlsOptions;
  /**
   * How long a TLS connection's handshake may take, in milliseconds, from
   * the moment it takes its session slot; `0`: no limit. A handshake that
   * fails or takes longer closes the connection, frees its slot, starts no
   * session and is counted in `status().handshakeFailures`.
   * @default {5000}
   */
  handshakeTimeoutMs?: number;
  /**
   * Behind a load balancer: each connection begins with a PROXY protocol
   * header (v1 or v2, HAProxy's), read before any TLS handshake, that gives
   * the client's real addresses (`session.remoteAddress`,
   * `session.localAddress`; the balancer's is `session.proxyAddress`).
   * `true`, or `{ trusted, timeoutMs }`: only peers in the `trusted` CIDR
   * ranges may connect (default: every address); a header not complete
   * within `timeoutMs` (default 5000) fails. A connection from an
   * untrusted peer, or whose header is missing, malformed or too slow, is
   * closed without a session and counted in `status().proxyErrors`.
   */
  proxyProtocol?: boolean | ProxyProtocolOptions;
  /**
   * At most this many sessions from one client address at once (the PROXY
   * header's, with `proxyProtocol`; an IPv4-mapped IPv6 address counts as
   * IPv4); more are refused at once and counted in `status().refused`
   * (`onRefused` says `reason: "per_address"`). Connections without an
   * address (a Unix socket's, without PROXY) are not counted.
   * @default {no limit}
   */
  maxPerAddress?: number;
  /**
   * How many sessions may run at once; more connections wait. A TLS
   * connection takes its slot for its handshake already, and with
   * `proxyProtocol` for its header.
   */
  max: number;
  /** Runs once per connection. */
  handler: SessionHandler;
  /**
   * How the byte stream is cut into packets.
   * @default {0}
   */
  packet?: PacketType;
  /**
   * The longest packet a peer may send, in bytes; `0` means no limit.
   * @default {0}
   */
  packetSize?: number;
  /** Per-session settings. */
  session?: SessionOptions;
  /**
   * How many connections may wait for a free session slot before new ones
   * are refused.
   * @default {4096}
   */
  backlog?: number;
  /**
   * The runtime's sockets.
   * @default {the adapter for the running runtime}
   */
  transport?: Transport;
  /**
   * Called when a handler throws or rejects with an error of its own (with
   * its session, then already closed; errors from the session's connection
   * end it as `"socket_closed"` or `"socket_error"` instead), or when the
   * runtime cannot accept for want of resources, e.g. out of file
   * descriptors (without a session; the server retries after a pause that
   * grows while it fails). An error thrown here is itself logged and
   * ignored.
   * @default {logs with console.error}
   */
  onError?: (error: unknown, session?: Session) => void;
  /**
   * Called when a session starts, before its handler runs. Every session has
   * exactly one start and one end event.
   */
  onSessionStart?: (session: Session) => void;
  /**
   * Called when a session ends, with the reason and, for `"socket_error"`,
   * `"timeout"` and `"crash"`, the error.
   */
  onSessionEnd?: (session: Session, reason: SessionEndReason, error?: unknown) => void;
  /** Called for each connection refused because `backlog` were waiting. */
  onRefused?: (info: RefusedConnection) => void;
}

/**
 * The options of a server on several threads (`workers`): those of
 * {@linkcode ServerOptions}, with the handler given as a module that each
 * worker thread loads, and event callbacks that see each session as a
 * {@linkcode SessionInfo} (what can cross a thread). Every worker listens on
 * the same port (the kernel spreads the connections) and all share one
 * exact `max`.
 *
 * @example Four threads sharing port 7000 and 1000 sessions
 * ```ts
 * import { startServer, type WorkersOptions } from "@pico/socket-server";
 * const options: WorkersOptions = {
 *   port: 7000,
 *   max: 1000,
 *   workers: 4,
 *   handler: new URL("./echo_handler.ts", import.meta.url),
 *   onSessionEnd: (session, reason) => console.log(session.id, session.worker, reason),
 * };
 * const server = await startServer(options);
 * await server.stop({ timeoutMs: 5000 });
 * ```
 */
export interface WorkersOptions extends
  Omit<ServerOptions, "handler" | "transport" | "path" | "onError" | "onSessionStart" | "onSessionEnd"> {
  /**
   * How many worker threads serve the port, or `"auto"`: one per available
   * core. Each runs the handler module in its own thread.
   */
  workers: number | "auto";
  /**
   * The handler's module, whose default export is the handler: a URL (e.g.
   * `new URL("./handler.ts", import.meta.url)`), an absolute path, or a
   * specifier the worker can import (a package's).
   */
  handler: URL | string;
  /**
   * Called when a handler fails (with its session) or a worker thread ends
   * unexpectedly (code `"worker_exit"`; it is restarted).
   * @default {logs with console.error}
   */
  onError?: (error: unknown, session?: SessionInfo) => void;
  /** Called when a session starts in any worker. */
  onSessionStart?: (session: SessionInfo) => void;
  /**
   * Called when a session ends in any worker (before the start of the
   * session that takes its slot); a worker that dies ends its sessions with
   * `"crash"`.
   */
  onSessionEnd?: (session: SessionInfo, reason: SessionEndReason, error?: unknown) => void;
}

/**
 * Which peers may send a PROXY header, and how long it may take.
 *
 * @example Trusting the load balancers' subnet only
 * ```ts
 * import type { ProxyProtocolOptions } from "@pico/socket-server";
 * const proxyProtocol: ProxyProtocolOptions = { trusted: ["10.0.0.0/24", "fd00::/64"], timeoutMs: 3000 };
 * ```
 */
export interface ProxyProtocolOptions {
  /**
   * The CIDR ranges (or single addresses), IPv4 or IPv6, of the peers
   * allowed to connect, decided by the socket's own peer address, never
   * by an address a header claims. Unix socket peers are always allowed.
   * @default {every address}
   */
  trusted?: string[];
  /**
   * How long a connection may take to send its whole header.
   * @default {5000}
   */
  timeoutMs?: number;
}

/**
 * A TLS server's certificate and key, and the protocols it offers by ALPN.
 *
 * @example Serving TLS with a certificate and key from files
 * ```ts
 * import { readFileSync } from "node:fs";
 * import { startServer } from "@pico/socket-server";
 * const server = await startServer({
 *   port: 8443,
 *   max: 100,
 *   tls: {
 *     cert: readFileSync("cert.pem"),
 *     key: readFileSync("key.pem"),
 *     alpnProtocols: ["echo/1"],
 *   },
 *   handler: async (session) => {
 *     for await (const packet of session) await session.send(packet);
 *   },
 * });
 * ```
 */
export interface TlsOptions {
  /**
   * The certificate, PEM (text or its bytes); a chain is the server's
   * certificate followed by the intermediates.
   */
  cert: string | Uint8Array;
  /** The certificate's private key, PEM (text or its bytes), unencrypted. */
  key: string | Uint8Array;
  /**
   * The protocols offered by ALPN, most preferred first: a session's
   * `alpnProtocol` is the one agreed. A client that offers none of them is
   * refused by the handshake.
   * @default {[]} (no ALPN)
   */
  alpnProtocols?: string[];
}

/**
 * A connection refused (the wait was full, or its address had its share),
 * as `onRefused` sees it.
 *
 * @example Logging refusals
 * ```ts
 * import type { RefusedConnection } from "@pico/socket-server";
 * const onRefused = (info: RefusedConnection) =>
 *   console.warn(`refused ${info.remoteAddress.hostname} (${info.refused} so far)`);
 * ```
 */
export interface RefusedConnection {
  /** The peer's address. */
  remoteAddress: SocketAddress;
  /** How many connections this server has refused so far, this one included. */
  refused: number;
  /**
   * Why: `"backlog"` (`backlog` connections were already waiting) or
   * `"per_address"` (its address had `maxPerAddress` sessions).
   */
  reason: "backlog" | "per_address";
}

/**
 * Options of a graceful stop.
 *
 * @example Giving sessions ten seconds to finish
 * ```ts
 * import { startServer, type StopOptions } from "@pico/socket-server";
 * const server = await startServer(0, 10, () => {});
 * const options: StopOptions = { timeoutMs: 10_000 };
 * await server.stop(options);
 * ```
 */
export interface StopOptions {
  /**
   * How long running sessions may take to end by themselves after
   * `session.signal` aborts; then the rest are closed. Without it, every
   * session is closed at once (proc_socket_server's stop).
   */
  timeoutMs?: number;
}

/**
 * How a stop went: sessions that ended by themselves while draining, and
 * sessions that were closed.
 *
 * @example Reporting a drain
 * ```ts
 * import { startServer } from "@pico/socket-server";
 * const server = await startServer(0, 10, () => {});
 * const { ended, closed } = await server.stop({ timeoutMs: 1000 });
 * console.log(`${ended} finished, ${closed} cut off`);
 * ```
 */
export interface StopResult {
  /** Sessions that ended by themselves during the drain. */
  ended: number;
  /** Sessions that were still running and were closed. */
  closed: number;
}

/**
 * Where a server is in its life.
 *
 * @example Checking a server is up
 * ```ts
 * import type { ServerState } from "@pico/socket-server";
 * const state: ServerState = "running";
 * ```
 */
export type ServerState = "starting" | "running" | "suspended" | "stopping" | "stopped";

/**
 * A snapshot of a server's counters. `num` and `max` are proc_socket_server's; the
 * rest are additions.
 *
 * @example Reading the load
 * ```ts
 * import { serverStatus } from "@pico/socket-server";
 * const { num, max } = await serverStatus("chat");
 * console.log(`${num} of ${max} sessions`);
 * ```
 */
export interface ServerStatus {
  /** Sessions running now. */
  num: number;
  /** The most sessions that may run at once. */
  max: number;
  /** The registered name. */
  name: string;
  /** The port listened on (`0` on a Unix socket). */
  port: number;
  /** The Unix socket path listened on, if any. */
  path?: string;
  /** Where the server is in its life. */
  state: ServerState;
  /** Connections taken so far (sessions started). */
  accepted: number;
  /**
   * Connections in their TLS handshake or reading their PROXY header now:
   * each holds a session slot, so `num + handshaking` never exceeds `max`.
   */
  handshaking: number;
  /**
   * TLS handshakes that failed (a client that is not TLS, a certificate it
   * refused, no common protocol) or took longer than `handshakeTimeoutMs`:
   * they started no session.
   */
  handshakeFailures: number;
  /**
   * Connections refused: `backlog` were already waiting, or their address
   * had `maxPerAddress` sessions.
   */
  refused: number;
  /**
   * With `proxyProtocol`: connections closed without a session because
   * their peer is not trusted or their PROXY header was missing,
   * malformed, too long or too slow.
   */
  proxyErrors: number;
  /**
   * Connections lost before they could be accepted (reset or aborted by
   * the peer while they waited, refused by a firewall rule): skipped at once,
   * they start no session and are not reported to `onError`.
   */
  acceptErrors: number;
  /**
   * Connections waiting for a free session slot (accepted and held unread).
   */
  waiting: number;
  /** Sessions ended so far, by reason. */
  ended: Record<SessionEndReason, number>;
  /** With `workers`: how many worker threads serve the port. */
  workers?: number;
  /**
   * With `workers`: how many times a worker thread ended unexpectedly and
   * was started again.
   */
  workerRestarts?: number;
}

/**
 * What the process-wide registry holds of a server: the part of
 * `SocketServer` that the look-up functions use. Structural, so that a
 * server started by another copy of this module (another version, or a
 * bundled copy) is found and served as well.
 *
 * @example Looking at any registered server
 * ```ts
 * import { startServer, type RegisteredServer } from "@pico/socket-server";
 * const server: RegisteredServer = await startServer(0, 10, () => {});
 * console.log(server.name, server.port, server.state);
 * await server.stop();
 * ```
 */
export interface RegisteredServer {
  /** The registered name. */
  readonly name: string;
  /** The port listened on. */
  readonly port: number;
  /** Where the server is in its life. */
  readonly state: ServerState;
  /** Resolves once the server listens; rejects if its listen failed. */
  readonly listening: Promise<unknown>;
  /** A snapshot of the server's counters. */
  status(): ServerStatus;
  /** The running sessions. */
  children(): SessionInfo[];
  /** Stops the server, at once or gracefully. */
  stop(options?: StopOptions): Promise<StopResult>;
}

/**
 * A running server: its port and status, its sessions, and how to stop it.
 * Made by `startServer` or `startRawServer`.
 *
 * @example Start, inspect, stop
 * ```ts
 * import { startServer } from "@pico/socket-server";
 * const server = await startServer(0, 10, (session) => session.close());
 * console.log(server.name, server.port, server.status().num);
 * await server.stop();
 * ```
 */
export class SocketServer<S extends SessionInfo = Session> implements RegisteredServer {
  // With `workers`: the group this server stands for (every method is its).
  #group: WorkerGroup | undefined;
  #options: ResolvedServerOptions;
  // Known once the server listens: the transport (the option, or the
  // runtime's default) and the session options with its write bound.
  #transport: Transport | undefined;
  #sessionOptions: ResolvedSessionOptions;
  #name: string;
  #listener: Listener | undefined;
  #state: ServerState = "starting";
  #port = 0;
  #max: number;
  #sessions = new Set<Session>();
  #acceptLoop: AcceptLoop = new AcceptLoop({
    listener: () => (this.#state === "running" ? this.#listener : undefined),
    // A group member takes one connection at a time and a slot of the
    // group's limit for it; alone, the server counts its own sessions.
    hasRoom: () =>
      this.#slots !== undefined ? this.#held === undefined : this.#sessions.size + this.#opening.size < this.#max,
    accepted: (connection, listener) => {
      if (this.#state !== "running" || listener !== this.#listener) connection.close();
      else if (!this.#trusts(connection.remoteAddress)) {
        // Trust is the socket's peer's, never what a header will claim.
        connection.close();
        this.#failedOpening("proxy", connection.remoteAddress, untrustedPeer);
      } else if (this.#slots !== undefined && !this.#slots.tryTake()) void this.#waitForSlot(connection, this.#slots);
      else this.#admit(connection);
    },
    failed: (error) => {
      this.#publishAcceptError(error);
      this.#report(error);
    },
    skipped: (error) => this.#publishAcceptError(error),
  });
  #accepted = 0;
  // In a group (workers): the group's limit, and the connection this server
  // took while the group was full, held unread until a slot frees anywhere.
  #slots: SharedSlots | undefined;
  #held: Connection | undefined;
  // Connections holding a session slot before their session: reading
  // their PROXY header, in their TLS handshake.
  #opening = new Set<Connection>();
  #handshakeFailures = 0;
  #proxyErrors = 0;
  // With maxPerAddress: sessions (and connections opening) per client address.
  #perAddress = new Map<string, number>();
  #refusedPerAddress = 0;
  // Counted by listeners already closed (suspend, stop): refusals, and
  // connections lost before an adapter that accepts ahead could hold them.
  #refusedBefore = 0;
  #acceptErrorsBefore = 0;
  #nextSessionId = 1;
  #ended: Record<SessionEndReason, number> = {
    normal: 0,
    socket_closed: 0,
    socket_error: 0,
    timeout: 0,
    crash: 0,
  };
  #stopped: Promise<StopResult> | undefined;
  #drained: (() => void) | undefined;
  #resuming: Promise<void> | undefined;
  /** Resolves once the server listens; rejects if its listen failed. */
  readonly listening: Promise<unknown>;

  /**
   * Checks the options and starts listening; use `startServer`, which
   * resolves once this is done.
   *
   * @param options The server's options.
   * @example Prefer startServer
   * ```ts
   * import { startServer } from "@pico/socket-server";
   * const server = await startServer({ port: 0, max: 1, handler: () => {} });
   * await server.stop();
   * ```
   */
  constructor(options: ServerOptions | WorkersOptions) {
    const workers = resolveWorkers(options);
    if (workers !== undefined) {
      this.#options = resolveServerOptions({ ...workers.settings, handler: () => {} });
      this.#sessionOptions = this.#options.session;
      this.#max = this.#options.max;
      this.#name = this.#options.name ?? ""; // what the registry reads while the group registers
      this.#group = new WorkerGroup(options as WorkersOptions, workers, this);
      this.listening = this.#group.listening;
      return;
    }
    options = options as ServerOptions;
    this.#options = resolveServerOptions(options);
    this.#sessionOptions = this.#options.session;
    this.#max = this.#options.max;
    this.#slots = (options as { [MEMBER]?: GroupMember })[MEMBER]?.slots;
    this.#name = this.#options.name ?? "";
    // A named server is registered before it listens, so a duplicate is
    // refused before any port is bound; a default name needs the real port.
    if (this.#options.name !== undefined) register(this);
    this.listening = this.#listen();
    // Callers await `listening` themselves; this keeps a failed listen from
    // being reported as an unhandled rejection in the meantime.
    this.listening.catch(() => {});
  }

  /** Binds `port` on the transport; a failure becomes a clear error. */
  async #bind(port: number): Promise<Listener> {
    const { hostname, backlog, path, tls } = this.#options;
    const transport = this.#transport ??= await this.#loadTransport();
    const session = this.#sessionOptions;
    try {
      return await transport.listen({
        hostname,
        port,
        path,
        tls,
        // A group's members share the port.
        reusePort: this.#slots !== undefined || undefined,
        proxyHeader: this.#options.proxy !== undefined || undefined,
        backlog,
        writeHighWaterMark: session.writeHighWaterMark,
        lingerMs: session.lingerMs,
        onRefused: (remoteAddress) => this.#toldRefused(remoteAddress, "backlog"),
      });
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code;
      const message = error instanceof Error ? error.message : String(error);
      throw new SocketServerError(
        message.startsWith("Cannot listen") ? message : `Cannot listen on ${endpointName({ hostname, port, path })}: ${message}`,
        typeof code === "string" ? code : "socket_error",
        { cause: error },
      );
    }
  }

  /** The transport given, or the runtime's; the write bound's default comes with it. */
  async #loadTransport(): Promise<Transport> {
    const transport = this.#options.transport ?? await defaultTransport();
    if (transport.writeHighWaterMark !== undefined && !this.#options.writeBoundGiven) {
      this.#sessionOptions = { ...this.#sessionOptions, writeHighWaterMark: transport.writeHighWaterMark };
    }
    return transport;
  }

  async #listen(): Promise<void> {
    let listener: Listener;
    try {
      listener = await this.#bind(this.#options.port);
    } catch (error) {
      unregister(this);
      this.#state = "stopped";
      throw error;
    }
    this.#listener = listener;
    this.#port = listener.localAddress.port;
    if (this.#options.name === undefined) {
      this.#name = defaultServerName(this.#options.path ?? listener.localAddress.port);
      try {
        register(this);
      } catch (error) {
        this.#state = "stopped";
        await listener.close();
        throw error;
      }
    }
    this.#state = "running";
    this.#acceptLoop.next();
  }

  /** The name the server is registered under. */
  get name(): string {
    return this.#group?.name ?? this.#name;
  }

  /** The port listened on (the real one when `0` was asked), or 0 before listening. */
  get port(): number {
    return this.#group?.port ?? this.#port;
  }

  /** The Unix socket path listened on, or `undefined` on a TCP port. */
  get path(): string | undefined {
    return this.#options.path;
  }

  /** The most sessions that may run at once (see {@linkcode SocketServer.setMax}). */
  get max(): number {
    return this.#group?.max ?? this.#max;
  }

  get #refused(): number {
    return this.#refusedBefore + this.#refusedPerAddress + (this.#listener?.refused ?? 0);
  }

  get #acceptErrors(): number {
    return this.#acceptLoop.connectionErrors + this.#acceptErrorsBefore + (this.#listener?.acceptErrors ?? 0);
  }

  /** Takes the listener out of use (suspend, stop), keeping its counts. */
  #retire(listener: Listener): void {
    this.#refusedBefore += listener.refused;
    this.#acceptErrorsBefore += listener.acceptErrors ?? 0;
    this.#listener = undefined;
  }

  /** Where the server is in its life. */
  get state(): ServerState {
    return this.#group?.state ?? this.#state;
  }

  /**
   * A snapshot of the server's counters.
   *
   * @returns `num`, `max` and more; see {@linkcode ServerStatus}.
   * @example Printing the load
   * ```ts
   * import { startServer } from "@pico/socket-server";
   * const server = await startServer(0, 5, () => {});
   * const { num, max } = server.status();
   * console.log(`${num}/${max}`);
   * await server.stop();
   * ```
   */
  status(): ServerStatus {
    if (this.#group) return this.#group.status();
    const status: ServerStatus = {
      num: this.#sessions.size,
      max: this.#slots?.max ?? this.#max,
      name: this.#name,
      port: this.#port,
      state: this.#state,
      accepted: this.#accepted,
      handshaking: this.#opening.size,
      handshakeFailures: this.#handshakeFailures,
      proxyErrors: this.#proxyErrors,
      refused: this.#refused,
      acceptErrors: this.#acceptErrors,
      waiting: this.#state === "running" ? this.#listener?.waiting ?? 0 : 0,
      ended: { ...this.#ended },
    };
    if (this.#options.path !== undefined) status.path = this.#options.path;
    return status;
  }

  /**
   * The running sessions (never the waiting connections), oldest first.
   *
   * @returns A new array of sessions.
   * @example Saying goodbye to everyone
   * ```ts
   * import { startServer } from "@pico/socket-server";
   * const server = await startServer(0, 5, () => {});
   * for (const session of server.children()) await session.send("bye\n");
   * await server.stop();
   * ```
   */
  children(): S[] {
    if (this.#group) return this.#group.children() as S[];
    return [...this.#sessions] as unknown as S[];
  }

  /**
   * Changes how many sessions may run at once. Raising it starts waiting
   * connections at once, in arrival order; lowering it ends no session: new
   * ones wait until fewer than the new `max` run.
   *
   * @param max The new limit, an integer of 1 or more.
   * @example Letting more clients in at a busy hour
   * ```ts
   * import { startServer } from "@pico/socket-server";
   * const server = await startServer(0, 10, () => {});
   * server.setMax(50);
   * await server.stop();
   * ```
   */
  setMax(max: number): void {
    if (this.#group) return this.#group.setMax(max);
    checkMax(max);
    this.#max = max;
    this.#slots?.setMax(max);
    this.#acceptLoop.next();
  }

  /**
   * Stops listening: new connections are refused, waiting ones are closed,
   * running sessions go on. {@linkcode SocketServer.resume} listens again on
   * the same port. Rejects with code `"invalid_state"` unless running.
   *
   * @returns A promise resolved once the port is released.
   * @example Pausing intake during maintenance
   * ```ts
   * import { startServer } from "@pico/socket-server";
   * const server = await startServer(0, 10, () => {});
   * await server.suspend();
   * await server.resume();
   * await server.stop();
   * ```
   */
  async suspend(): Promise<void> {
    if (this.#group) return await this.#group.suspend();
    await this.#resuming?.catch(() => {});
    if (this.#state === "suspended") return;
    this.#expectState("running", "suspend");
    this.#state = "suspended";
    const listener = this.#listener!;
    this.#retire(listener);
    await listener.close();
  }

  /**
   * Listens again on the same port after {@linkcode SocketServer.suspend}.
   * Rejects with the listen failure's code (e.g. `"EADDRINUSE"` if another
   * process took the port; the server stays suspended), or `"invalid_state"`
   * when not suspended.
   *
   * @returns A promise resolved once the server listens again.
   * @example Resuming
   * ```ts
   * import { startServer } from "@pico/socket-server";
   * const server = await startServer(0, 10, () => {});
   * await server.suspend();
   * await server.resume();
   * console.log(server.status().state); // "running"
   * await server.stop();
   * ```
   */
  resume(): Promise<void> {
    if (this.#group) return this.#group.resume();
    if (this.#resuming) return this.#resuming;
    if (this.#state === "running") return Promise.resolve();
    try {
      this.#expectState("suspended", "resume");
    } catch (error) {
      return Promise.reject(error);
    }
    this.#resuming = this.#bind(this.#port).then((listener) => {
      this.#resuming = undefined;
      if (this.#state !== "suspended") {
        // Stopped while binding: release the port again.
        return listener.close();
      }
      this.#listener = listener;
      this.#state = "running";
      this.#acceptLoop.next();
    }, (error) => {
      this.#resuming = undefined;
      throw error;
    });
    return this.#resuming;
  }

  /**
   * Stops the server and removes its name. New and waiting connections are
   * refused at once and the port can be bound again as soon as this
   * resolves. Without options every session is closed at once (proc_socket_server's
   * stop: handlers see `recv()` resolve `null`). With `timeoutMs`, it is a
   * graceful stop: every `session.signal` aborts, sessions get that long to
   * end by themselves, then the rest are closed. Calling it again returns the
   * first call's promise.
   *
   * @param options `timeoutMs`: how long sessions may drain.
   * @returns How many sessions ended by themselves and how many were closed.
   * @example Draining for five seconds on Ctrl-C
   * ```ts
   * import { startServer } from "@pico/socket-server";
   * const server = await startServer(0, 5, () => {});
   * const { ended, closed } = await server.stop({ timeoutMs: 5000 });
   * console.log(ended, closed);
   * ```
   */
  stop(options?: StopOptions): Promise<StopResult> {
    const timeoutMs = options?.timeoutMs;
    if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs >= 0)) {
      return Promise.reject(invalidArgument("stop timeout", timeoutMs, "a number of milliseconds, 0 or more"));
    }
    this.#stopped ??= this.#group ? this.#group.stop(timeoutMs) : this.#stop(timeoutMs);
    return this.#stopped;
  }

  async #stop(timeoutMs: number | undefined): Promise<StopResult> {
    try {
      await this.listening;
    } catch {
      return { ended: 0, closed: 0 }; // never listened: nothing to release
    }
    this.#state = "stopping";
    const listener = this.#listener;
    if (listener !== undefined) this.#retire(listener);
    const released = listener?.close();
    // Handshakes under way start no session now, drain or not; nor does a
    // connection held for a slot of the group.
    this.#closeOpening();
    this.#held?.close();
    this.#held = undefined;
    let ended = 0;
    if (timeoutMs !== undefined && this.#sessions.size > 0) {
      const before = this.#sessions.size;
      const reason = new SocketServerError(`Server '${this.#name}' is shutting down`, "shutdown");
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
        timer = setTimeout(resolve, timeoutMs);
        for (const session of this.#sessions) requestShutdown(session, reason);
      });
      clearTimeout(timer);
      this.#drained = undefined;
      ended = before - this.#sessions.size;
    }
    const closed = this.#sessions.size;
    for (const session of this.#sessions) session.close();
    await released;
    unregister(this);
    this.#state = "stopped";
    return { ended, closed };
  }

  #expectState(state: ServerState, action: string): void {
    if (this.#state !== state) throw invalidState(this.#name, this.#state, action);
  }

  /**
   * Starts a connection that has its slot: its PROXY header first (with
   * `proxyProtocol`), its client's share checked (`maxPerAddress`), its TLS
   * handshake, then its session.
   */
  #admit(connection: Connection): void {
    const tls = connection.encrypted === true && connection.handshake !== undefined;
    if (this.#options.proxy !== undefined) {
      void this.#open(connection, tls, undefined);
      return;
    }
    const client = connection.remoteAddress;
    if (!this.#countClient(client)) this.#drop(connection, "per_address", client, undefined);
    else if (tls) void this.#open(connection, tls, client);
    else this.#startSession(connection, undefined);
  }

  /**
   * What comes before a connection's session, holding its slot: its PROXY
   * header (within the option's time limit), its TLS handshake (within
   * handshakeTimeoutMs). One that fails is closed, counted, and frees its
   * slot; one the server closed meanwhile (stop) frees it too.
   */
  async #open(connection: Connection, tls: boolean, counted: SocketAddress | undefined): Promise<void> {
    this.#opening.add(connection);
    let header: ProxyHeader | undefined;
    const proxy = this.#options.proxy;
    if (proxy !== undefined) {
      const read = await readProxyHeader(connection, proxy.timeoutMs).catch((error: Error) => error);
      if (!this.#stillOpening(connection, undefined)) return;
      if (read instanceof Error) return this.#drop(connection, "proxy", undefined, read);
      header = read;
      const client = clientAddress(header, connection);
      if (!this.#countClient(client)) return this.#drop(connection, "per_address", client, undefined);
      counted = client;
    }
    if (tls) {
      const failure = await this.#handshake(connection);
      if (!this.#stillOpening(connection, counted)) return;
      if (failure !== null) return this.#drop(connection, "handshake", counted, failure);
    }
    this.#opening.delete(connection);
    this.#startSession(connection, header);
  }

  /** A TLS handshake, within handshakeTimeoutMs: `null` once done, or why it failed. */
  async #handshake(connection: Connection): Promise<Error | null> {
    const limitMs = this.#options.handshakeTimeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const handshake = connection.handshake!().catch((error) => error instanceof Error ? error : new Error(String(error)));
    const failure = limitMs === 0 ? await handshake : await Promise.race([
      handshake,
      new Promise<Error>((resolve) => {
        timer = setTimeout(() => resolve(handshakeTimeout(limitMs)), limitMs);
      }),
    ]);
    clearTimeout(timer);
    return failure;
  }

  /** Whether an opening connection is still the server's (stop closes them); if not, what it held goes back. */
  #stillOpening(connection: Connection, counted: SocketAddress | undefined): boolean {
    if (this.#opening.has(connection)) return true;
    this.#slots?.release();
    if (counted !== undefined) this.#uncountClient(counted);
    return false;
  }

  /**
   * Closes a connection that will have no session, counted by why: its
   * PROXY header failed, its client had its share (`client`, refused), or
   * its handshake failed. Frees its slot and its client's count.
   */
  #drop(
    connection: Connection,
    why: "proxy" | "per_address" | "handshake",
    client: SocketAddress | undefined,
    error: Error | undefined,
  ): void {
    this.#opening.delete(connection);
    connection.close();
    if (why === "per_address") {
      this.#refusedPerAddress++;
      this.#toldRefused(client!, "per_address");
    } else {
      if (client !== undefined) this.#uncountClient(client);
      this.#failedOpening(why, connection.remoteAddress, () => error!);
    }
    this.#slots?.release();
    this.#acceptLoop.next();
  }

  /**
   * Counts a connection closed before its session, for its PROXY header (or
   * an untrusted peer) or its TLS handshake, and publishes it on the
   * channel for that; `error` is only made for a subscriber.
   */
  #failedOpening(why: "proxy" | "handshake", remoteAddress: SocketAddress, error: () => Error): void {
    if (why === "proxy") this.#proxyErrors++;
    else this.#handshakeFailures++;
    const channel = why === "proxy" ? proxyErrorChannel : handshakeFailureChannel;
    if (channel?.hasSubscribers) channel.publish({ server: this, remoteAddress, error: error() });
  }

  #publishAcceptError(error: unknown): void {
    if (acceptErrorChannel?.hasSubscribers) acceptErrorChannel.publish({ server: this, error });
  }

  /** Tells onRefused and the refused channel of a refusal (counted already). */
  #toldRefused(remoteAddress: SocketAddress, reason: "backlog" | "per_address"): void {
    const onRefused = this.#options.onRefused;
    if (onRefused) safely(() => onRefused({ remoteAddress, refused: this.#refused, reason }));
    if (refusedChannel?.hasSubscribers) {
      refusedChannel.publish({ server: this, remoteAddress, reason, refused: this.#refused });
    }
  }

  /** Whether a peer may connect (with proxyProtocol's trusted ranges). */
  #trusts(peer: SocketAddress): boolean {
    const trusted = this.#options.proxy?.trusted;
    if (trusted === undefined || peer.hostname === "") return true;
    const bytes = addressBytes(peer.hostname);
    return bytes !== undefined && trusted.some((range) => inRange(bytes, range));
  }

  /** The key `client` is counted under for maxPerAddress; undefined when it is not counted. */
  #keyOf(client: SocketAddress): string | undefined {
    return this.#options.maxPerAddress === Infinity || client.hostname === "" ? undefined : clientKey(client.hostname);
  }

  /** Counts a session for its client's address; false when it already has maxPerAddress. */
  #countClient(client: SocketAddress): boolean {
    const key = this.#keyOf(client);
    if (key === undefined) return true;
    const count = this.#perAddress.get(key) ?? 0;
    if (count >= this.#options.maxPerAddress) return false;
    this.#perAddress.set(key, count + 1);
    return true;
  }

  #uncountClient(client: SocketAddress): void {
    const key = this.#keyOf(client);
    if (key === undefined) return;
    const count = (this.#perAddress.get(key) ?? 1) - 1;
    if (count > 0) this.#perAddress.set(key, count);
    else this.#perAddress.delete(key);
  }

  /**
   * Holds a connection, unread, until a slot of the group frees in any
   * thread; meanwhile this server takes no other (arrival order holds).
   */
  async #waitForSlot(connection: Connection, slots: SharedSlots): Promise<void> {
    this.#held = connection;
    while (this.#held === connection) {
      const seen = slots.generation;
      if (slots.tryTake()) {
        this.#held = undefined;
        this.#admit(connection);
        this.#acceptLoop.next();
        return;
      }
      await slots.changed(seen, SLOT_WAIT_MS);
    }
  }

  #closeOpening(): void {
    for (const connection of this.#opening) connection.close();
    this.#opening.clear();
  }

  #startSession(connection: Connection, proxy: ProxyHeader | undefined): void {
    const { packetType, packetSize, handler } = this.#options;
    const options = this.#sessionOptions;
    let session: Session;
    try {
      const id = this.#slots?.nextId() ?? this.#nextSessionId++;
      session = new Session({ id, connection, packetType, packetSize, options, proxy });
    } catch (error) {
      connection.close();
      this.#uncountClient(clientAddress(proxy, connection));
      this.#slots?.release();
      this.#report(error);
      return;
    }
    this.#sessions.add(session);
    this.#accepted++;
    const onSessionStart = this.#options.onSessionStart;
    if (onSessionStart) safely(() => onSessionStart(session));
    let result: void | Promise<void>;
    try {
      result = tracingSessions() ? traceHandler({ server: this, session }, () => handler(session)) : handler(session);
    } catch (error) {
      this.#endSession(session, error, true);
      return;
    }
    if (result !== null && typeof result === "object" && typeof result.then === "function") {
      result.then(
        () => this.#endSession(session, null, false),
        (error) => this.#endSession(session, error, true),
      );
    } else {
      this.#endSession(session, null, false);
    }
  }

  #endSession(session: Session, error: unknown, failed: boolean): void {
    const reason = endReason(session.closed, error, failed);
    session.close();
    if (!this.#sessions.delete(session)) return;
    this.#uncountClient(session.remoteAddress);
    this.#ended[reason]++;
    if (reason === "crash") this.#report(error, session);
    const onSessionEnd = this.#options.onSessionEnd;
    if (onSessionEnd) {
      safely(() => (failed ? onSessionEnd(session, reason, error) : onSessionEnd(session, reason)));
    }
    // In a group, after its end is told: the session that takes the slot
    // is told after it.
    this.#slots?.release();
    if (this.#sessions.size === 0) this.#drained?.();
    this.#acceptLoop.next();
  }

  #report(error: unknown, session?: Session): void {
    const onError = this.#options.onError;
    safely(() => onError(error, session), "onError");
  }

}
