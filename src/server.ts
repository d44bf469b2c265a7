/**
 * The server: one listener, at most `max` sessions, waiting connections
 * served in arrival order as sessions end.
 *
 * @module
 */

import { SocketServerError } from "./errors.ts";
import { type PacketType, validatePacketSize, validatePacketType } from "./framing.ts";
import { defaultServerName, getDefaultTransport, register, type RegisteredServer, unregister } from "./registry.ts";
import {
  endReason,
  type ResolvedSessionOptions,
  resolveSessionOptions,
  Session,
  type SessionEndReason,
  type SessionOptions,
} from "./session.ts";
import type { Connection, Listener, Transport } from "./transport.ts";

/**
 * The function that owns one connection's whole protocol, like the seed's
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
  /** How many sessions may run at once; more connections wait. */
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
   * Called when a handler throws or rejects (with its session, then already
   * closed), or when the runtime fails to accept a connection (without a
   * session; the server retries shortly). An error thrown here is itself
   * logged and ignored.
   * @default {logs with console.error}
   */
  onError?: (error: unknown, session?: Session) => void;
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
export type ServerState = "starting" | "running" | "stopping" | "stopped";

/**
 * A snapshot of a server's counters. `num` and `max` are the seed's; the
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
  /** The port listened on. */
  port: number;
  /** Where the server is in its life. */
  state: ServerState;
  /** Connections taken so far (sessions started). */
  accepted: number;
  /** Connections refused because `backlog` were already waiting. */
  refused: number;
  /** Sessions ended so far, by reason. */
  ended: Record<SessionEndReason, number>;
}

/** Checks the options of a start call and applies defaults. */
interface ResolvedServerOptions {
  name: string | undefined;
  port: number;
  hostname: string;
  max: number;
  handler: SessionHandler;
  packetType: PacketType;
  packetSize: number;
  session: ResolvedSessionOptions;
  backlog: number;
  transport: Transport;
  onError: (error: unknown, session?: Session) => void;
}

function invalid(what: string, value: unknown, expected: string): SocketServerError {
  let shown: string;
  try {
    shown = typeof value === "function" ? "a function" : JSON.stringify(value) ?? String(value);
  } catch {
    shown = String(value);
  }
  return new SocketServerError(`Invalid ${what} ${shown}: expected ${expected}`, "invalid_argument");
}

function isInteger(value: unknown, min: number, max: number): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max;
}

function reportError(error: unknown, session?: Session): void {
  const where = session === undefined
    ? "failed to accept a connection"
    : `session ${session.id} from ${session.remoteAddress.hostname}:${session.remoteAddress.port} crashed`;
  console.error(`pico-socket-server: ${where}:`, error);
}

function resolveOptions(options: ServerOptions): ResolvedServerOptions {
  if (typeof options !== "object" || options === null) {
    throw invalid("server options", options, "an object");
  }
  const { name, port = 0, hostname = "0.0.0.0", max, handler, backlog = 4096 } = options;
  if (name !== undefined && (typeof name !== "string" || name === "")) {
    throw invalid("server name", name, "a non-empty string");
  }
  if (!isInteger(port, 0, 65535)) throw invalid("port", port, "an integer from 0 to 65535");
  if (typeof hostname !== "string" || hostname === "") {
    throw invalid("hostname", hostname, "a non-empty string");
  }
  if (!isInteger(max, 1, Number.MAX_SAFE_INTEGER)) throw invalid("max", max, "an integer of 1 or more");
  if (typeof handler !== "function") throw invalid("handler", handler, "a function");
  if (!isInteger(backlog, 1, Number.MAX_SAFE_INTEGER)) {
    throw invalid("backlog", backlog, "an integer of 1 or more");
  }
  return {
    name,
    port,
    hostname,
    max,
    handler,
    packetType: validatePacketType(options.packet ?? 0),
    packetSize: validatePacketSize(options.packetSize ?? 0),
    session: resolveSessionOptions(options.session),
    backlog,
    transport: options.transport ?? getDefaultTransport(),
    onError: options.onError ?? reportError,
  };
}

/** How long to wait before accepting again after the runtime failed to accept. */
const ACCEPT_RETRY_MS = 100;

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
export class SocketServer implements RegisteredServer {
  #options: ResolvedServerOptions;
  #name: string;
  #listener: Listener | undefined;
  #state: ServerState = "starting";
  #sessions = new Set<Session>();
  #accepting = false;
  #accepted = 0;
  #nextSessionId = 1;
  #ended: Record<SessionEndReason, number> = {
    normal: 0,
    socket_closed: 0,
    socket_error: 0,
    timeout: 0,
    crash: 0,
  };
  #stopped: Promise<void> | undefined;
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
  constructor(options: ServerOptions) {
    this.#options = resolveOptions(options);
    this.#name = this.#options.name ?? "";
    // A named server is registered before it listens, so a duplicate is
    // refused before any port is bound; a default name needs the real port.
    if (this.#options.name !== undefined) register(this);
    this.listening = this.#listen();
    // Callers await `listening` themselves; this keeps a failed listen from
    // being reported as an unhandled rejection in the meantime.
    this.listening.catch(() => {});
  }

  async #listen(): Promise<void> {
    const { hostname, port, backlog, transport } = this.#options;
    let listener: Listener;
    try {
      listener = await transport.listen({ hostname, port, backlog });
    } catch (error) {
      unregister(this);
      this.#state = "stopped";
      const code = (error as { code?: unknown } | null)?.code;
      const message = error instanceof Error ? error.message : String(error);
      throw new SocketServerError(
        message.startsWith("Cannot listen") ? message : `Cannot listen on ${hostname}:${port}: ${message}`,
        typeof code === "string" ? code : "socket_error",
        { cause: error },
      );
    }
    this.#listener = listener;
    if (this.#options.name === undefined) {
      this.#name = defaultServerName(listener.localAddress.port);
      try {
        register(this);
      } catch (error) {
        this.#state = "stopped";
        await listener.close();
        throw error;
      }
    }
    this.#state = "running";
    this.#acceptNext();
  }

  /** The name the server is registered under. */
  get name(): string {
    return this.#name;
  }

  /** The port listened on (the real one when `0` was asked), or 0 before listening. */
  get port(): number {
    return this.#listener?.localAddress.port ?? 0;
  }

  /** Where the server is in its life. */
  get state(): ServerState {
    return this.#state;
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
    return {
      num: this.#sessions.size,
      max: this.#options.max,
      name: this.#name,
      port: this.port,
      state: this.#state,
      accepted: this.#accepted,
      refused: this.#listener?.refused ?? 0,
      ended: { ...this.#ended },
    };
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
  children(): Session[] {
    return [...this.#sessions];
  }

  /**
   * Stops the server: closes the listener (the port can be bound again at
   * once), every waiting connection and every session, and removes the name.
   * Handlers see their `recv()` resolve `null`. Calling it again returns the
   * same promise.
   *
   * @returns A promise resolved once the port is free.
   * @example Stopping on Ctrl-C
   * ```ts
   * import { startServer } from "@pico/socket-server";
   * const server = await startServer(0, 5, () => {});
   * await server.stop();
   * ```
   */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    try {
      await this.listening;
    } catch {
      return; // never listened: nothing to release
    }
    this.#state = "stopping";
    unregister(this);
    for (const session of this.#sessions) session.close();
    await this.#listener?.close();
    this.#state = "stopped";
  }

  /** Takes the next connection if a session slot is free and none is being taken. */
  #acceptNext(): void {
    if (this.#accepting || this.#state !== "running" || this.#sessions.size >= this.#options.max) return;
    const listener = this.#listener!;
    this.#accepting = true;
    listener.accept().then(
      (connection) => {
        this.#accepting = false;
        if (connection === null) return;
        if (this.#state !== "running") {
          connection.close();
          return;
        }
        this.#startSession(connection);
        this.#acceptNext();
      },
      (error) => {
        // The runtime could not accept (e.g. out of file descriptors): say
        // so, and try again shortly rather than spin.
        this.#accepting = false;
        this.#report(error);
        setTimeout(() => this.#acceptNext(), ACCEPT_RETRY_MS);
      },
    );
  }

  #startSession(connection: Connection): void {
    const { packetType, packetSize, session: options, handler } = this.#options;
    let session: Session;
    try {
      session = new Session({ id: this.#nextSessionId++, connection, packetType, packetSize, options });
    } catch (error) {
      connection.close();
      this.#report(error);
      return;
    }
    this.#sessions.add(session);
    this.#accepted++;
    let result: void | Promise<void>;
    try {
      result = handler(session);
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
    const reason = endReason(session, error, failed);
    session.close();
    this.#sessions.delete(session);
    this.#ended[reason]++;
    if (reason === "crash") this.#report(error, session);
    this.#acceptNext();
  }

  #report(error: unknown, session?: Session): void {
    try {
      this.#options.onError(error, session);
    } catch (onErrorFailure) {
      console.error("pico-socket-server: onError threw:", onErrorFailure);
    }
  }
}
